"""How a cohort of clients runs: a named strategy, chosen and reported.

A cohort is `C` clients' padded data `{'x', 'y', 'mask'}` with a leading
client axis. Every strategy gives each client exactly what
`jaxclient.client.client_update` gives it alone (bitwise, on one device);
they differ only in the schedule:

* `AllAtOnce()`: one `vmap` over the whole cohort (GPU, TPU);
* `Blocked(clients_per_block)`: blocks of at most that many clients per
  device, each block `vmap`ped, the blocks one after another inside the
  same compiled program, so that a block's weights, gradients and optimizer
  state stay in cache (CPU) or its memory fits; `Blocked(1)` trains one
  client after another, unbatched (CPU, all but small models);
* `ShardedOverClients(mesh, per_device)`: the client axis split over the
  devices of a 1-D `'clients'` mesh (`jaxclient.sharding.client_mesh`), each
  device training its own clients as a program of its own (`shard_map`),
  with `per_device` as its schedule and no communication.

`default_planner` picks one from the platform, the model, where the data
lies and the memory it needs (`Auto`, the default), and says why;
`jaxclient.build_model_delta_client_work(..., strategy=...)` overrides it,
and `process.plan(client_data)` tells which one `next` runs:

>>> import jaxclient as jc
>>> jc.cohort.Blocked(4).block_size(num_clients=6, devices=1)
3
>>> jc.cohort.AllAtOnce().block_size(num_clients=6, devices=1)
6
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxclient import _validation
from jaxclient import client as client_lib
from jaxclient import memory as memory_lib
from jaxclient import sharding as sharding_lib
from jaxclient._conv_layout import contains_convolution
from jaxclient.models import ModelWeights
from jaxclient.typing import ClientData, Hparams, PyTree

__all__ = [
  'AllAtOnce',
  'Auto',
  'Blocked',
  'Plan',
  'ShardedOverClients',
  'Strategy',
  'default_planner',
  'has_client_axis',
  'train',
]

# On a CPU, a model with at least this many bytes of trainable weights
# trains one client at a time; smaller ones train in vmapped blocks of about
# CPU_BLOCK_BYTES of weights per device. benchmarks/README.md has the
# measurements behind both figures.
CPU_ONE_CLIENT_BYTES = 2 * 2**10
CPU_BLOCK_BYTES = 8 * 2**20


@dataclasses.dataclass(frozen=True)
class AllAtOnce:
  """Every client of the cohort in one `vmap`."""

  def block_size(self, num_clients: int, devices: int) -> int:
    """Clients vmapped at once: the whole cohort."""
    del devices
    return num_clients


@dataclasses.dataclass(frozen=True)
class Blocked:
  """Blocks of at most `clients_per_block` clients per device, one block
  after another inside one program; each block is one `vmap`."""

  clients_per_block: int

  def __post_init__(self):
    _validation.check_int('Blocked.clients_per_block', self.clients_per_block)

  def block_size(self, num_clients: int, devices: int) -> int:
    """Clients vmapped at once in a program over `devices` devices: the
    largest divisor of `num_clients` not above `clients_per_block *
    devices`, a multiple of `devices` when `num_clients` is one (so that a
    block spreads evenly over the devices)."""
    limit = self.clients_per_block * devices
    unit = devices if num_clients % devices == 0 else 1
    return max(
      d
      for d in range(unit, min(limit, num_clients) + 1, unit)
      if num_clients % d == 0
    )


@dataclasses.dataclass(frozen=True)
class ShardedOverClients:
  """The client axis split over `mesh` (one axis, `'clients'`); each device
  trains its shard as its own program with `per_device`'s schedule."""

  mesh: Mesh
  per_device: AllAtOnce | Blocked = AllAtOnce()

  def __post_init__(self):
    if self.mesh.axis_names != (sharding_lib.CLIENTS_AXIS,):
      raise ValueError(
        "ShardedOverClients.mesh: expected one axis named 'clients' "
        f'(jaxclient.sharding.client_mesh), found {self.mesh.axis_names}.'
      )
    if isinstance(self.per_device, ShardedOverClients):
      raise TypeError(
        'ShardedOverClients.per_device: expected AllAtOnce or '
        'Blocked, found ShardedOverClients.'
      )


Strategy = AllAtOnce | Blocked | ShardedOverClients


