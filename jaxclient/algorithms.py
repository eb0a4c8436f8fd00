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
   non-finite mean is rejected: weights and optimizer state stay as they
   were and `update_non_finite` is 1.

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

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxclient import _validation
from jaxclient import client_work as client_work_lib
from jaxclient import metrics as metrics_lib
from jaxclient import optimizers
from jaxclient import sharding as sharding_lib
from jaxclient.models import ModelWeights

PyTree = Any


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


class Cohort(NamedTuple):
  """A round's client data, split into chunks of the process's chunk size.

  `chunks[0]` is already on the devices (sharded over the client axis); the
  others are host arrays, transferred one by one as the round reaches them.
  Build with `FedAvgProcess.prefetch`.
  """

  num_clients: int
  chunks: tuple


class _Partial(NamedTuple):
  """What the chunks of a round add up as they go."""

  weighted_update_sum: PyTree
  weight_sum: jax.Array
  metric_sums: dict  # Unfinalized metrics summed over clients.


class FedAvgProcess:
  """Weighted federated averaging (TFF's `build_weighted_fed_avg`).

  `initialize() -> LearningAlgorithmState`;
  `next(state, client_data, rng=None) -> LearningProcessOutput(state,
  metrics)`; `get_model_weights(state)`; `set_model_weights(state,
  weights)`. `client_data` is `{'x': [C, B, N, ...], 'y': [C, B, N, ...],
  'mask': [C, B, N]}` (e.g. from `jaxclient.data.pack`) or a `Cohort` from
  `prefetch`.
  """

  def __init__(self, client_work: client_work_lib.ClientWorkProcess,
               server_optimizer: optax.GradientTransformation,
               metrics_aggregator: metrics_lib.MetricsAggregator | None,
               clients_per_chunk: int | None,
               mesh: jax.sharding.Mesh):
    self.client_work = client_work
    self.model = client_work.model
    self.server_optimizer = server_optimizer
    self.clients_per_chunk = clients_per_chunk
    self.mesh = mesh
    # None: the default sum-then-finalize, summed chunk by chunk in O(1)
    # memory. A custom aggregator receives every client's unfinalized
    # metrics (a few scalars per client), gathered over the chunks.
    self._aggregate_metrics = (metrics_aggregator(client_work.metrics)
                               if metrics_aggregator else None)
    self._state_structure = jax.tree.structure(self._initial_state())
    replicated = sharding_lib.replicated_sharding(mesh)
    by_client = sharding_lib.clients_sharding(mesh)
    self._train_chunk = jax.jit(
        self._train_chunk_impl, donate_argnums=0,
        out_shardings=(replicated, by_client))
    self._finish = jax.jit(
        self._finish_impl, out_shardings=replicated,
        static_argnames='num_clients' if self._aggregate_metrics else None)

  # -- state ---------------------------------------------------------------

  def _initial_state(self) -> LearningAlgorithmState:
    weights = self.model.initial_weights
    return LearningAlgorithmState(
        global_model_weights=weights,
        distributor=(),
        client_work=self.client_work.initialize(),
        aggregator=OrderedDict(value_sum_process=(), weight_sum_process=()),
        finalizer=self.server_optimizer.init(weights.trainable))

  def initialize(self) -> LearningAlgorithmState:
    """The initial state, replicated on every device of the mesh."""
    return sharding_lib.put_replicated(self._initial_state(), self.mesh)

  def get_model_weights(self, state: LearningAlgorithmState) -> ModelWeights:
    """The global model weights held in `state`."""
    return state.global_model_weights

  def set_model_weights(self, state: LearningAlgorithmState,
                        weights: ModelWeights) -> LearningAlgorithmState:
    """`state` with `weights` as the global model (optimizer state kept)."""
    _validation.check_weights(self.model.initial_weights, weights, None)
    return state._replace(global_model_weights=sharding_lib.put_replicated(
        weights, self.mesh))

  def _check_state(self, state):
    if not isinstance(state, LearningAlgorithmState):
      raise TypeError('state: expected a jaxclient.algorithms.'
                      f'LearningAlgorithmState, found {type(state).__name__}.')
    found = jax.tree.structure(state)
    if found != self._state_structure:
      raise ValueError('state: structure does not match this process; '
                       f'expected {self._state_structure}, found {found}.')

  # -- data ----------------------------------------------------------------

  @property
  def chunk_size(self) -> int | None:
    """Clients per compiled chunk (a multiple of the mesh size), or None
    when the whole cohort trains as one chunk."""
    if self.clients_per_chunk is None:
      return None
    return sharding_lib.padded_size(self.clients_per_chunk, self.mesh)

  def prefetch(self, client_data: Mapping[str, np.ndarray]) -> Cohort:
    """Checks a round's data and starts moving its first chunk to devices.

    Call it for round r+1 while round r trains (JAX dispatches
    asynchronously) so that the transfer overlaps the computation. Every
    process passes the same full host data.
    """
    _validation.check_client_data(self.model.input_spec, client_data,
                                  ('clients', 'batches', 'batch_size'))
    client_data = {k: client_data[k] for k in _validation.DATA_KEYS}
    num_clients = int(np.shape(client_data['mask'])[0])
    if num_clients < 1:
      raise ValueError("client_data['mask']: expected at least one client, "
                       f"found shape {np.shape(client_data['mask'])}.")
    size = self.chunk_size or sharding_lib.padded_size(num_clients, self.mesh)
    starts = range(0, num_clients, size)
    if len(starts) == 1 and all(
        isinstance(v, jax.Array) for v in client_data.values()):
      chunks = (client_data,)  # One chunk already on devices.
    else:
      host = {k: np.asarray(v) for k, v in client_data.items()}
      chunks = tuple({k: v[s:s + size] for k, v in host.items()}
                     for s in starts)
    return Cohort(num_clients, (self._put_chunk(chunks[0], size),) +
                  chunks[1:])

  def _put_chunk(self, chunk, size):
    if all(isinstance(v, jax.Array) and v.shape[0] == size
           for v in chunk.values()):
      return sharding_lib.put_clients(chunk, self.mesh)
    return sharding_lib.put_clients(sharding_lib.pad_clients(chunk, size),
                                    self.mesh)

  # -- one round -----------------------------------------------------------

  def _train_chunk_impl(self, partial, state, data, client_ids, num_clients,
                        rng):
    result, client_metrics = self.client_work.cohort_update(
        state.client_work, state.global_model_weights, data, client_ids, rng,
        mesh=self.mesh)
    # Padding clients (ids past the cohort) count for nothing, even UNIFORMly.
    valid = client_ids < num_clients
    weight = jnp.where(valid, result.update_weight, 0.0)
    weighted_sum = jax.tree.map(
        lambda total, u: total + jnp.tensordot(weight.astype(u.dtype), u, 1),
        partial.weighted_update_sum, result.update)
    metric_sums = jax.tree.map(
        lambda total, m: total + jnp.sum(jnp.where(
            valid.reshape((-1,) + (1,) * (m.ndim - 1)), m, 0), axis=0),
        partial.metric_sums, client_metrics)
    return (_Partial(weighted_sum, partial.weight_sum + jnp.sum(weight),
                     metric_sums), client_metrics)

  def _finish_impl(self, state, partial, client_metrics, num_clients=None):
    if self._aggregate_metrics:
      train = self._aggregate_metrics(jax.tree.map(
          lambda *chunks: jnp.concatenate(chunks)[:num_clients],
          *client_metrics))
    else:
      train = {name: metric.finalize(partial.metric_sums[name])
               for name, metric in self.client_work.metrics.items()}
    mean_update = jax.tree.map(
        lambda s: s / partial.weight_sum.astype(s.dtype),
        partial.weighted_update_sum)
    trainable = state.global_model_weights.trainable
    updates, opt_state = self.server_optimizer.update(
        mean_update, state.finalizer, trainable)
    finite = client_work_lib.all_finite(mean_update)
    new_trainable, new_opt_state = jax.tree.map(
        lambda new, old: jnp.where(finite, new, old),
        (optax.apply_updates(trainable, updates), opt_state),
        (trainable, state.finalizer))
    new_state = state._replace(
        global_model_weights=ModelWeights(
            new_trainable, state.global_model_weights.non_trainable),
        finalizer=new_opt_state)
    metrics = OrderedDict(
        distributor=(),
        client_work=OrderedDict(train=train),
        aggregator=OrderedDict(mean_value=(), mean_weight=()),
        finalizer=OrderedDict(
            update_non_finite=jnp.logical_not(finite).astype(jnp.int32)))
    return new_state, metrics

  def next(self, state: LearningAlgorithmState,
           client_data: Mapping[str, np.ndarray] | Cohort,
           rng: jax.Array | None = None) -> LearningProcessOutput:
    """Runs one round of federated averaging.

    Args:
      state: from `initialize` or a previous `next`.
      client_data: the cohort's padded data (host arrays, e.g. from
        `jaxclient.data.pack`), or a `Cohort` from `prefetch`.
      rng: an optional key for stochastic models; client i of the cohort
        trains with `fold_in(rng, i)`, whatever the chunking.

    Returns:
      `LearningProcessOutput(state, metrics)`; metrics nest as TFF's.
    """
    self._check_state(state)
    cohort = (client_data if isinstance(client_data, Cohort)
              else self.prefetch(client_data))
    size = cohort.chunks[0]['mask'].shape[0]
    trainable = state.global_model_weights.trainable
    partial = sharding_lib.put_replicated(_Partial(
        jax.tree.map(lambda t: np.zeros(t.shape, t.dtype), trainable),
        np.zeros((), np.float32),
        {name: jax.tree.map(np.zeros_like, metric.init())
         for name, metric in self.client_work.metrics.items()}), self.mesh)
    chunk = cohort.chunks[0]
    client_metrics, previous = [], None
    for index in range(len(cohort.chunks)):
      ids = sharding_lib.put_clients(
          np.arange(index * size, (index + 1) * size, dtype=np.int32),
          self.mesh)
      partial, metrics = self._train_chunk(partial, state, chunk, ids,
                                           np.int32(cohort.num_clients), rng)
      if self._aggregate_metrics:
        client_metrics.append(metrics)
      if index + 1 < len(cohort.chunks):
        # At most two chunks on the devices: the one training and the next,
        # whose transfer overlaps it.
        jax.block_until_ready(previous)
        chunk = self._put_chunk(cohort.chunks[index + 1], size)
      previous = metrics
    new_state, metrics = self._finish(state, partial, tuple(client_metrics),
                                      num_clients=cohort.num_clients)
    return LearningProcessOutput(new_state, metrics)


