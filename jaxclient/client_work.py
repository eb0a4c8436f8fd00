"""The model-delta client work: a JAX port of TFF's
`tff.learning.templates.build_model_delta_client_work`.

`build_model_delta_client_work` returns a `ClientWorkProcess`, a value of
pure functions in the manner of optax's `GradientTransformation`:
`initialize() -> state` (the optimizer's hyperparameters), `next(state,
weights, client_data, rng=None)` training a whole cohort as one compiled
program, `get_hparams` / `set_hparams`, `client_update` for one client, and
`plan(client_data)`, which says how `next` runs the cohort and why. What a
client computes is `jaxclient.client`; how the cohort runs,
`jaxclient.cohort`.

>>> import jax, jax.numpy as jnp, numpy as np
>>> import jaxclient as jc
>>> def model_fn():
...   weights = jc.ModelWeights({'w': jnp.zeros((2, 1))}, {})
...   spec = {'x': jax.ShapeDtypeStruct((2,), jnp.float32),
...           'y': jax.ShapeDtypeStruct((1,), jnp.float32)}
...   return jc.FunctionalModel(
...       weights, lambda w, x, training, rng=None: x @ w.trainable['w'],
...       jc.losses.mean_squared_error, {}, spec)
>>> process = jc.build_model_delta_client_work(
...     model_fn, jc.optimizers.build_sgdm(0.1),
...     jc.ClientWeighting.NUM_EXAMPLES)
>>> clients = [{'x': np.ones((n, 2)), 'y': np.ones((n, 1))} for n in (4, 0)]
>>> data = jc.data.pack(clients, batch_size=3, num_epochs=2)
>>> out = process.next(process.initialize(), model_fn().initial_weights, data)
>>> out.result.update['w'].shape, out.result.update_weight
((2, 2, 1), Array([8., 0.], dtype=float32))
>>> sorted(out.measurements['train'])
['loss', 'num_batches', 'num_examples', 'num_non_finite_clients']
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxclient import _in_flight, _validation
from jaxclient import client as client_lib
from jaxclient import cohort as cohort_lib
from jaxclient import metrics as metrics_lib
from jaxclient import sharding as sharding_lib
from jaxclient.models import ModelWeights
from jaxclient.typing import ClientData, Hparams

__all__ = [
  'ClientWorkProcess',
  'MeasuredProcessOutput',
  'build_model_delta_client_work',
]


class MeasuredProcessOutput(NamedTuple):
  """The output of `next`, as TFF's `tff.templates.MeasuredProcessOutput`."""

  state: Hparams
  result: client_lib.ClientResult
  measurements: dict


class ClientWorkProcess(NamedTuple):
  """Client work for federated averaging, as pure functions.

  Attributes:
    initialize: `() -> state`: the optimizer's hyperparameters (an
      `OrderedDict` of float32 scalars) when it was built with
      `optax.inject_hyperparams` (as every `jaxclient.optimizers.build_*`
      is), else empty.
    next: `(state, weights, client_data, rng=None) -> MeasuredProcessOutput`:
      trains a cohort as one compiled program. `weights` is one
      `ModelWeights` broadcast to every client (not copied) or one per client
      stacked on a leading axis; `client_data` is `{'x': [C, B, N, ...],
      'y': [C, B, N, ...], 'mask': [C, B, N]}` (`jaxclient.data.pack`);
      client i trains with `fold_in(rng, i)`. Returns `MeasuredProcessOutput(
      state, ClientResult(update [C, ...], update_weight [C]), {'train':
      aggregated metrics})`.
    get_hparams: `(state) -> hparams` (here the whole state).
    set_hparams: `(state, hparams) -> state`; the keys must match.
    client_update: `(hparams, weights, data, rng=None) -> (ClientResult,
      unfinalized metrics)` for ONE client's `[B, N, ...]` data; pure and
      jittable (`jaxclient.client.client_update`).
    plan: `(client_data) -> jaxclient.cohort.Plan`: the strategy `next`
      runs `client_data` with, and why.
    training: the `jaxclient.client.LocalTraining` every client runs.
  """

  initialize: Callable[[], Hparams]
  next: Callable[..., MeasuredProcessOutput]
  get_hparams: Callable[[Hparams], Hparams]
  set_hparams: Callable[[Hparams, Mapping[str, Any]], Hparams]
  client_update: Callable[..., tuple[client_lib.ClientResult, dict]]
  plan: Callable[[ClientData], cohort_lib.Plan]
  training: client_lib.LocalTraining


