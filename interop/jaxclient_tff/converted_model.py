"""A jaxclient model's JAX functions as TF functions of plain TF ops (jax2tf).

`to_tf` converts one JAX function; `ConvertedModel` holds a
`jc.FunctionalModel` and exposes, as TF functions over flat lists of tensors
(weights in creation order, see `conversion`):

* `gradients_and_metrics`: one batch's gradient of the loss with respect to
  the trainable weights and the updated metric states; the batch size is
  symbolic (jax2tf shape polymorphism), so one conversion serves every batch,
  the short last one included;
* `finish`: the delta, the non-finite check, the client weight and the
  metrics reset, by `jaxclient.client.finish_client` (TFF's semantics);
* `unfinalized` and `metric_finalizers`: the metric states and finalizers in
  TFF's form (int32 counters as int64).

Conversion uses `native_serialization=False, enable_xla=False`: plain TF ops
that TFF 0.87's C++ worker executes (with `enable_xla=True` jax2tf emits
`XlaDotV2` and friends, which the worker does not register, and native
serialization emits an `XlaCallModule` that TF 2.14 cannot read). A JAX
operation that jax2tf cannot express so (e.g. a general gather) fails the
build with a `NotImplementedError` that says what to do (`to_tf`,
`surface_unconvertible`).
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

import jaxclient as jc
from jaxclient import client as jc_client
from jaxclient_tff import conversion

__all__ = [
  'ConvertedModel',
  'UNCONVERTIBLE_GUIDANCE',
  'surface_unconvertible',
  'to_tf',
]

UNCONVERTIBLE_GUIDANCE = (
  "the model's JAX code raised NotImplementedError while jax2tf converted "
  "it to plain TF ops (enable_xla=False), the only ops that TFF 0.87's "
  'runtime executes; most often it uses an operation that jax2tf cannot '
  'express without XLA. A common one is the gather of `take_along_axis` '
  '(e.g. in `optax.softmax_cross_entropy_with_integer_labels`); write it '
  'with `jax.nn.one_hot` instead.'
)
# The attribute of `to_tf`'s error holding jax2tf's error (also its cause).
_JAX2TF_ERROR = 'jax2tf_error'


def to_tf(fn: Callable, polymorphic_shapes=None) -> Callable:
  """`fn` as a TF function of plain TF ops (see the module docstring).

  jax2tf converts `fn` when the TF function is called (traced). A
  `NotImplementedError` raised then is re-raised as a `NotImplementedError`
  carrying `UNCONVERTIBLE_GUIDANCE`, chained to jax2tf's (`from`); TF's
  tracing may wrap it, and `surface_unconvertible` unwraps it.

  Marked `do_not_convert`: AutoGraph (which the client update's
  `tf.function` needs for TFF's iterator loop) would otherwise transpile all
  of JAX's tracing machinery on every build.
  """
  converted = jax2tf.convert(
    fn,
    native_serialization=False,
    enable_xla=False,
    with_gradient=False,
    polymorphic_shapes=polymorphic_shapes,
  )

  def call(*args):
    try:
      return converted(*args)
    except NotImplementedError as e:
      error = NotImplementedError(f'{UNCONVERTIBLE_GUIDANCE} jax2tf said: {e}')
      setattr(error, _JAX2TF_ERROR, e)
      raise error from e

  return tf.autograph.experimental.do_not_convert(call)


def _guidance_error(error: BaseException) -> NotImplementedError | None:
  """The error `to_tf` raised, if `error` is it or was raised while
  handling it (AutoGraph re-raises a copy of an error in the converted
  code, with the original as its context)."""
  seen = set()
  current: BaseException | None = error
  while current is not None and id(current) not in seen:
    if isinstance(current, NotImplementedError) and hasattr(
      current, _JAX2TF_ERROR
    ):
      return current
    seen.add(id(current))
    current = current.__cause__ or current.__context__
  return None


@contextlib.contextmanager
def surface_unconvertible():
  """Re-raises `to_tf`'s `NotImplementedError` itself (the guidance, chained
  to jax2tf's error) when TF's tracing has wrapped it on the way out."""
  try:
    yield
  except NotImplementedError as e:
    ours = _guidance_error(e)
    if ours is None or ours is e:
      raise
    raise ours from getattr(ours, _JAX2TF_ERROR)


def _batch_polymorphic_shape(rank: int) -> str:
  return '(' + ', '.join(['b'] + ['_'] * rank) + ')'


class ConvertedModel:
  """A `jc.FunctionalModel`'s training step and metrics as TF functions."""

  def __init__(
    self,
    model: jc.FunctionalModel,
    client_weighting: jc.ClientWeighting | Callable[..., Any],
  ):
    self.model = model
    self.client_weighting = client_weighting
    self.weights = conversion.WeightsLayout(model.initial_weights)
    self.metrics = jc.metrics.with_built_ins(model.metrics)
    self._initial_metric_states = {n: m.init() for n, m in self.metrics.items()}
    self.metric_states = conversion.PytreeLayout(self._initial_metric_states)
    x_rank = len(model.input_spec['x'].shape)
    y_rank = len(model.input_spec['y'].shape)
    self._gradients_and_metrics = to_tf(
      self._jax_gradients_and_metrics,
      [
        None,
        None,
        None,
        _batch_polymorphic_shape(x_rank),
        _batch_polymorphic_shape(y_rank),
      ],
    )
    self._finish = to_tf(self._jax_finish)

  # -- JAX ------------------------------------------------------------------

  def _jax_gradients_and_metrics(
    self, trainable, non_trainable, metric_states, x, y
  ):
    model = self.model
    trainable = self.weights.trainable.unflatten(trainable)
    non_trainable = self.weights.non_trainable.unflatten(non_trainable)
    metric_states = self.metric_states.unflatten(metric_states)
    mask = jnp.ones(x.shape[:1], jnp.bool_)

    def loss_fn(trainable):
      predictions = model.predict_on_batch(
        jc.ModelWeights(trainable, non_trainable), x, True
      )
      return model.loss(predictions, y, mask), predictions

    (loss, predictions), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      trainable
    )
    output = jc.metrics.BatchOutput(predictions, y, mask, loss)
    metric_states = {
      n: m.update(metric_states[n], output) for n, m in self.metrics.items()
    }
    return (
      self.weights.trainable.flatten(grads),
      self.metric_states.flatten(metric_states),
    )

  def _jax_finish(self, initial_trainable, final_trainable, metric_states):
    result, metric_states = jc_client.finish_client(
      list(initial_trainable),
      list(final_trainable),
      self.metric_states.unflatten(metric_states),
      self._initial_metric_states,
      self.client_weighting,
    )
    return (
      result.update,
      result.update_weight,
      self.metric_states.flatten(metric_states),
    )

  # -- TF -------------------------------------------------------------------

  def initial_metric_states(self) -> list[tf.Tensor]:
    """The metric states before the first batch, as flat TF constants."""
    return [
      tf.constant(np.asarray(v))
      for v in self.metric_states.flatten(self._initial_metric_states)
    ]

  def gradients_and_metrics(
    self,
    trainable: Sequence[tf.Tensor],
    non_trainable: Sequence[tf.Tensor],
    metric_states: Sequence[tf.Tensor],
    x: tf.Tensor,
    y: tf.Tensor,
  ):
    """`(gradients, metric_states)` after one batch, as flat TF lists."""
    grads, metric_states = self._gradients_and_metrics(
      list(trainable), list(non_trainable), list(metric_states), x, y
    )
    return list(grads), list(metric_states)

  def finish(self, initial_trainable, final_trainable, metric_states):
    """`(update, update_weight, metric_states)`: zeros, 0.0 and the initial
    metrics (non-finite count 1) when any value of the update is not finite."""
    update, weight, metric_states = self._finish(
      list(initial_trainable), list(final_trainable), list(metric_states)
    )
    return list(update), weight, list(metric_states)

  def unfinalized(
    self, metric_states: Sequence[tf.Tensor]
  ) -> collections.OrderedDict:
    """Name -> unfinalized state in TFF's form: one tensor, or a list of
    tensors for a multi-leaf state (as Keras metrics report theirs); int32
    counters as int64."""
    states = self.metric_states.unflatten(
      [
        tf.cast(v, conversion.to_tff_dtype(v.dtype.as_numpy_dtype))
        for v in metric_states
      ]
    )
    return collections.OrderedDict(
      (name, conversion.tff_form(states[name])) for name in self.metrics
    )

  def metric_finalizers(self) -> collections.OrderedDict:
    """Name -> TF finalizer of the unfinalized state, TFF's contract
    (`tff.learning.models.VariableModel.metric_finalizers`)."""
    return collections.OrderedDict(
      (name, self._finalizer(name)) for name in self.metrics
    )

  def _finalizer(self, name):
    metric = self.metrics[name]
    initial = self._initial_metric_states[name]
    leaves, treedef = jax.tree_util.tree_flatten(initial)
    jax_dtypes = [jnp.result_type(leaf) for leaf in leaves]
    finalize = to_tf(
      lambda flat: metric.finalize(jax.tree_util.tree_unflatten(treedef, flat))
    )

    def finalizer(unfinalized):
      flat = [
        tf.cast(v, d)
        for v, d in zip(tf.nest.flatten(unfinalized), jax_dtypes, strict=True)
      ]
      value = finalize(flat)
      return tf.nest.map_structure(
        lambda v: tf.cast(v, conversion.to_tff_dtype(v.dtype.as_numpy_dtype)),
        value,
      )

    return finalizer
