"""Models: `ModelWeights`, `FunctionalModel`, and adapters for Flax modules.

A model in jaxclient is data plus pure functions, like TFF's
`tff.learning.models.FunctionalModel`:

* `initial_weights`: a `ModelWeights` of pytrees;
* `predict_on_batch(weights, x, training, rng=None) -> predictions`;
* `loss(predictions, y, mask) -> scalar`, the mean over the examples where
  `mask` is true (padded examples must contribute nothing, not even NaN);
* `metrics`: a mapping name -> `jaxclient.metrics.Metric`;
* `input_spec`: a mapping `'x'`, `'y'` -> `jax.ShapeDtypeStruct` of ONE
  example (no batch axis).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen

from jaxclient import metrics as metrics_lib
from jaxclient.typing import PyTree

__all__ = ['FunctionalModel', 'ModelWeights', 'from_flax']


class ModelWeights(NamedTuple):
  """The weights of a model: trainable and non-trainable pytrees (as TFF's)."""

  trainable: PyTree
  non_trainable: PyTree


@dataclasses.dataclass(frozen=True)
class FunctionalModel:
  """A model as pure functions over explicit weights.

  Attributes:
    initial_weights: the `ModelWeights` training starts from.
    predict_on_batch: `(weights, x, training, rng=None) -> predictions` for a
      batch `x` of shape `[N, *input_spec['x'].shape]`.
    loss: `(predictions, y, mask) -> scalar`: the mean loss over the examples
      whose `mask` is true; 0 when none is.
    metrics: mapping name -> `jaxclient.metrics.Metric`, the model's own
      metrics, reported beside the built-in `loss`, `num_examples`,
      `num_batches` and `num_non_finite_clients`.
    input_spec: mapping `'x'` (and `'y'`) -> `jax.ShapeDtypeStruct` of ONE
      example, without a batch axis.
  """

  initial_weights: ModelWeights
  predict_on_batch: Callable[..., PyTree]
  loss: Callable[[PyTree, jax.Array, jax.Array], jax.Array]
  metrics: Mapping[str, metrics_lib.Metric] = dataclasses.field(
    default_factory=dict
  )
  input_spec: Mapping[str, jax.ShapeDtypeStruct] = dataclasses.field(
    default_factory=dict
  )

  def __post_init__(self):
    if not isinstance(self.initial_weights, ModelWeights):
      raise TypeError(
        'FunctionalModel.initial_weights: expected a jaxclient.ModelWeights,'
        f' found {type(self.initial_weights).__name__}.'
      )
    for field in ('predict_on_batch', 'loss'):
      if not callable(getattr(self, field)):
        raise TypeError(
          f'FunctionalModel.{field}: expected a callable, found '
          f'{type(getattr(self, field)).__name__}.'
        )
    if 'x' not in self.input_spec:
      raise ValueError(
        'FunctionalModel.input_spec: expected a mapping with '
        "key 'x' (and 'y'), found keys "
        f'{list(self.input_spec)}.'
      )
    for key, spec in self.input_spec.items():
      if key not in ('x', 'y') or not isinstance(spec, jax.ShapeDtypeStruct):
        raise TypeError(
          f"FunctionalModel.input_spec['{key}']: expected key 'x' or 'y' "
          f'mapped to a jax.ShapeDtypeStruct of one example, found '
          f'{type(spec).__name__}.'
        )
    reserved = set(self.metrics) & set(metrics_lib.BUILT_IN_METRIC_NAMES)
    if reserved:
      raise ValueError(
        f'FunctionalModel.metrics: names {sorted(reserved)} are reserved for '
        'the built-in metrics the client work always reports.'
      )


def _flax_variables(weights: ModelWeights) -> dict[str, PyTree]:
  return {'params': weights.trainable, **weights.non_trainable}


def from_flax(
  module,
  sample_x,
  loss: Callable[[PyTree, jax.Array, jax.Array], jax.Array],
  metrics: Mapping[str, metrics_lib.Metric] | None = None,
  rng: jax.Array | None = None,
  *,
  sample_y=None,
  train_kwarg: str | None = None,
) -> FunctionalModel:
  """Wraps a `flax.linen` or `flax.nnx` module as a `FunctionalModel`.

  Args:
    module: a `flax.linen.Module` (initialized here with `rng`) or a
      `flax.nnx.Module` (already initialized).
    sample_x: a BATCH of example inputs, `[N, ...]`; `input_spec['x']` is its
      shape without the batch axis.
    loss: `(predictions, y, mask) -> scalar`, e.g. from `jaxclient.losses`.
    metrics: the model's own metrics, name -> `jaxclient.metrics.Metric`.
    rng: the key for `module.init` (linen only); default `PRNGKey(0)`.
    sample_y: a batch of example labels; when given, `input_spec['y']` is set
      and the client work checks labels against it.
    train_kwarg: name of the module's keyword that switches training mode
      (for example `'train'` or `'training'`); when given, `predict_on_batch`
      passes `training` through it. Dropout draws from the `'dropout'` stream.

  Returns:
    The `FunctionalModel`. The `'params'` collection (linen) or the
    `nnx.Param` variables (nnx) are trainable; every other collection (for
    example `'batch_stats'`) is non-trainable and passes through training
    unchanged, as TFF's functional models do.

  Raises:
    TypeError: when `module` is neither a linen nor an nnx module.
    ValueError: when `sample_x` is not a batch.

  Padding caveat: the client work zeroes padded rows and masks them out of
  the loss, but a layer that couples the examples of a batch (BatchNorm in
  training mode) still sees the zero rows of a short batch in its batch
  statistics. Prefer LayerNorm/GroupNorm, or batch sizes that divide every
  client's data, when exact equality with unpadded training matters.

  Example:
    >>> import flax.linen as nn
    >>> import numpy as np
    >>> import jaxclient as jc
    >>> model = jc.models.from_flax(nn.Dense(3), np.zeros((2, 4), np.float32),
    ...                             jc.losses.mean_squared_error)
    >>> for name, w in sorted(model.initial_weights.trainable.items()):
    ...   print(name, w.shape, w.dtype)
    bias (3,) float32
    kernel (4, 3) float32
    >>> model.input_spec['x'].shape, model.input_spec['x'].dtype.name
    ((4,), 'float32')
    >>> model.predict_on_batch(model.initial_weights, np.ones((5, 4)),
    ...                        False).shape
    (5, 3)
  """
  sample_x = jnp.asarray(sample_x)
  input_spec = _input_spec(sample_x, sample_y)
  metrics = dict(metrics or {})
  nnx = _optional_nnx()
  if nnx is not None and isinstance(module, nnx.Module):
    return _from_nnx(nnx, module, loss, metrics, input_spec, train_kwarg)
  if not isinstance(module, linen.Module):
    raise TypeError(
      'from_flax: module: expected a flax.linen.Module or a '
      'flax.nnx.Module (nnx needs flax >= 0.10), found '
      f'{type(module).__name__}.'
    )
  return _from_linen(
    module, sample_x, loss, metrics, input_spec, rng, train_kwarg
  )


def _input_spec(
  sample_x: jax.Array, sample_y
) -> dict[str, jax.ShapeDtypeStruct]:
  """`'x'` (and `'y'` when `sample_y` is given): one example's spec."""
  if sample_x.ndim < 1:
    raise ValueError(
      'from_flax: sample_x must be a batch [N, ...], found a '
      f'scalar of shape {sample_x.shape}.'
    )
  input_spec = {'x': jax.ShapeDtypeStruct(sample_x.shape[1:], sample_x.dtype)}
  if sample_y is not None:
    sample_y = jnp.asarray(sample_y)
    input_spec['y'] = jax.ShapeDtypeStruct(sample_y.shape[1:], sample_y.dtype)
  return input_spec


def _from_linen(module, sample_x, loss, metrics, input_spec, rng, train_kwarg):
  """`flax.linen`: `module.init` here; `'params'` is trainable, the other
  collections are non-trainable."""
  if rng is None:
    rng = jax.random.PRNGKey(0)
  variables = dict(
    module.init(rng, sample_x, **({train_kwarg: False} if train_kwarg else {}))
  )
  trainable = variables.pop('params', {})
  initial_weights = ModelWeights(trainable, variables)
  mutable = list(variables)

  def predict_on_batch(weights, x, training, rng=None):
    kwargs = {train_kwarg: training} if train_kwarg else {}
    rngs = {'dropout': rng} if rng is not None else None
    out = module.apply(
      _flax_variables(weights),
      x,
      rngs=rngs,
      mutable=mutable if training and mutable else False,
      **kwargs,
    )
    # Non-trainable weights pass through training (TFF's functional models).
    return out[0] if training and mutable else out

  return FunctionalModel(
    initial_weights, predict_on_batch, loss, metrics, input_spec
  )


def _optional_nnx():
  """`flax.nnx` where the installed flax has the API used here (>= 0.10)."""
  try:
    from flax import nnx  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  has_api = hasattr(nnx, 'to_pure_dict') and hasattr(nnx, 'reseed')
  return nnx if has_api else None


def _from_nnx(nnx, module, loss, metrics, input_spec, train_kwarg):
  """`flax.nnx`: `nnx.Param` is trainable; other variables except RNG state
  are non-trainable; dropout is reseeded from `rng` on every call."""
  graphdef, params, rng_state, rest = nnx.split(
    module, nnx.Param, nnx.RngState, ...
  )
  initial_weights = ModelWeights(
    nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
  )

  def predict_on_batch(weights, x, training, rng=None):
    params_state, rest_state = nnx.clone(params), nnx.clone(rest)
    nnx.replace_by_pure_dict(params_state, weights.trainable)
    nnx.replace_by_pure_dict(rest_state, weights.non_trainable)
    model = nnx.merge(graphdef, params_state, rng_state, rest_state)
    model.train() if training else model.eval()
    if rng is not None:
      nnx.reseed(model, dropout=rng)
    kwargs = {train_kwarg: training} if train_kwarg else {}
    return model(x, **kwargs)

  return FunctionalModel(
    initial_weights, predict_on_batch, loss, metrics, input_spec
  )