@dataclasses.dataclass(frozen=True)
class Auto:
  """Let `default_planner` choose the strategy (the builders' default),
  training no more clients at once than fit in `memory_bytes` per device
  (default: `jaxclient.memory.MEMORY_FRACTION` of the device's free memory,
  on a CPU shared by its devices)."""

  memory_bytes: int | None = None

  def __post_init__(self):
    _validation.check_int('Auto.memory_bytes', self.memory_bytes, optional=True)


class Plan(NamedTuple):
  """The strategy a cohort runs with, and why it was chosen."""

  strategy: Strategy
  reason: str


# -- the default ---------------------------------------------------------------


def _has_convolution(training: client_lib.LocalTraining) -> bool:
  model = training.model
  sample_batch = jax.tree.map(
    lambda spec: jax.ShapeDtypeStruct((1,) + tuple(spec.shape), spec.dtype),
    model.input_spec['x'],
  )
  return contains_convolution(
    lambda w, x, key: model.predict_on_batch(w, x, True, rng=key),
    model.initial_weights,
    sample_batch,
    jax.ShapeDtypeStruct((2,), jnp.uint32),
  )


def _fastest_block(training: client_lib.LocalTraining) -> tuple[int, str]:
  """The clients a device runs fastest at once (0: all of them), and why."""
  if training.platform != 'cpu':
    return 0, f'on {training.platform} a device trains its clients in one vmap'
  if _has_convolution(training):
    return 1, (
      'on a CPU a model with convolutions trains one client at a time '
      '(vmapped convolutions become grouped ones, which XLA:CPU runs slower)'
    )
  weights = memory_lib.tree_bytes(training.model.initial_weights.trainable)
  if weights >= CPU_ONE_CLIENT_BYTES:
    return 1, (
      f'on a CPU a model with {weights >> 10} KiB of trainable weights '
      'trains one client at a time (vmapped over clients, its matmuls '
      'become batched ones, which XLA:CPU runs slower)'
    )
  block = max(1, CPU_BLOCK_BYTES // max(weights, 1))
  return block, (
    f'on a CPU a small model trains in vmapped blocks of {block} clients '
    f'per device (about {CPU_BLOCK_BYTES >> 20} MiB of trainable weights)'
  )


def _memory_limit(training, client_data, devices, memory_bytes, device):
  """The clients one of `devices` devices can train at once, and why."""
  need = memory_lib.client_bytes(training, client_data)
  budget = memory_lib.budget_bytes(memory_bytes, device)
  if memory_bytes is None and device.platform == 'cpu':
    budget //= devices  # CPU devices share the host's memory.
  resident = -(-int(np.shape(client_data['mask'])[0]) // devices)
  at_once = need.at_once(budget, resident)
  return at_once, (
    f'{at_once} client(s) per device fit in a budget of {budget >> 20} MiB '
    f"per device ({resident} clients' data and updates, "
    f'{(need.data + need.update) >> 10} KiB each, stay on the device; '
    f'training takes up to {need.training >> 10} KiB per client)'
  )


def _device_plan(training, client_data, devices, memory_bytes, device) -> Plan:
  """The schedule of each device's share of the cohort."""
  fastest, why = _fastest_block(training)
  fits, memory_why = _memory_limit(
    training, client_data, devices, memory_bytes, device
  )
  share = -(-int(np.shape(client_data['mask'])[0]) // devices)
  block = min(fastest or share, fits)
  strategy = AllAtOnce() if block >= share else Blocked(block)
  if fits < (fastest or share):
    return Plan(strategy, f'{why}, but only {memory_why}')
  return Plan(strategy, why)


def _client_mesh_of(mask) -> Mesh | None:
  """The `'clients'` mesh that splits `mask`'s client axis evenly over its
  devices, if `mask` was placed on one (`sharding.put_clients`)."""
  placement = getattr(mask, 'sharding', None)
  if not isinstance(placement, NamedSharding):
    return None
  mesh = placement.mesh
  if (
    not isinstance(mesh, Mesh)
    or mesh.axis_names != (sharding_lib.CLIENTS_AXIS,)
    or tuple(placement.spec)[:1] != (sharding_lib.CLIENTS_AXIS,)
    or np.shape(mask)[0] % mesh.size
  ):
    return None
  return mesh


def _where_to_train(mask) -> tuple[Mesh | None, str]:
  """The mesh a cohort trains on, and why: where its data lies, else every
  device of this process (one process only); None: one device."""
  mesh = _client_mesh_of(mask)
  if mesh is not None and mesh.size == 1:
    return None, ''
  if mesh is not None:
    return mesh, (
      f"the client data is split over a 'clients' mesh of {mesh.size} "
      'devices, so each device trains its own clients'
    )
  if jax.process_count() > 1 or jax.device_count() < 2:
    return None, ''
  mesh = sharding_lib.client_mesh()
  platform = mesh.devices.flat[0].platform
  origin = (
    ' (one per core, set up by `import jaxclient`; '
    f'{sharding_lib.CPU_DEVICES_ENV}=1 keeps one)'
    if platform == 'cpu'
    else ''
  )
  return mesh, (
    f'JAX shows {mesh.size} {platform} devices{origin}, so the cohort is '
    'split over them and each trains its own clients'
  )


def default_planner(
  training: client_lib.LocalTraining, memory_bytes: int | None = None
) -> Callable[[ClientData], Plan]:
  """The function that picks a cohort's strategy when none was given
  (`Auto(memory_bytes)`), and says why.

  Where: client data placed on a `'clients'` mesh of several devices
  (`jaxclient.sharding.put_clients`) trains where it lies; otherwise, in a
  single process with several devices (on a CPU one per core, as
  `import jaxclient` sets up: `jaxclient.sharding`), over all of them;
  either way each device trains its own clients (`ShardedOverClients`).
  How, on each device: one `vmap` on GPU/TPU; on a CPU one client at a
  time, or vmapped blocks for small models (`CPU_ONE_CLIENT_BYTES`); never
  more clients at once than fit in the memory budget
  (`jaxclient.memory`). Worked out once per data shape and placement (the
  free memory is read then).
  """

  @functools.cache
  def plan_for(shapes, mesh, where) -> Plan:
    data = memory_lib.shape_structs(shapes)
    devices = 1 if mesh is None else mesh.size
    device = jax.devices()[0] if mesh is None else mesh.devices.flat[0]
    inner = _device_plan(training, data, devices, memory_bytes, device)
    if mesh is None:
      return inner
    per_device = cast(AllAtOnce | Blocked, inner.strategy)
    return Plan(
      ShardedOverClients(mesh, per_device), f'{where}; {inner.reason}'
    )

  def plan(client_data: ClientData) -> Plan:
    mesh, where = _where_to_train(client_data['mask'])
    return plan_for(memory_lib.shapes_of(client_data), mesh, where)

  return plan


# -- running a cohort ----------------------------------------------------------


def _full_batch_step(every_client_has_data):
  """A batch step that skips the all-padding guard on the batches where
  every client of the vmap has data (`every_client_has_data[b]`, unbatched).
  The guard's select costs a pass over every client's weights and keeps XLA
  from fusing the update into the gradient; skipping it changes nothing."""

  def batch_step(training, state, non_trainable, batch, rng, index):
    return jax.lax.cond(
      every_client_has_data[index],
      lambda s: client_lib.step(training, s, non_trainable, batch, rng),
      lambda s: client_lib.guarded_step(training, s, non_trainable, batch, rng),
      state,
    )

  return batch_step


def _vmapped(
  training, hparams, weights, data, client_ids, rng, weights_per_client
):
  """`client_update` vmapped over one group of clients."""
  client_rngs = (
    None
    if rng is None
    else jax.vmap(lambda i: jax.random.fold_in(rng, i))(client_ids)
  )
  kwargs: dict[str, Any] = {}
  if training.platform != 'cpu':  # XLA:CPU gains nothing from the `cond`.
    kwargs['batch_step'] = _full_batch_step(
      jnp.all(jnp.any(data['mask'], axis=2), axis=0)
    )

  def update(hparams, weights, data, rng):
    return client_lib.client_update(
      training, hparams, weights, data, rng, **kwargs
    )

  return jax.vmap(
    update,
    in_axes=(
      None,
      0 if weights_per_client else None,
      0,
      None if rng is None else 0,
    ),
  )(hparams, weights, data, client_rngs)


def _skip_empty_batch(training, state, non_trainable, batch, rng, index):
  """One client's batch step that skips a batch with no data (a branch,
  where a vmapped client must compute the step and select)."""
  del index
  return jax.lax.cond(
    jnp.any(batch['mask']),
    lambda s: client_lib.step(training, s, non_trainable, batch, rng),
    lambda s: s,
    state,
  )


def _one_at_a_time(training, hparams, weights, per_client, rng):
  """`client_update` on one client after another (`lax.map`), unbatched:
  its matmuls stay plain ones (a vmap makes them batched)."""

  def train_client(inputs):
    client_id, data, *client_weights = inputs
    return client_lib.client_update(
      training,
      hparams,
      client_weights[0] if client_weights else weights,
      data,
      None if rng is None else jax.random.fold_in(rng, client_id),
      batch_step=_skip_empty_batch,
    )

  return jax.lax.map(train_client, per_client)


def _in_blocks(
  training,
  strategy,
  devices,
  hparams,
  weights,
  data,
  client_ids,
  rng,
  weights_per_client,
):
  """The clients vmapped in blocks of `strategy.block_size` inside one
  program (blocks of one: unbatched, one at a time). Block j holds clients
  j, j + C/k, j + 2C/k, ...: with the client axis split over devices in
  contiguous runs, every device then trains its share of each block and the
  loop over blocks needs no communication."""
  num_clients = client_ids.shape[0]
  block = strategy.block_size(num_clients, devices)
  if block == num_clients:
    return _vmapped(
      training, hparams, weights, data, client_ids, rng, weights_per_client
    )

  per_client = (client_ids, data) + ((weights,) if weights_per_client else ())
  if block == 1:
    return _one_at_a_time(training, hparams, weights, per_client, rng)

  def blocked(tree):
    return jax.tree.map(
      lambda v: v.reshape((block, num_clients // block) + v.shape[1:]).swapaxes(
        0, 1
      ),
      tree,
    )

  def train_block(block_inputs):
    ids, block_data, *block_weights = block_inputs
    return _vmapped(
      training,
      hparams,
      block_weights[0] if block_weights else weights,
      block_data,
      ids,
      rng,
      weights_per_client,
    )

  outputs = jax.lax.map(train_block, blocked(per_client))
  return jax.tree.map(
    lambda v: v.swapaxes(0, 1).reshape((num_clients,) + v.shape[2:]), outputs
  )


def has_client_axis(training: client_lib.LocalTraining, weights) -> bool:
  """True when `weights` are one per client (a leading client axis)."""
  reference = jax.tree.leaves(training.model.initial_weights)
  leaves = jax.tree.leaves(weights)
  return any(
    np.ndim(leaf) > np.ndim(ref)
    for leaf, ref in zip(leaves, reference, strict=True)
  )


def train(
  training: client_lib.LocalTraining,
  strategy: Strategy,
  hparams: Hparams,
  weights: ModelWeights,
  client_data: ClientData,
  client_ids: jax.Array,
  rng: jax.Array | None = None,
) -> tuple[client_lib.ClientResult, dict[str, PyTree]]:
  """Trains a cohort with `strategy`; pure and jittable.

  Args:
    training: from `jaxclient.client.local_training`.
    strategy: `AllAtOnce()`, `Blocked(n)` or `ShardedOverClients(mesh)`.
    hparams: the optimizer hyperparameters (the process state).
    weights: one `ModelWeights` for every client, or one per client stacked
      on a leading axis (as `jaxclient.ClientWorkProcess.next` checks).
    client_data: `{'x': [C, B, N, ...], 'y': [C, B, N, ...], 'mask':
      [C, B, N]}`.
    client_ids: `[C]` ints; client i trains with `fold_in(rng, ids[i])`,
      so its randomness does not depend on the rest of its cohort.
    rng: an optional key for stochastic models.

  Returns:
    `(ClientResult [C, ...], unfinalized metrics [C, ...])`.
  """
  per_client = has_client_axis(training, weights)
  if not isinstance(strategy, ShardedOverClients):
    return _in_blocks(
      training,
      strategy,
      jax.device_count(),
      hparams,
      weights,
      client_data,
      client_ids,
      rng,
      per_client,
    )
  clients, replicated = (
    PartitionSpec(sharding_lib.CLIENTS_AXIS),
    PartitionSpec(),
  )

  def train_shard(hparams, weights, client_data, client_ids, *key):
    return _in_blocks(
      training,
      strategy.per_device,
      1,
      hparams,
      weights,
      client_data,
      client_ids,
      key[0] if key else None,
      per_client,
    )

  keys = () if rng is None else (rng,)
  return sharding_lib.map_client_shards(
    train_shard,
    strategy.mesh,
    in_specs=(
      replicated,
      clients if per_client else replicated,
      clients,
      clients,
    )
    + (replicated,) * len(keys),
    out_specs=clients,
  )(hparams, weights, dict(client_data), client_ids, *keys)