def build_weighted_fed_avg(
    model,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation | None = None,
    *,
    client_weighting: (client_work_lib.ClientWeighting | Callable[..., Any]
                      ) = client_work_lib.ClientWeighting.NUM_EXAMPLES,
    metrics_aggregator: metrics_lib.MetricsAggregator | None = None,
    clients_per_chunk: int | None = None,
    clients_per_block: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
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
      the cohort. Default: the whole cohort at once.
    clients_per_block: clients vmapped at once inside a chunk (see
      `jaxclient.build_model_delta_client_work`); default automatic.
    mesh: the mesh whose `'clients'` axis splits the cohort; default
      `jaxclient.sharding.client_mesh()`, every device of every process.

  Returns:
    A `FedAvgProcess`.
  """
  if server_optimizer is None:
    server_optimizer = optimizers.build_sgdm(learning_rate=1.0)
  if not isinstance(server_optimizer, optax.GradientTransformation):
    raise TypeError('server_optimizer: expected an optax.GradientTransformation'
                    f', found {type(server_optimizer).__name__}.')
  if clients_per_chunk is not None and (
      not _validation.is_int(clients_per_chunk) or clients_per_chunk < 1):
    raise ValueError('clients_per_chunk: expected None or a positive int, '
                     f'found {clients_per_chunk!r}.')
  if clients_per_chunk is not None:
    clients_per_chunk = int(clients_per_chunk)
  client_work = client_work_lib.build_model_delta_client_work(
      model, client_optimizer, client_weighting, metrics_aggregator,
      clients_per_block=clients_per_block)
  return FedAvgProcess(client_work, server_optimizer, metrics_aggregator,
                       clients_per_chunk,
                       mesh if mesh is not None else sharding_lib.client_mesh())