def check_hparams(
  expected: Mapping[str, Any] | tuple[str, ...], found: Any, field: str
) -> None:
  """`found` is a mapping of scalars with exactly `expected`'s keys."""
  if not isinstance(found, Mapping):
    raise TypeError(
      f'{field}: expected a mapping with keys '
      f'{list(expected)}, found {type(found).__name__}.'
    )
  missing = [k for k in expected if k not in found]
  extra = [k for k in found if k not in expected]
  if missing or extra:
    raise ValueError(
      f'{field}: expected keys {list(expected)}; missing '
      f'{missing}, unexpected {extra}.'
    )
  for k, v in found.items():
    if np.ndim(v) != 0:
      raise ValueError(
        f"{field}['{k}']: expected a scalar, found shape {np.shape(v)}."
      )


def _initialize(training: client_lib.LocalTraining) -> Hparams:
  opt_state = training.optimizer.init(training.model.initial_weights.trainable)
  return OrderedDict(getattr(opt_state, 'hyperparams', {}))


def _set_hparams(state: Hparams, hparams: Mapping[str, Any]) -> Hparams:
  check_hparams(state, hparams, field='hparams')
  return OrderedDict(
    (k, jnp.asarray(hparams[k], dtype=jnp.result_type(v)))
    for k, v in state.items()
  )


def _next_program(
  training,
  aggregate_metrics,
  state,
  weights,
  client_data,
  rng,
  strategy,
  num_clients,
):
  """The compiled body of `next`; clients past `num_clients` are padding
  (added to split the cohort evenly over a mesh) and are dropped."""
  client_ids = jnp.arange(client_data['mask'].shape[0])
  if isinstance(strategy, cohort_lib.ShardedOverClients):
    client_ids = jax.lax.with_sharding_constraint(
      client_ids, sharding_lib.clients_sharding(strategy.mesh)
    )
  result, client_metrics = jax.tree.map(
    lambda v: v[:num_clients],
    cohort_lib.train(
      training, strategy, state, weights, client_data, client_ids, rng
    ),
  )
  return MeasuredProcessOutput(
    state, result, {'train': aggregate_metrics(client_metrics)}
  )


def _planner(
  training: client_lib.LocalTraining,
  strategy: cohort_lib.Strategy | cohort_lib.Auto | None,
) -> Callable[[ClientData], cohort_lib.Plan]:
  """`plan`: the builder's strategy, else the default choice."""
  if strategy is None or isinstance(strategy, cohort_lib.Auto):
    memory_bytes = strategy.memory_bytes if strategy else None
    return cohort_lib.default_planner(training, memory_bytes)
  if not isinstance(
    strategy,
    (cohort_lib.AllAtOnce, cohort_lib.Blocked, cohort_lib.ShardedOverClients),
  ):
    raise TypeError(
      'strategy: expected None or a jaxclient.cohort strategy '
      '(Auto, AllAtOnce, Blocked, ShardedOverClients), found '
      f'{type(strategy).__name__}.'
    )
  return lambda client_data: cohort_lib.Plan(strategy, 'given to the builder')


def _placed(strategy, weights, client_data, per_client_weights):
  """For a sharded strategy: the data (and per-client weights) split over
  its mesh, padded with inert clients to a multiple of its size, and
  shared weights copied to every device; else as they are."""
  if not isinstance(strategy, cohort_lib.ShardedOverClients):
    return weights, client_data
  mesh = strategy.mesh
  size = sharding_lib.padded_size(int(np.shape(client_data['mask'])[0]), mesh)

  def split(tree):
    if all(
      isinstance(leaf, jax.Array)
      and leaf.sharding == sharding_lib.clients_sharding(mesh)
      for leaf in jax.tree.leaves(tree)
    ):
      return tree
    return sharding_lib.put_clients(sharding_lib.pad_clients(tree, size), mesh)

  if per_client_weights:
    return split(weights), split(client_data)
  return sharding_lib.put_replicated(weights, mesh), split(client_data)


