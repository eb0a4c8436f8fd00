"""Federated averaging over the client work: TFF's `build_weighted_fed_avg`.

One round, as TFF composes it (`tff.learning.templates.
compose_learning_process`):

1. distributor: every client starts from the global model weights;
2. client work: `jaxclient.ClientWorkProcess.client_update` on each client,
   `vmap`ped over the cohort;
3. aggregator: the weighted mean of the client updates,
   `sum_c(w_c * update_c) / sum_c(w_c)` (TFF's `MeanFactory`: no guard
   against a zero total weight, so a round where every weight is 0 gives a
   non-finite mean);
4. finalizer: the server optimizer (optax) takes the mean update as the
   gradient, `trainable <- trainable + server_optimizer.update(mean)`, and a
   non-finite mean, or a weight sum that overflowed float32, is rejected:
   weights and optimizer state stay as they were and `update_non_finite` is
   1.

The cohort's client axis is split over a `'clients'` mesh of every device
(of every process under `jax.distributed`): see `jaxclient.sharding`. With
`clients_per_chunk`, the cohort trains in chunks of that many clients,
compiled once, and the weighted update sum, the weight sum and the summed
unfinalized metrics accumulate chunk by chunk; the metrics are finalized at
the end. Device memory then grows with the chunk, not the cohort. (A custom
`metrics_aggregator` needs every client's unfinalized metrics, a few
scalars per client, which are then kept until the end.)

Metrics nest as TFF's:
`{'distributor': (), 'client_work': {'train': {...}},
'aggregator': {'mean_value': (), 'mean_weight': ()},
'finalizer': {'update_non_finite': int32}}`.
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
from jax.sharding import Mesh

from jaxclient import _in_flight, _validation, optimizers, rounds
from jaxclient import client as client_lib
from jaxclient import client_work as client_work_lib
from jaxclient import cohort as cohort_lib
from jaxclient import memory as memory_lib
from jaxclient import metrics as metrics_lib
from jaxclient import sharding as sharding_lib
from jaxclient.models import ModelWeights
from jaxclient.rounds import Cohort
from jaxclient.typing import ClientData, PyTree

__all__ = [
  'Cohort',
  'FedAvgProcess',
  'LearningAlgorithmState',
  'LearningProcessOutput',
  'build_weighted_fed_avg',
]


class LearningAlgorithmState(NamedTuple):
  """The server state, as TFF's `tff.learning.templates.
  LearningAlgorithmState`: global weights and each component's state."""

  global_model_weights: ModelWeights
  distributor: tuple
  client_work: Mapping[str, jax.Array]
  aggregator: Mapping[str, tuple]
  finalizer: PyTree


class LearningProcessOutput(NamedTuple):
  """The output of `next`, as TFF's `LearningProcessOutput`."""

  state: LearningAlgorithmState
  metrics: OrderedDict


class RoundSums(NamedTuple):
  """What the chunks of a round add up as they go."""

  weighted_update_sum: PyTree
  weight_sum: jax.Array | np.ndarray
  metric_sums: dict  # Unfinalized metrics summed over clients.


class FedAvgProcess(NamedTuple):
  """Weighted federated averaging (TFF's `build_weighted_fed_avg`), as
  functions built by `build_weighted_fed_avg`.

  Attributes:
    initialize: `() -> LearningAlgorithmState`, replicated on the mesh.
    next: `(state, client_data, rng=None) -> LearningProcessOutput(state,
      metrics)`: one round. `client_data` is `{'x': [C, B, N, ...], 'y':
      [C, B, N, ...], 'mask': [C, B, N]}` host arrays (`jaxclient.data.pack`)
      or a `Cohort` from `prefetch`; client i of the cohort trains with
      `fold_in(rng, i)`, whatever the chunking. Metrics nest as TFF's.
    prefetch: `(client_data) -> Cohort`: checks a round's data and starts
      moving its first chunk to the devices; call it for round r+1 while
      round r trains so that the transfer overlaps the computation.
    plan: `(client_data or Cohort) -> jaxclient.cohort.Plan`: how each
      chunk's clients run, and why.
    get_model_weights: `(state) -> ModelWeights`.
    set_model_weights: `(state, weights) -> state` (optimizer state kept).
    client_work: the `jaxclient.ClientWorkProcess` the clients run.
    mesh: the `'clients'` mesh the cohort is split over.
    chunk_size: clients per compiled chunk (a multiple of the mesh size)
      given to the builder, or None: each round's chunks are as large as
      fit in memory (`plan` says how large).
  """

  initialize: Callable[[], LearningAlgorithmState]
  next: Callable[..., LearningProcessOutput]
  prefetch: Callable[[ClientData], Cohort]
  plan: Callable[[Any], cohort_lib.Plan]
  get_model_weights: Callable[[LearningAlgorithmState], ModelWeights]
  set_model_weights: Callable[..., LearningAlgorithmState]
  client_work: client_work_lib.ClientWorkProcess
  mesh: Mesh
  chunk_size: int | None


# -- the round's computation (pure, compiled) --------------------------------


def _initial_state(client_work, server_optimizer) -> LearningAlgorithmState:
  weights = client_work.training.model.initial_weights
  return LearningAlgorithmState(
    global_model_weights=weights,
    distributor=(),
    client_work=client_work.initialize(),
    aggregator=OrderedDict(value_sum_process=(), weight_sum_process=()),
    finalizer=server_optimizer.init(weights.trainable),
  )


def _zero_sums(training: client_lib.LocalTraining) -> RoundSums:
  return RoundSums(
    jax.tree.map(
      lambda t: np.zeros(t.shape, t.dtype),
      training.model.initial_weights.trainable,
    ),
    np.zeros((), np.float32),
    {
      name: jax.tree.map(np.zeros_like, metric.init())
      for name, metric in training.metrics.items()
    },
  )


def _train_chunk(
  training,
  keep_client_metrics,
  sums,
  state,
  data,
  client_ids,
  num_clients,
  rng,
  strategy,
):
  """One chunk's clients trained and added to the round's sums. Padding
  clients (ids past the cohort) count for nothing, even UNIFORMly."""
  result, client_metrics = cohort_lib.train(
    training,
    strategy,
    state.client_work,
    state.global_model_weights,
    data,
    client_ids,
    rng,
  )
  valid = client_ids < num_clients
  weight = jnp.where(valid, result.update_weight, 0.0)
  weighted_sum = jax.tree.map(
    lambda total, u: total + jnp.tensordot(weight.astype(u.dtype), u, 1),
    sums.weighted_update_sum,
    result.update,
  )
  metric_sums = jax.tree.map(
    lambda total, m: (
      total
      + jnp.sum(
        jnp.where(valid.reshape((-1,) + (1,) * (m.ndim - 1)), m, 0), axis=0
      )
    ),
    sums.metric_sums,
    client_metrics,
  )
  return (
    RoundSums(weighted_sum, sums.weight_sum + jnp.sum(weight), metric_sums),
    client_metrics if keep_client_metrics else None,
  )


def _server_update(server_optimizer, state, mean_update, weight_sum):
  """The finalizer: the mean update as the server optimizer's gradient; a
  non-finite mean, or a weight sum that overflowed (which would turn the
  mean into a silent 0), leaves weights and optimizer state as they were."""
  trainable = state.global_model_weights.trainable
  updates, opt_state = server_optimizer.update(
    mean_update, state.finalizer, trainable
  )
  finite = client_lib.all_finite(mean_update) & jnp.isfinite(weight_sum)
  new_trainable, new_opt_state = jax.tree.map(
    lambda new, old: jnp.where(finite, new, old),
    (optax.apply_updates(trainable, updates), opt_state),
    (trainable, state.finalizer),
  )
  return state._replace(
    global_model_weights=ModelWeights(
      new_trainable, state.global_model_weights.non_trainable
    ),
    finalizer=new_opt_state,
  ), finite


def _finish_round(
  training,
  server_optimizer,
  aggregate_metrics,
  state,
  sums,
  client_metrics,
  num_clients=None,
):
  """The weighted mean, the server step and TFF's metric nesting."""
  if aggregate_metrics:
    train = aggregate_metrics(
      jax.tree.map(
        lambda *chunks: jnp.concatenate(chunks)[:num_clients], *client_metrics
      )
    )
  else:
    train = {
      name: metric.finalize(sums.metric_sums[name])
      for name, metric in training.metrics.items()
    }
  mean_update = jax.tree.map(
    lambda s: s / sums.weight_sum.astype(s.dtype), sums.weighted_update_sum
  )
  new_state, finite = _server_update(
    server_optimizer, state, mean_update, sums.weight_sum
  )
  metrics = OrderedDict(
    distributor=(),
    client_work=OrderedDict(train=train),
    aggregator=OrderedDict(mean_value=(), mean_weight=()),
    finalizer=OrderedDict(
      update_non_finite=jnp.logical_not(finite).astype(jnp.int32)
    ),
  )
  return new_state, metrics


# -- the process --------------------------------------------------------------


def _check_state(state, structure) -> None:
  if not isinstance(state, LearningAlgorithmState):
    raise TypeError(
      'state: expected a jaxclient.algorithms.'
      f'LearningAlgorithmState, found {type(state).__name__}.'
    )
  found = jax.tree.structure(state)
  if found != structure:
    raise ValueError(
      'state: structure does not match this process; '
      f'expected {structure}, found {found}.'
    )


def _round_plan(client_work, mesh, cohort: Cohort) -> cohort_lib.Plan:
  """The client work's plan for a chunk placed on `mesh` (over several
  devices, each device trains its own clients with that schedule), and
  how the round is chunked."""
  plan = client_work.plan(cohort.chunks[0])
  chunking = f'; {cohort.chunking}' if cohort.chunking else ''
  if mesh.size < 2 or isinstance(plan.strategy, cohort_lib.ShardedOverClients):
    return plan._replace(reason=plan.reason + chunking)
  return cohort_lib.Plan(
    cohort_lib.ShardedOverClients(mesh, plan.strategy),
    f"FedAvg's mesh has {mesh.size} devices, each training its own "
    f'clients; {plan.reason}{chunking}',
  )


def _chunk_that_fits(training, client_data, mesh, memory_bytes):
  """Clients per chunk (a multiple of the mesh size) whose training fits
  in the memory budget, with two chunks' data on the devices (the one
  training, the next arriving), and why; None: the whole cohort fits."""
  need = memory_lib.client_bytes(training, client_data)
  device = mesh.devices.flat[0]
  budget = memory_lib.budget_bytes(memory_bytes, device)
  if memory_bytes is None and device.platform == 'cpu':
    budget //= len(mesh.local_devices)  # CPU devices share the host.
  per_device = max(1, budget // (need.total + need.data))
  size = per_device * mesh.size
  if size >= np.shape(client_data['mask'])[0]:
    return None, ''
  return size, (
    f'the round trains in chunks of {size} clients: {per_device} per '
    f'device fit in a budget of {budget >> 20} MiB per device '
    f"({(need.total + need.data) >> 10} KiB per client: two chunks' data, "
    'its training and update)'
  )


def _compile_round(training, server_optimizer, aggregate_metrics, mesh):
  """A round's two compiled programs: one chunk's training, and the finish."""
  train_chunk = jax.jit(
    functools.partial(_train_chunk, training, bool(aggregate_metrics)),
    static_argnames='strategy',
    donate_argnums=0,
    out_shardings=(
      sharding_lib.replicated_sharding(mesh),
      sharding_lib.clients_sharding(mesh),
    ),
  )
  finish = jax.jit(
    functools.partial(
      _finish_round, training, server_optimizer, aggregate_metrics
    ),
    out_shardings=sharding_lib.replicated_sharding(mesh),
    static_argnames='num_clients' if aggregate_metrics else None,
  )
  return _in_flight.bounded(train_chunk), _in_flight.bounded(finish)


def _next_fn(client_work, server_optimizer, aggregate_metrics, mesh, as_cohort):
  """`next`: the host loop over a round's chunks (`rounds.run_chunks`)."""
  training = client_work.training
  structure = jax.tree.structure(_initial_state(client_work, server_optimizer))
  train_chunk, finish = _compile_round(
    training, server_optimizer, aggregate_metrics, mesh
  )

  def next_fn(state, client_data, rng=None):
    _check_state(state, structure)
    cohort = as_cohort(client_data)
    strategy = _round_plan(client_work, mesh, cohort).strategy
    num_clients = np.int32(cohort.num_clients)
    sums, client_metrics = rounds.run_chunks(
      lambda sums, chunk, ids: train_chunk(
        sums, state, chunk, ids, num_clients, rng, strategy=strategy
      ),
      sharding_lib.put_replicated(_zero_sums(training), mesh),
      cohort,
      mesh,
    )
    new_state, metrics = finish(
      state,
      sums,
      tuple(client_metrics) if aggregate_metrics else (),
      num_clients=cohort.num_clients,
    )
    return LearningProcessOutput(new_state, metrics)

  return next_fn


def _build_process(
  client_work,
  server_optimizer,
  aggregate_metrics,
  clients_per_chunk,
  mesh,
  memory_bytes,
) -> FedAvgProcess:
  training = client_work.training
  chunk_size = (
    None
    if clients_per_chunk is None
    else sharding_lib.padded_size(clients_per_chunk, mesh)
  )

  @functools.cache
  def chunk_for(shapes):
    return _chunk_that_fits(
      training, memory_lib.shape_structs(shapes), mesh, memory_bytes
    )

  def prefetch(client_data):
    input_spec = training.model.input_spec
    if chunk_size is not None:
      size, why = chunk_size, f'clients_per_chunk={clients_per_chunk}'
    else:
      _validation.check_client_data(
        input_spec, client_data, ('clients', 'batches', 'batch_size')
      )
      size, why = chunk_for(memory_lib.shapes_of(client_data))
    return rounds.prefetch(input_spec, client_data, mesh, size, why)

  def as_cohort(client_data):
    return (
      client_data if isinstance(client_data, Cohort) else prefetch(client_data)
    )

  def set_model_weights(state, weights):
    _validation.check_weights(training.model.initial_weights, weights, None)
    return state._replace(
      global_model_weights=sharding_lib.put_replicated(weights, mesh)
    )

  return FedAvgProcess(
    initialize=lambda: sharding_lib.put_replicated(
      _initial_state(client_work, server_optimizer), mesh
    ),
    next=_next_fn(
      client_work, server_optimizer, aggregate_metrics, mesh, as_cohort
    ),
    prefetch=prefetch,
    plan=lambda data: _round_plan(client_work, mesh, as_cohort(data)),
    get_model_weights=lambda state: state.global_model_weights,
    set_model_weights=set_model_weights,
    client_work=client_work,
    mesh=mesh,
    chunk_size=chunk_size,
  )


def build_weighted_fed_avg(
  model: Any,
  client_optimizer: optax.GradientTransformation,
  server_optimizer: optax.GradientTransformation | None = None,
  *,
  client_weighting: client_lib.Weighting = (
    client_lib.ClientWeighting.NUM_EXAMPLES
  ),
  metrics_aggregator: metrics_lib.MetricsAggregator | None = None,
  clients_per_chunk: int | None = None,
  strategy: cohort_lib.AllAtOnce
  | cohort_lib.Blocked
  | cohort_lib.Auto
  | None = None,
  mesh: Mesh | None = None,
) -> FedAvgProcess:
  """Builds weighted federated averaging (TFF's `build_weighted_fed_avg`).

  Args:
    model: a `jaxclient.FunctionalModel` or a no-arg `model_fn` returning a
      new one on every call.
    client_optimizer: the optax optimizer of local training (its injected
      hyperparameters are the client work's state).
    server_optimizer: the optax optimizer the server applies to the weighted
      mean of client updates, taken as the gradient. Default TFF's: SGD with
      learning rate 1.0 (`jaxclient.optimizers.build_sgdm(1.0)`), which adds
      the mean delta's negation, i.e. plain FedAvg.
    client_weighting: `ClientWeighting.NUM_EXAMPLES` (default), `UNIFORM`,
      or a callable on a client's unfinalized metrics.
    metrics_aggregator: `(metrics) -> (stacked unfinalized -> finalized)`;
      default: sum the unfinalized metrics over clients (chunk by chunk),
      then finalize, as `jaxclient.metrics.sum_then_finalize`.
    clients_per_chunk: when set, a round trains this many clients at a time
      (rounded up to a multiple of the mesh size) and sums their weighted
      updates as it goes; device memory then grows with the chunk, not with
      the cohort. Default: as many as fit in the memory budget (the whole
      cohort when it fits; `jaxclient.memory`), worked out once per data
      shape (the free memory is read then).
    strategy: how each device runs its clients, `jaxclient.cohort.AllAtOnce()`
      or `Blocked(n)`; default `jaxclient.cohort.Auto()`,
      `default_planner`'s choice (`Auto(memory_bytes=...)` also sets the
      memory budget of the chunks). Over a mesh of several devices each
      device trains its own clients (`ShardedOverClients`).
      `process.plan(client_data)` reports the schedule and the chunks.
    mesh: the mesh whose `'clients'` axis splits the cohort; default
      `jaxclient.sharding.client_mesh()`, every device of every process.

  Returns:
    A `FedAvgProcess`.

  Example:

  >>> import jax, jax.numpy as jnp, numpy as np
  >>> import jaxclient as jc
  >>> def model_fn():
  ...   weights = jc.ModelWeights({'w': jnp.zeros((2, 1))}, {})
  ...   spec = {'x': jax.ShapeDtypeStruct((2,), jnp.float32),
  ...           'y': jax.ShapeDtypeStruct((1,), jnp.float32)}
  ...   return jc.FunctionalModel(
  ...       weights, lambda w, x, training, rng=None: x @ w.trainable['w'],
  ...       jc.losses.mean_squared_error, {}, spec)
  >>> fed_avg = jc.algorithms.build_weighted_fed_avg(
  ...     model_fn, jc.optimizers.build_sgdm(0.1))
  >>> clients = [{'x': np.ones((n, 2)), 'y': np.ones((n, 1))} for n in (3, 5)]
  >>> state = fed_avg.initialize()
  >>> for _ in range(3):
  ...   state, metrics = fed_avg.next(state, jc.data.pack(clients, 2))
  >>> int(metrics['client_work']['train']['num_examples'])
  8
  >>> fed_avg.get_model_weights(state).trainable['w'].shape
  (2, 1)
  """
  if server_optimizer is None:
    server_optimizer = optimizers.build_sgdm(learning_rate=1.0)
  if not isinstance(server_optimizer, optax.GradientTransformation):
    raise TypeError(
      'server_optimizer: expected an optax.GradientTransformation'
      f', found {type(server_optimizer).__name__}.'
    )
  clients_per_chunk = _validation.check_int(
    'clients_per_chunk', clients_per_chunk, optional=True
  )
  if isinstance(strategy, cohort_lib.ShardedOverClients):
    raise TypeError(
      'strategy: FedAvg shards over its `mesh` itself; expected '
      'None, AllAtOnce or Blocked, found ShardedOverClients.'
    )
  client_work = client_work_lib.build_model_delta_client_work(
    model,
    client_optimizer,
    client_weighting,
    metrics_aggregator,
    strategy=strategy,
  )
  # None: the default sum-then-finalize, summed chunk by chunk in O(1)
  # memory. A custom aggregator receives every client's unfinalized
  # metrics (a few scalars per client), gathered over the chunks.
  aggregate_metrics = (
    metrics_aggregator(client_work.training.metrics)
    if metrics_aggregator
    else None
  )
  return _build_process(
    client_work,
    server_optimizer,
    aggregate_metrics,
    clients_per_chunk,
    mesh if mesh is not None else sharding_lib.client_mesh(),
    strategy.memory_bytes if isinstance(strategy, cohort_lib.Auto) else None,
  )
