"""Masked losses: `(predictions, y, mask) -> mean over valid examples`.

Padded examples (`mask == False`) contribute exactly nothing: their terms are
selected away with `jnp.where`, so even a NaN or inf on a padded row cannot
reach the loss or its gradient. A batch with no valid example has loss 0.
"""

import jax
import jax.numpy as jnp

__all__ = [
  'masked_mean',
  'mean_squared_error',
  'sparse_categorical_crossentropy',
]


def masked_mean(per_example: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of the `[N]` values `per_example` where the `[N]` `mask` is true.

  Returns 0 when no example is valid.
  """
  total = jnp.sum(jnp.where(mask, per_example, 0.0))
  count = jnp.sum(mask).astype(per_example.dtype)
  return total / jnp.maximum(count, 1.0)


def sparse_categorical_crossentropy(
  logits: jax.Array, y: jax.Array, mask: jax.Array
) -> jax.Array:
  """Softmax cross-entropy from logits `[N, K]` against integer labels `y`.

  A valid example whose label is outside `[0, K)` makes the loss and its
  gradient NaN, so that the client work counts its client as non-finite
  (zero update, weight 0) instead of training on a silent 0.0. (Keras raises
  on a CPU and returns NaN on a GPU.)
  """
  # A one-hot select rather than a gather: jax2tf converts it to plain TF
  # ops (TFF's runtime has no XLA gather), and a -inf logit of another class
  # cannot turn `0 * -inf` into NaN.
  num_classes = logits.shape[-1]
  labels = jnp.where(mask, y.reshape(mask.shape), 0).astype(jnp.int32)
  is_label = jnp.arange(num_classes) == labels[:, None]
  log_probs = jax.nn.log_softmax(logits)
  per_example = -jnp.sum(jnp.where(is_label, log_probs, 0.0), axis=-1)
  # An out-of-range label adds NaN times a term that depends on every logit,
  # so that the NaN reaches the gradient too (a select would stop it); an
  # in-range one adds exactly 0.
  in_range = (labels >= 0) & (labels < num_classes)
  poison = jnp.where(in_range, 0.0, jnp.nan).astype(per_example.dtype)
  per_example = per_example + poison * jnp.sum(log_probs, axis=-1)
  return masked_mean(per_example, mask)


def mean_squared_error(
  predictions: jax.Array, y: jax.Array, mask: jax.Array
) -> jax.Array:
  """Mean over valid examples and output features of `(predictions - y)**2`.

  Matches `tf.keras.losses.MeanSquaredError` (mean over features, then over
  examples).
  """
  y = y.reshape(predictions.shape).astype(predictions.dtype)
  per_example = jnp.square(predictions - y).reshape(predictions.shape[0], -1)
  per_example = jnp.mean(per_example, axis=1)
  return masked_mean(per_example, mask)