def _next_fn(
  training: client_lib.LocalTraining,
  aggregate_metrics: Callable[[Mapping[str, Any]], dict],
  plan: Callable[[ClientData], cohort_lib.Plan],
) -> Callable[..., MeasuredProcessOutput]:
  """`next`: the host-side checks and placement, then one compiled program
  per strategy and shapes."""
  trainable = training.model.initial_weights.trainable
  hparam_names = tuple(
    getattr(
      jax.eval_shape(training.optimizer.init, trainable), 'hyperparams', {}
    )
  )
  compiled = _in_flight.bounded(
    jax.jit(
      functools.partial(_next_program, training, aggregate_metrics),
      static_argnames=('strategy', 'num_clients'),
    )
  )

  def next_fn(
    state: Hparams,
    weights: ModelWeights,
    client_data: ClientData,
    rng: jax.Array | None = None,
  ) -> MeasuredProcessOutput:
    check_hparams(hparam_names, state, field='state')
    _validation.check_client_data(
      training.model.input_spec,
      client_data,
      ('clients', 'batches', 'batch_size'),
    )
    num_clients = int(np.shape(client_data['mask'])[0])
    _validation.check_weights(
      training.model.initial_weights, weights, num_clients
    )
    strategy = plan(client_data).strategy
    weights, client_data = _placed(
      strategy,
      weights,
      dict(client_data),
      cohort_lib.has_client_axis(training, weights),
    )
    return compiled(
      state,
      weights,
      client_data,
      rng,
      strategy=strategy,
      num_clients=num_clients,
    )

  return next_fn


def build_model_delta_client_work(
  model: Any,
  optimizer: optax.GradientTransformation,
  client_weighting: client_lib.Weighting,
  metrics_aggregator: metrics_lib.MetricsAggregator | None = None,
  *,
  strategy: cohort_lib.Strategy | cohort_lib.Auto | None = None,
) -> ClientWorkProcess:
  """Builds the client work of federated averaging (TFF's, in JAX).

  Args:
    model: a `jaxclient.FunctionalModel`, or a no-arg `model_fn` returning a
      new one on every call (returning the same object twice is an error).
    optimizer: any `optax.GradientTransformation`; its hyperparameters are the
      process state when built with `optax.inject_hyperparams`.
    client_weighting: `ClientWeighting.NUM_EXAMPLES`, `UNIFORM`, or a callable
      on a client's unfinalized metrics returning its scalar weight.
    metrics_aggregator: `(metrics) -> (stacked unfinalized -> finalized)`;
      default `jaxclient.metrics.sum_then_finalize`.
    strategy: how `next` runs a cohort: `jaxclient.cohort.AllAtOnce()`,
      `Blocked(n)` or `ShardedOverClients(mesh)`. Results do not depend on
      it. Default `jaxclient.cohort.Auto()`: `default_planner`'s choice,
      from the platform, the model, where the data lies and the memory it
      needs (`Auto(memory_bytes=...)` sets the memory budget);
      `process.plan` reports it. Host data on a process with several
      devices (on a CPU, one per core: `jaxclient.sharding`) is split over
      all of them.

  Returns:
    A `ClientWorkProcess`; see the module docstring for an example.
  """
  training = client_lib.local_training(model, optimizer, client_weighting)
  plan = _planner(training, strategy)
  aggregator = metrics_aggregator or metrics_lib.sum_then_finalize
  return ClientWorkProcess(
    initialize=functools.partial(_initialize, training),
    next=_next_fn(training, aggregator(training.metrics), plan),
    get_hparams=OrderedDict,
    set_hparams=_set_hparams,
    client_update=functools.partial(client_lib.client_update, training),
    plan=plan,
    training=training,
  )
