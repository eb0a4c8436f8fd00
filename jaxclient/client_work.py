"""The model-delta client work: a JAX port of TFF's
`tff.learning.templates.build_model_delta_client_work`.

For each client, in order over its batches: predictions and loss with the
current weights, the gradient with respect to the trainable weights, one
optimizer step. The client returns `update = initial - final` trainable
weights, a weight for aggregation and its unfinalized metrics. `next` runs a
whole cohort as ONE jitted program that `vmap`s `client_update` over clients.

Semantics (TFF's, exactly):

* a non-finite update is replaced by zeros, its weight by 0.0, the client's
  metrics by their initial state, and `num_non_finite_clients` counts it;
* `NUM_EXAMPLES` weighs a client by the float32 count of examples trained on
  (over all epochs), `UNIFORM` by 1.0, a callable by its value on the
  client's unfinalized metrics;
* padding is inert: padded examples add nothing, and a batch with no valid
  example changes neither the weights, the optimizer state nor the metrics.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec

from jaxclient import _validation
from jaxclient._conv_layout import canonicalize_convolutions
from jaxclient._conv_layout import contains_convolution
from jaxclient import metrics as metrics_lib
from jaxclient import sharding as sharding_lib
from jaxclient.models import FunctionalModel, ModelWeights

PyTree = Any
Hparams = Mapping[str, jax.Array]


class ClientWeighting(enum.Enum):
  """How a client's update is weighted in the server's mean (as TFF's)."""

  NUM_EXAMPLES = 1
  UNIFORM = 2


class ClientResult(NamedTuple):
  """A client's contribution: `update` (initial - final) and its weight."""

  update: PyTree
  update_weight: jax.Array


class MeasuredProcessOutput(NamedTuple):
  """The output of `next`, as TFF's `tff.templates.MeasuredProcessOutput`."""

  state: Hparams
  result: ClientResult
  measurements: dict


def _tree_select(predicate, on_true, on_false):
  return jax.tree.map(lambda a, b: jnp.where(predicate, a, b), on_true,
                      on_false)


def all_finite(tree) -> jax.Array:
  """A scalar bool: every value of every leaf of `tree` is finite."""
  return jnp.all(jnp.stack(
      [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)] +
      [jnp.bool_(True)]))


def _zero_padding(batch):
  """Zeros the padded rows of `x` and `y`, so that whatever padding holds
  (even NaN) cannot reach a gradient through `0 * NaN`."""
  mask = batch['mask']

  def zero(v):
    return jnp.where(mask.reshape(mask.shape + (1,) * (v.ndim - mask.ndim)),
                     v, jnp.zeros((), v.dtype))
  return {'x': jax.tree.map(zero, batch['x']), 'y': zero(batch['y']),
          'mask': mask}


def resolve_model(model_or_model_fn) -> FunctionalModel:
  """The `FunctionalModel` itself, or the one a no-arg `model_fn` builds
  (called twice: returning the same object twice is an error, as in TFF)."""
  if isinstance(model_or_model_fn, FunctionalModel):
    return model_or_model_fn
  if not callable(model_or_model_fn):
    raise TypeError(
        'model: expected a jaxclient.FunctionalModel or a no-arg callable '
        f'returning one, found {type(model_or_model_fn).__name__}.')
  model = model_or_model_fn()
  if not isinstance(model, FunctionalModel):
    raise TypeError('model_fn: expected to return a jaxclient.FunctionalModel,'
                    f' found {type(model).__name__}.')
  if model_or_model_fn() is model:
    raise ValueError(
        'model_fn returned the same model object on two calls; it must '
        'construct a new model on every invocation (as in TFF).')
  return model


def _check_optimizer(optimizer) -> optax.GradientTransformation:
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError('optimizer: expected an optax.GradientTransformation, '
                    f'found {type(optimizer).__name__}.')
  return optimizer


def _check_weighting(client_weighting):
  if not (isinstance(client_weighting, ClientWeighting) or
          callable(client_weighting)):
    raise TypeError(
        'client_weighting: expected a jaxclient.ClientWeighting or a callable '
        f'on the client metrics, found {client_weighting!r}.')
  return client_weighting


def initial_optimizer_state(optimizer: optax.GradientTransformation,
                            trainable: PyTree, hparams: Hparams):
  """A client's fresh optimizer state, with `hparams` (the process state)
  injected when the optimizer was built with `optax.inject_hyperparams`."""
  opt_state = optimizer.init(trainable)
  if hparams:
    opt_state = opt_state._replace(hyperparams={
        k: jnp.asarray(hparams[k], jnp.result_type(v))
        for k, v in opt_state.hyperparams.items()})
  return opt_state


