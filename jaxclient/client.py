"""What one client computes: TFF's model-delta client update, pure functions.

A client starts from the global `ModelWeights` and the optimizer's
hyperparameters, then for each of its batches in order: predictions and loss
at the current weights, the gradient with respect to the trainable weights,
one optimizer step (non-trainable weights pass through). It returns
`update = initial - final` trainable weights, a weight for the server's mean
and its unfinalized metrics. TFF's semantics, all of them here:

* a non-finite update is replaced by zeros, its weight by 0.0, the client's
  metrics by their initial state, and `num_non_finite_clients` counts it
  (`finish_client`);
* `NUM_EXAMPLES` weighs a client by the float32 count of examples trained on
  (over all epochs), `UNIFORM` by 1.0, a callable by its value on the
  client's unfinalized metrics (`client_weight`); a weight that is negative
  or not finite makes the client non-finite as above (stricter than TFF);
* padding is inert: padded rows are zeroed and masked out, and a batch with
  no valid example changes neither the weights, the optimizer state nor the
  metrics (`guarded_step`).

How a cohort of clients runs (one `vmap`, blocks, a shard per device) is
`jaxclient.cohort`'s business; nothing here depends on it.

Example, one client of a linear model trained with jit:

>>> import jax, jax.numpy as jnp, numpy as np, optax
>>> import jaxclient as jc
>>> weights = jc.ModelWeights({'w': jnp.zeros((2, 1))}, {})
>>> model = jc.FunctionalModel(
...     weights, lambda w, x, training, rng=None: x @ w.trainable['w'],
...     jc.losses.mean_squared_error, {},
...     {'x': jax.ShapeDtypeStruct((2,), jnp.float32),
...      'y': jax.ShapeDtypeStruct((1,), jnp.float32)})
>>> training = jc.client.local_training(model, optax.sgd(0.1),
...                                     jc.ClientWeighting.NUM_EXAMPLES)
>>> data = jc.data.pack([{'x': np.ones((3, 2)), 'y': np.ones((3, 1))}], 2)
>>> one_client = jax.tree.map(lambda v: v[0], data)
>>> result, metrics = jax.jit(
...     lambda d: jc.client.client_update(training, {}, weights, d))(one_client)
>>> print(result.update_weight, metrics['num_examples'])
3.0 3
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxclient import metrics as metrics_lib
from jaxclient._conv_layout import canonicalize_convolutions
from jaxclient.models import FunctionalModel, ModelWeights
from jaxclient.typing import ClientData, Hparams, PyTree

__all__ = [
  'ClientResult',
  'ClientWeighting',
  'LocalTraining',
  'TrainingState',
  'all_finite',
  'client_update',
  'client_weight',
  'finish_client',
  'guarded_step',
  'initial_optimizer_state',
  'local_training',
  'resolve_model',
  'start',
  'step',
]


class ClientWeighting(enum.Enum):
  """How a client's update is weighted in the server's mean (as TFF's)."""

  NUM_EXAMPLES = 1
  UNIFORM = 2


Weighting = ClientWeighting | Callable[[Mapping[str, PyTree]], jax.Array]


class ClientResult(NamedTuple):
  """A client's contribution: `update` (initial - final) and its weight."""

  update: PyTree
  update_weight: jax.Array


class LocalTraining(NamedTuple):
  """What every client of a process trains with (static, not traced).

  Attributes:
    model: the `FunctionalModel`.
    optimizer: the client optimizer, any `optax.GradientTransformation`.
    metrics: the model's metrics followed by the built-ins (`loss`,
      `num_examples`, `num_batches`, `num_non_finite_clients`).
    client_weighting: a `ClientWeighting` or a callable on the client's
      unfinalized metrics.
    platform: the JAX backend the process was built for (`'cpu'`, `'gpu'`,
      `'tpu'`); on `'cpu'` convolutions are rewritten into the layout
      XLA:CPU's fast kernels take (`jaxclient._conv_layout`).
  """

  model: FunctionalModel
  optimizer: optax.GradientTransformation
  metrics: Mapping[str, metrics_lib.Metric]
  client_weighting: Weighting
  platform: str


class TrainingState(NamedTuple):
  """A client's carry from batch to batch."""

  trainable: PyTree
  opt_state: PyTree
  metric_states: dict[str, PyTree]


def resolve_model(model_or_model_fn) -> FunctionalModel:
  """The `FunctionalModel` itself, or the one a no-arg `model_fn` builds
  (called twice: returning the same object twice is an error, as in TFF)."""
  if isinstance(model_or_model_fn, FunctionalModel):
    return model_or_model_fn
  if not callable(model_or_model_fn):
    raise TypeError(
      'model: expected a jaxclient.FunctionalModel or a no-arg callable '
      f'returning one, found {type(model_or_model_fn).__name__}.'
    )
  model = model_or_model_fn()
  if not isinstance(model, FunctionalModel):
    raise TypeError(
      'model_fn: expected to return a jaxclient.FunctionalModel,'
      f' found {type(model).__name__}.'
    )
  if model_or_model_fn() is model:
    raise ValueError(
      'model_fn returned the same model object on two calls; it must '
      'construct a new model on every invocation (as in TFF).'
    )
  return model


def local_training(
  model, optimizer: optax.GradientTransformation, client_weighting: Weighting
) -> LocalTraining:
  """Checks the pieces of a client's training and bundles them.

  Args:
    model: a `FunctionalModel` or a no-arg `model_fn` returning a new one.
    optimizer: any `optax.GradientTransformation`.
    client_weighting: a `ClientWeighting` or a callable on the client's
      unfinalized metrics returning its scalar weight.
  """
  model = resolve_model(model)
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(
      'optimizer: expected an optax.GradientTransformation, '
      f'found {type(optimizer).__name__}.'
    )
  if not (
    isinstance(client_weighting, ClientWeighting) or callable(client_weighting)
  ):
    raise TypeError(
      'client_weighting: expected a jaxclient.ClientWeighting or a callable '
      f'on the client metrics, found {client_weighting!r}.'
    )
  return LocalTraining(
    model,
    optimizer,
    metrics_lib.with_built_ins(model.metrics),
    client_weighting,
    jax.default_backend(),
  )


def all_finite(tree: PyTree) -> jax.Array:
  """A scalar bool: every value of every leaf of `tree` is finite."""
  return jnp.all(
    jnp.stack(
      [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
      + [jnp.bool_(True)]
    )
  )


def initial_optimizer_state(
  optimizer: optax.GradientTransformation, trainable: PyTree, hparams: Hparams
) -> PyTree:
  """A client's fresh optimizer state, with `hparams` (the process state)
  injected when the optimizer was built with `optax.inject_hyperparams`."""
  opt_state = optimizer.init(trainable)
  if hparams:
    opt_state = opt_state._replace(
      hyperparams={
        k: jnp.asarray(hparams[k], jnp.result_type(v))
        for k, v in opt_state.hyperparams.items()
      }
    )
  return opt_state


def client_weight(
  client_weighting: Weighting, metric_states: Mapping[str, PyTree]
) -> jax.Array:
  """A client's float32 scalar weight from its unfinalized metrics.

  Raises:
    ValueError: naming `client_weighting` when a callable returns anything
      but a scalar (at trace time).
  """
  if client_weighting is ClientWeighting.NUM_EXAMPLES:
    return metric_states['num_examples'].astype(jnp.float32)
  if client_weighting is ClientWeighting.UNIFORM:
    return jnp.ones((), jnp.float32)
  weight = jnp.asarray(client_weighting(metric_states), jnp.float32)
  if weight.shape != ():
    raise ValueError(
      'client_weighting: expected a scalar weight per client, found shape '
      f'{weight.shape}.'
    )
  return weight


def _tree_select(predicate, on_true, on_false):
  return jax.tree.map(
    lambda a, b: jnp.where(predicate, a, b), on_true, on_false
  )


def finish_client(
  initial_trainable: PyTree,
  final_trainable: PyTree,
  metric_states: dict[str, PyTree],
  initial_metrics: dict[str, PyTree],
  client_weighting: Weighting,
) -> tuple[ClientResult, dict[str, PyTree]]:
  """The end of a client's training, TFF's semantics.

  `update = initial - final`; if any value of it is not finite, the update
  becomes zeros, the weight 0.0 and the metrics `initial_metrics`, with
  `num_non_finite_clients` set to 1 (else 0). Deliberately stricter than
  TFF, which would carry the weight into the mean: a weight that is not
  finite or is negative does the same.
  """
  update = jax.tree.map(jnp.subtract, initial_trainable, final_trainable)
  weight = client_weight(client_weighting, metric_states)
  finite = all_finite(update) & jnp.isfinite(weight) & (weight >= 0)
  update = jax.tree.map(
    lambda u: jnp.where(finite, u, jnp.zeros_like(u)), update
  )
  weight = jnp.where(finite, weight, 0.0)
  metric_states = _tree_select(finite, metric_states, initial_metrics)
  metric_states['num_non_finite_clients'] = jnp.logical_not(finite).astype(
    jnp.int32
  )
  return ClientResult(update, weight), metric_states


def _zero_padding(batch: ClientData) -> dict[str, PyTree]:
  """Zeros the padded rows of `x` and `y`, so that whatever padding holds
  (even NaN) cannot reach a gradient through `0 * NaN`."""
  mask = batch['mask']

  def zero(v):
    return jnp.where(
      mask.reshape(mask.shape + (1,) * (v.ndim - mask.ndim)),
      v,
      jnp.zeros((), v.dtype),
    )

  return {
    'x': jax.tree.map(zero, batch['x']),
    'y': zero(batch['y']),
    'mask': mask,
  }


def start(
  training: LocalTraining, hparams: Hparams, trainable: PyTree
) -> TrainingState:
  """A client's state before its first batch."""
  return TrainingState(
    trainable,
    initial_optimizer_state(training.optimizer, trainable, hparams),
    {n: m.init() for n, m in training.metrics.items()},
  )


def step(
  training: LocalTraining,
  state: TrainingState,
  non_trainable: PyTree,
  batch: ClientData,
  rng: jax.Array | None = None,
) -> TrainingState:
  """One batch: loss and gradient at the current weights, one optimizer
  step, the metrics updated. Assumes the batch has a valid example (see
  `guarded_step`); padded rows are zeroed and masked out."""
  model = training.model
  batch = _zero_padding(batch)

  def loss_fn(trainable):
    predictions = model.predict_on_batch(
      ModelWeights(trainable, non_trainable), batch['x'], True, rng=rng
    )
    return model.loss(predictions, batch['y'], batch['mask']), predictions

  loss_and_grads = jax.value_and_grad(loss_fn, has_aux=True)
  if training.platform == 'cpu':
    loss_and_grads = canonicalize_convolutions(loss_and_grads)
  (loss, predictions), grads = loss_and_grads(state.trainable)
  updates, opt_state = training.optimizer.update(
    grads, state.opt_state, state.trainable
  )
  output = metrics_lib.BatchOutput(predictions, batch['y'], batch['mask'], loss)
  return TrainingState(
    optax.apply_updates(state.trainable, updates),
    opt_state,
    {
      n: m.update(state.metric_states[n], output)
      for n, m in training.metrics.items()
    },
  )


def guarded_step(
  training: LocalTraining,
  state: TrainingState,
  non_trainable: PyTree,
  batch: ClientData,
  rng: jax.Array | None = None,
) -> TrainingState:
  """`step`, except that a batch with no valid example is inert: no step,
  no momentum decay, no count."""
  return _tree_select(
    jnp.any(batch['mask']),
    step(training, state, non_trainable, batch, rng),
    state,
  )


BatchStep = Callable[
  [
    LocalTraining,
    TrainingState,
    PyTree,
    ClientData,
    'jax.Array | None',
    jax.Array,
  ],
  TrainingState,
]


def _guarded_batch_step(training, state, non_trainable, batch, rng, index):
  del index
  return guarded_step(training, state, non_trainable, batch, rng)


def client_update(
  training: LocalTraining,
  hparams: Hparams,
  weights: ModelWeights,
  data: ClientData,
  rng: jax.Array | None = None,
  *,
  batch_step: BatchStep = _guarded_batch_step,
) -> tuple[ClientResult, dict[str, PyTree]]:
  """Trains one client on its padded batches; pure and jittable.

  Args:
    training: from `local_training`.
    hparams: the process state (optimizer hyperparameters, or `{}`).
    weights: the `ModelWeights` the client starts from.
    data: `{'x': [B, N, ...], 'y': [B, N, ...], 'mask': [B, N]}`.
    rng: the client's key; batch b's key is `fold_in(rng, b)`.
    batch_step: `(training, state, non_trainable, batch, rng, b) -> state`,
      one batch; default `guarded_step`. A cohort runner may pass one that
      skips the guard on batches where it knows the client has data; the
      result must be the same.

  Returns:
    `(ClientResult(update, update_weight), unfinalized_metrics)`.
  """
  initial = start(training, hparams, weights.trainable)

  def train_on_batch(state, inputs):
    batch, index = inputs
    batch_rng = None if rng is None else jax.random.fold_in(rng, index)
    return batch_step(
      training, state, weights.non_trainable, batch, batch_rng, index
    ), None

  num_batches = data['mask'].shape[0]
  final, _ = jax.lax.scan(
    train_on_batch, initial, (dict(data), jnp.arange(num_batches))
  )
  return finish_client(
    weights.trainable,
    final.trainable,
    final.metric_states,
    initial.metric_states,
    training.client_weighting,
  )