def client_weight(client_weighting, metric_states) -> jax.Array:
  """A client's float32 weight from its unfinalized metrics."""
  if client_weighting is ClientWeighting.NUM_EXAMPLES:
    return metric_states['num_examples'].astype(jnp.float32)
  if client_weighting is ClientWeighting.UNIFORM:
    return jnp.ones((), jnp.float32)
  return jnp.asarray(client_weighting(metric_states), jnp.float32)


def finish_client(initial_trainable, final_trainable, metric_states,
                  initial_metrics, client_weighting
                  ) -> tuple[ClientResult, dict[str, PyTree]]:
  """The end of a client's training, TFF's semantics.

  `update = initial - final`; if any value of it is not finite, the update
  becomes zeros, the weight 0.0 and the metrics `initial_metrics`, with
  `num_non_finite_clients` set to 1 (else 0).
  """
  update = jax.tree.map(jnp.subtract, initial_trainable, final_trainable)
  finite = all_finite(update)
  update = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)),
                        update)
  weight = jnp.where(finite, client_weight(client_weighting, metric_states),
                     0.0)
  metric_states = _tree_select(finite, metric_states, initial_metrics)
  metric_states['num_non_finite_clients'] = jnp.logical_not(finite).astype(
      jnp.int32)
  return ClientResult(update, weight), metric_states


# On a CPU, vmapping a whole cohort of a mid-sized model streams every
# client's weights, gradients and optimizer state through memory at every
# step; blocks whose trainable weights total about this many bytes, shared
# by the process's CPU devices (which train at once), stay in cache.
# Measured on the 2NN (0.8 MB of weights), 2 cores: on one device, blocks
# of 10 run 1.1x faster than blocks of 5 and as fast as 20, and 10 clients
# run fastest in one vmap; on two devices, blocks of 5 per device run 1.2x
# faster than blocks of 20 at 1000 clients (benchmarks/README.md).
_CPU_BLOCK_BYTES = 8 * 2**20


def _default_clients_per_block(model: FunctionalModel) -> int | None:
  """Clients per device per block. None (the whole cohort in one vmap) on
  accelerators. On a CPU, one client at a time for a model with
  convolutions (vmapped over clients they become grouped convolutions,
  which XLA:CPU runs about 1.2x slower than one client after another),
  else as many clients as fit each device's share of `_CPU_BLOCK_BYTES` of
  trainable weights (at least 1)."""
  if jax.default_backend() != 'cpu':
    return None
  trainable = model.initial_weights.trainable
  sample_batch = jax.tree.map(
      lambda spec: jax.ShapeDtypeStruct((1,) + tuple(spec.shape), spec.dtype),
      model.input_spec['x'])
  sample_key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  try:
    convolutional = contains_convolution(
        lambda w, x, key: model.predict_on_batch(w, x, True, rng=key),
        model.initial_weights, sample_batch, sample_key)
  except Exception:  # pylint: disable=broad-except
    # Only a schedule is at stake; `next` reports what is wrong with the
    # model.
    convolutional = False
  if convolutional:
    return 1
  size = sum(np.size(leaf) * jnp.result_type(leaf).itemsize
             for leaf in jax.tree.leaves(trainable))
  per_device = _CPU_BLOCK_BYTES // jax.local_device_count()
  return max(1, per_device // max(size, 1))


def _client_mesh(mask) -> jax.sharding.Mesh | None:
  """The mesh `mask`'s client axis is split over, when it is a `'clients'`
  mesh (`jaxclient.sharding.client_mesh`) that splits it evenly; else
  None."""
  sharding = getattr(mask, 'sharding', None)
  if not isinstance(sharding, jax.sharding.NamedSharding):
    return None
  mesh = sharding.mesh
  if (mesh.axis_names != (sharding_lib.CLIENTS_AXIS,) or
      tuple(sharding.spec)[:1] != (sharding_lib.CLIENTS_AXIS,) or
      mask.shape[0] % mesh.size):
    return None
  return mesh


class ClientWorkProcess:
  """Client work for federated averaging over a `FunctionalModel`.

  State: the optimizer's hyperparameters (an `OrderedDict` of float32
  scalars) when the optimizer was built with `optax.inject_hyperparams`
  (as every `jaxclient.optimizers.build_*` is), else empty.
  """

  def __init__(self, model: FunctionalModel,
               optimizer: optax.GradientTransformation,
               client_weighting: ClientWeighting | Callable[..., jax.Array],
               metrics_aggregator: metrics_lib.MetricsAggregator | None = None,
               clients_per_block: int | None = None):
    self.model = model
    self._clients_per_block = (
        clients_per_block if clients_per_block is not None else
        _default_clients_per_block(model))
    self.optimizer = optimizer
    self.client_weighting = client_weighting
    self.metrics = metrics_lib.with_built_ins(model.metrics)
    aggregator = metrics_aggregator or metrics_lib.sum_then_finalize
    self._aggregate_metrics = aggregator(self.metrics)
    self._hparam_names = tuple(getattr(
        jax.eval_shape(optimizer.init, model.initial_weights.trainable),
        'hyperparams', {}))
    self._next = jax.jit(self._next_impl,
                         static_argnames=('weights_per_client', 'mesh'))

  # -- state ---------------------------------------------------------------

  def initialize(self) -> Hparams:
    """The initial state: the optimizer's hyperparameters, or `{}`."""
    opt_state = self.optimizer.init(self.model.initial_weights.trainable)
    return OrderedDict(getattr(opt_state, 'hyperparams', {}))

  def get_hparams(self, state: Hparams) -> Hparams:
    """The hyperparameters held in `state` (here, the whole state)."""
    return OrderedDict(state)

  def set_hparams(self, state: Hparams, hparams: Mapping[str, Any]) -> Hparams:
    """`state` with `hparams` replacing its values; the keys must match."""
    self._check_hparams(state, hparams, field='hparams')
    return OrderedDict(
        (k, jnp.asarray(hparams[k], dtype=jnp.result_type(v)))
        for k, v in state.items())

  def _check_hparams(self, expected, found, field):
    if not isinstance(found, Mapping):
      raise TypeError(f'{field}: expected a mapping with keys '
                      f'{list(expected)}, found {type(found).__name__}.')
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    if missing or extra:
      raise ValueError(f'{field}: expected keys {list(expected)}; missing '
                       f'{missing}, unexpected {extra}.')
    for k, v in found.items():
      if np.ndim(v) != 0:
        raise ValueError(f"{field}['{k}']: expected a scalar, found shape "
                         f'{np.shape(v)}.')

  # -- one client ----------------------------------------------------------

  def client_update(self, hparams: Hparams, weights: ModelWeights,
                    data: Mapping[str, jax.Array],
                    rng: jax.Array | None = None,
                    cohort_has_data: jax.Array | None = None
                    ) -> tuple[ClientResult, dict[str, PyTree]]:
    """Trains one client; pure and jittable.

    Args:
      hparams: the process state (optimizer hyperparameters).
      weights: the `ModelWeights` the client starts from.
      data: `{'x': [B, N, ...], 'y': [B, N, ...], 'mask': [B, N]}`.
      rng: the client's key; batch b's dropout key is `fold_in(rng, b)`.
      cohort_has_data: optional `[B]` bools, the same for every client of a
        `vmap` (unbatched): True where every one of them has an example in
        batch b. Those steps skip the select that keeps an all-padding batch
        inert, a select that on a GPU costs a pass over every client's
        weights and keeps XLA from folding the update into the gradient's
        matmul (the 2NN, 1000 clients, H200: 1.4x). None: every step is
        guarded. The result is the same either way.

    Returns:
      `(ClientResult(update, update_weight), unfinalized_metrics)`.
    """
    model = self.model
    non_trainable = weights.non_trainable
    opt_state = initial_optimizer_state(self.optimizer, weights.trainable,
                                        hparams)
    initial_metrics = {n: m.init() for n, m in self.metrics.items()}

    def loss_fn(trainable, batch, batch_rng):
      predictions = model.predict_on_batch(
          ModelWeights(trainable, non_trainable), batch['x'], True,
          rng=batch_rng)
      return model.loss(predictions, batch['y'], batch['mask']), predictions

    loss_and_grads = jax.value_and_grad(loss_fn, has_aux=True)
    if jax.default_backend() == 'cpu':
      loss_and_grads = canonicalize_convolutions(loss_and_grads)

    def train_on_batch(carry, inputs):
      batch, index, every_client_has_data = inputs
      batch = _zero_padding(batch)
      batch_rng = None if rng is None else jax.random.fold_in(rng, index)

      def step(carry):
        trainable, opt_state, metric_states = carry
        (loss, predictions), grads = loss_and_grads(trainable, batch,
                                                    batch_rng)
        updates, new_opt_state = self.optimizer.update(grads, opt_state,
                                                       trainable)
        output = metrics_lib.BatchOutput(predictions, batch['y'],
                                         batch['mask'], loss)
        return (optax.apply_updates(trainable, updates), new_opt_state,
                {n: m.update(metric_states[n], output)
                 for n, m in self.metrics.items()})

      def guarded_step(carry):
        # An all-padding batch is inert: no step, no momentum decay, no
        # count.
        return _tree_select(jnp.any(batch['mask']), step(carry), carry)

      if every_client_has_data is None:
        return guarded_step(carry), None
      return jax.lax.cond(every_client_has_data, step, guarded_step,
                          carry), None

    num_batches = data['mask'].shape[0]
    (final_trainable, _, metric_states), _ = jax.lax.scan(
        train_on_batch, (weights.trainable, opt_state, initial_metrics),
        (data, jnp.arange(num_batches), cohort_has_data))

    return finish_client(weights.trainable, final_trainable, metric_states,
                         initial_metrics, self.client_weighting)

  # -- the cohort ----------------------------------------------------------

  def cohort_update(self, state: Hparams, weights: ModelWeights,
                    client_data: Mapping[str, jax.Array],
                    client_ids: jax.Array, rng: jax.Array | None = None,
                    weights_per_client: bool = False,
                    mesh: jax.sharding.Mesh | None = None
                    ) -> tuple[ClientResult, dict[str, PyTree]]:
    """`client_update` vmapped over a cohort; pure and jittable.

    Client i trains with `fold_in(rng, client_ids[i])`, so its randomness
    does not depend on which other clients share its cohort or chunk.

    Args:
      mesh: a mesh with one axis, `'clients'`, that splits the client axis
        of `client_data`, `client_ids` (and `weights`, when per client):
        each device then trains its own clients as a program of its own
        (`shard_map`), with no communication. None (or one device): one
        program over the whole cohort, as the inputs are placed.

    Returns:
      `(ClientResult [C, ...], unfinalized metrics [C, ...])`.
    """
    if mesh is None or mesh.size == 1:
      return self._train_clients(state, weights, client_data, client_ids,
                                 rng, weights_per_client, jax.device_count())
    clients, replicated = (PartitionSpec(sharding_lib.CLIENTS_AXIS),
                           PartitionSpec())

    def train_shard(state, weights, client_data, client_ids, *rng):
      return self._train_clients(state, weights, client_data, client_ids,
                                 *(rng or (None,)), weights_per_client,
                                 devices=1)

    keys = () if rng is None else (rng,)
    return sharding_lib.map_client_shards(
        train_shard, mesh,
        in_specs=(replicated, clients if weights_per_client else replicated,
                  clients, clients) + (replicated,) * len(keys),
        out_specs=clients)(state, weights, client_data, client_ids, *keys)

  def _train_clients(self, state, weights, client_data, client_ids, rng,
                     weights_per_client, devices):
    """The cohort, vmapped in blocks of `_block_size(C, devices)` clients."""
    def train(ids, data, client_weights):
      client_rngs = None if rng is None else jax.vmap(
          lambda i: jax.random.fold_in(rng, i))(ids)
      # On accelerators only: XLA:CPU gains nothing from skipping the select
      # (the 2NN: the same speed within noise) and would compile both
      # branches of the `cond`.
      every_client_has_data = None if jax.default_backend() == 'cpu' else (
          jnp.all(jnp.any(data['mask'], axis=2), axis=0))
      return jax.vmap(
          self.client_update,
          in_axes=(None, 0 if weights_per_client else None, 0,
                   None if rng is None else 0, None))(
                       state, client_weights, data, client_rngs,
                       every_client_has_data)

    num_clients = client_ids.shape[0]
    block = self._block_size(num_clients, devices)
    if block == num_clients:
      return train(client_ids, client_data, weights)
    # Blocks of clients run one after another inside the same program, so
    # the working set (weights, gradients, optimizer state of a block)
    # stays in cache; each block is vmapped. Block j holds the clients
    # j, j + C/k, j + 2C/k, ...: with the client axis split over devices in
    # contiguous runs, every device then trains its share of each block and
    # the loop over blocks needs no communication.
    def blocked(tree):
      return jax.tree.map(
          lambda v: v.reshape((block, num_clients // block) +
                              v.shape[1:]).swapaxes(0, 1), tree)
    if weights_per_client:
      outputs = jax.lax.map(lambda xs: train(*xs),
                            blocked((client_ids, client_data, weights)))
    else:
      outputs = jax.lax.map(lambda xs: train(*xs, weights),
                            blocked((client_ids, client_data)))
    return jax.tree.map(
        lambda v: v.swapaxes(0, 1).reshape((num_clients,) + v.shape[2:]),
        outputs)

  def clients_per_block(self, num_clients: int) -> int:
    """How many of `num_clients` clients are vmapped at once, in one
    program over all `jax.device_count()` devices.

    The largest divisor of `num_clients` not above the block size this
    process was built with times the device count (each device trains that
    many), and a multiple of the device count when `num_clients` is one, so
    that a block spreads evenly over the devices. `num_clients` itself when
    built for whole-cohort vmaps. (With `mesh`, each device blocks its own
    clients alone.)
    """
    return self._block_size(num_clients, jax.device_count())

  def _block_size(self, num_clients: int, devices: int) -> int:
    if self._clients_per_block is None:
      return num_clients
    limit = self._clients_per_block * devices
    step = devices if num_clients % devices == 0 else 1
    return max(d for d in range(step, min(limit, num_clients) + 1, step)
               if num_clients % d == 0)

  def _next_impl(self, state, weights, client_data, rng, weights_per_client,
                 mesh):
    num_clients = client_data['mask'].shape[0]
    client_ids = jnp.arange(num_clients)
    if mesh is not None:
      client_ids = jax.lax.with_sharding_constraint(
          client_ids, sharding_lib.clients_sharding(mesh))
    result, client_metrics = self.cohort_update(
        state, weights, client_data, client_ids, rng, weights_per_client,
        mesh)
    measurements = {'train': self._aggregate_metrics(client_metrics)}
    return MeasuredProcessOutput(state, result, measurements)

  def next(self, state: Hparams, weights: ModelWeights,
           client_data: Mapping[str, jax.Array],
           rng: jax.Array | None = None) -> MeasuredProcessOutput:
    """Trains a cohort of clients as one compiled program.

    Args:
      state: from `initialize` or `set_hparams`.
      weights: one `ModelWeights` broadcast to every client (not copied), or
        one per client stacked on a leading axis.
      client_data: `{'x': [C, B, N, ...], 'y': [C, B, N, ...], 'mask': [C, B,
        N]}`, e.g. from `jaxclient.data.pack`.
      rng: an optional key for stochastic models (dropout); client i trains
        with `fold_in(rng, i)`.

    Returns:
      `MeasuredProcessOutput(state, ClientResult(update [C, ...],
      update_weight [C]), {'train': aggregated metrics})`.
    """
    self._check_hparams(self._hparam_names, state, field='state')
    _validation.check_client_data(self.model.input_spec, client_data,
                                  ('clients', 'batches', 'batch_size'))
    num_clients = np.shape(client_data['mask'])[0]
    per_client = _validation.check_weights(self.model.initial_weights,
                                           weights, num_clients)
    return self._next(state, weights, dict(client_data), rng,
                      weights_per_client=per_client,
                      mesh=_client_mesh(client_data['mask']))


def build_model_delta_client_work(
    model,
    optimizer: optax.GradientTransformation,
    client_weighting: ClientWeighting | Callable[..., jax.Array],
    metrics_aggregator: metrics_lib.MetricsAggregator | None = None,
    *,
    clients_per_block: int | None = None,
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
    clients_per_block: how many clients each device trains at a time in
      one `vmap`; blocks run one after another inside the same compiled
      program (see `ClientWorkProcess.clients_per_block`). Results do not
      depend on it. Default: the whole cohort on GPU/TPU; on a CPU, as many
      clients as keep about 4 MiB of trainable weights in cache.

  Returns:
    A `ClientWorkProcess`.
  """
  if clients_per_block is not None and (
      not _validation.is_int(clients_per_block) or clients_per_block < 1):
    raise ValueError('clients_per_block: expected None or a positive int, '
                     f'found {clients_per_block!r}.')
  return ClientWorkProcess(resolve_model(model), _check_optimizer(optimizer),
                           _check_weighting(client_weighting),
                           metrics_aggregator, clients_per_block)
