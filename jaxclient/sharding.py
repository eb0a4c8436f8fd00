"""The client axis, sharded over every device of every process.

A cohort's arrays carry a leading client axis. `client_mesh` lays a 1-D
`jax.sharding.Mesh` with one axis, `'clients'`, over all devices that JAX
sees: the local ones, and under `jax.distributed` those of every process.
`put_clients` places a host array on that mesh split along its first axis;
`put_replicated` places a copy on every device. Both build global arrays
from the host data each process holds (`jax.make_array_from_callback`), so
the same code runs on one device, many local devices, or many hosts; each
process transfers only its own shards, once.

On a CPU, JAX shows one device, and one device runs one program on one
core at a time (XLA:CPU parallelizes only large single operations; a
cohort of small per-client steps keeps one core busy). So `import
jaxclient` splits the CPU into one JAX device per core this process may run
on (`use_every_core`), before JAX starts, unless the user chose a count
(`jax_num_cpu_devices`, `JAX_NUM_CPU_DEVICES`, or
`--xla_force_host_platform_device_count` in `XLA_FLAGS`). What changes for
other JAX code: `jax.devices()` and `jax.device_count()` show that many
CPU devices; computations still run on `jax.devices()[0]` unless placed
elsewhere; accelerators are unaffected. `JAXCLIENT_CPU_DEVICES=1` (before
the import) keeps JAX's single CPU device, `JAXCLIENT_CPU_DEVICES=N` asks
for N. When JAX has already started with fewer devices, the import warns
once, saying how to get them. `set_cpu_device_count` sets a count
explicitly. `client_mesh` then spreads a cohort over every core
(benchmarks/README.md measures what it gains).

Multi-host runs use JAX's own runtime: call `initialize_distributed` (a thin
wrapper of `jax.distributed.initialize` that also picks CPU collectives)
in every process before any other JAX call. See docs/simulation.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxclient import _jax_internals, _validation
from jaxclient import data as data_lib
from jaxclient.typing import PyTree

__all__ = [
  'CLIENTS_AXIS',
  'CPU_DEVICES_ENV',
  'client_mesh',
  'clients_sharding',
  'initialize_distributed',
  'map_client_shards',
  'pad_clients',
  'padded_size',
  'put_clients',
  'put_replicated',
  'replicated_sharding',
  'set_cpu_device_count',
  'use_every_core',
]

CLIENTS_AXIS = 'clients'
# The environment variable `use_every_core` reads: a CPU device count.
CPU_DEVICES_ENV = 'JAXCLIENT_CPU_DEVICES'


def _usable_cores() -> int:
  """The cores this process may run on."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def set_cpu_device_count(count: int | None = None) -> int:
  """Makes JAX show `count` CPU devices (default: one per core this process
  may run on); returns the count.

  Call it before JAX runs anything (right after `import jax`): the CPU
  backend reads the count when it starts. Accelerators are unaffected.
  """
  count = _validation.check_int(
    'set_cpu_device_count: count', count, optional=True
  )
  if count is None:
    count = _usable_cores()
  if _jax_internals.backends_started():
    raise RuntimeError(
      'set_cpu_device_count: JAX has already started its backends; call '
      'it before any JAX computation (right after `import jax`).'
    )
  if 'jax_num_cpu_devices' in jax.config.values:
    jax.config.update('jax_num_cpu_devices', count)
  else:  # jax < 0.4.38: the XLA flag, read when the CPU backend starts.
    flags = re.sub(
      r'--xla_force_host_platform_device_count=\S*',
      '',
      os.environ.get('XLA_FLAGS', ''),
    )
    os.environ['XLA_FLAGS'] = (
      f'{flags} --xla_force_host_platform_device_count={count}'.strip()
    )
  return count


def _user_chose_cpu_devices() -> bool:
  """True when JAX's CPU device count was set outside jaxclient."""
  chosen = jax.config.values.get('jax_num_cpu_devices', -1)
  return (chosen is not None and chosen >= 0) or (
    '--xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', '')
  )


def use_every_core() -> int | None:
  """Splits the CPU into one JAX device per usable core, as `import
  jaxclient` does (see the module docstring); returns the count it set, or
  None when it changed nothing.

  `JAXCLIENT_CPU_DEVICES` (a positive int) overrides the count; 1 keeps
  JAX's single CPU device. A count the user set through JAX is kept. When
  JAX's backends have already started with fewer CPU devices, it warns
  (once per call) how to get them instead.
  """
  requested = _requested_cpu_devices()
  if _user_chose_cpu_devices():
    return None
  count = _usable_cores() if requested is None else requested
  if not _jax_internals.backends_started():
    return set_cpu_device_count(count) if count > 1 else None
  if jax.default_backend() == 'cpu' and jax.local_device_count() < count:
    warnings.warn(
      f'jaxclient: JAX started before jaxclient was imported, with '
      f'{jax.local_device_count()} CPU device(s), so a cohort trains on '
      f'{jax.local_device_count()} of the {count} cores this process may '
      'use. Import jaxclient before running any JAX computation (or call '
      'jaxclient.sharding.set_cpu_device_count() first); set '
      f'{CPU_DEVICES_ENV}=1 to keep one device without this warning.',
      stacklevel=2,
    )
  return None


def _requested_cpu_devices() -> int | None:
  """`JAXCLIENT_CPU_DEVICES` as a count; None when unset or empty."""
  value = os.environ.get(CPU_DEVICES_ENV, '').strip()
  if not value:
    return None
  if not value.isdigit() or int(value) < 1:
    raise ValueError(
      f'{CPU_DEVICES_ENV}: expected a positive int (CPU devices), '
      f'found {value!r}.'
    )
  return int(value)


def client_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis `'clients'` over `devices` (default: all devices,
  of all processes, in `jax.devices()` order)."""
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError('client_mesh: devices is empty; expected at least one.')
  return Mesh(np.asarray(devices), (CLIENTS_AXIS,))


def map_client_shards(fun, mesh: Mesh, in_specs, out_specs):
  """`shard_map(fun)` over `mesh`: each device runs `fun` on its own shard
  (of the client axis, for arguments with spec `PartitionSpec('clients')`).

  Replication is not checked: a client's training loop starts from
  replicated weights and ends with per-client ones.
  """
  try:
    from jax import shard_map

    unchecked = {'check_vma': False}
  except ImportError:  # jax < 0.6
    from jax.experimental.shard_map import (  # type: ignore[no-redef]
      shard_map,
    )

    unchecked = {'check_rep': False}
  return shard_map(  # type: ignore[call-overload]
    fun, mesh=mesh, in_specs=in_specs, out_specs=out_specs, **unchecked
  )


def clients_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays split along their leading (client) axis over the mesh."""
  return NamedSharding(mesh, PartitionSpec(CLIENTS_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """A full copy of the array on every device of the mesh."""
  return NamedSharding(mesh, PartitionSpec())


def padded_size(num_clients: int, mesh: Mesh) -> int:
  """The smallest multiple of the mesh size that holds `num_clients`."""
  size = mesh.devices.size
  return -(-num_clients // size) * size


def pad_clients(tree: PyTree, size: int) -> PyTree:
  """Pads every leaf's leading axis with zeros up to `size` (host numpy,
  aligned as `jaxclient.data.aligned_zeros`, so a CPU device reads it in
  place).

  Zero padding is inert client data: its `mask` is False everywhere.
  """

  def pad(leaf):
    leaf = np.asarray(leaf)
    if leaf.shape[0] > size:
      raise ValueError(
        f'pad_clients: leading axis {leaf.shape[0]} exceeds '
        f'the padded size {size}.'
      )
    if leaf.shape[0] == size:
      return leaf
    padded = data_lib.aligned_zeros((size,) + leaf.shape[1:], leaf.dtype)
    padded[: leaf.shape[0]] = leaf
    return padded

  return jax.tree.map(pad, tree)


def _put(tree: PyTree, sharding: NamedSharding) -> PyTree:
  leaves, structure = jax.tree.flatten(tree)
  moving = []
  for i, leaf in enumerate(leaves):
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
      continue
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      raise ValueError(
        'put: a global array spread over several processes '
        f'must already have the sharding {sharding.spec}; '
        f'found {leaf.sharding}.'
      )
    moving.append(i)
  hosts = [np.asarray(leaves[i]) for i in moving]
  if jax.process_count() == 1:  # Every shard is local: one transfer call.
    placed = jax.device_put(hosts, sharding)
  else:
    placed = [
      jax.make_array_from_callback(host.shape, sharding, host.__getitem__)
      for host in hosts
    ]
  for i, array in zip(moving, placed, strict=True):
    leaves[i] = array
  return jax.tree.unflatten(structure, leaves)


def put_clients(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places each leaf on the mesh split along its leading (client) axis.

  Every process passes the same full host array and transfers only the
  shards of its own devices. The leading axis must divide evenly over the
  mesh (see `pad_clients` and `padded_size`).
  """
  size = mesh.devices.size
  for leaf in jax.tree.leaves(tree):
    if np.ndim(leaf) < 1 or np.shape(leaf)[0] % size:
      raise ValueError(
        f'put_clients: the leading (client) axis must be a multiple of the '
        f'{size} devices of the mesh, found shape {np.shape(leaf)}.'
      )
  return _put(tree, clients_sharding(mesh))


def put_replicated(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places a full copy of each leaf on every device of the mesh."""
  return _put(tree, replicated_sharding(mesh))


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  **kwargs,
) -> None:
  """`jax.distributed.initialize`, with cross-process CPU collectives on.

  On clusters that JAX detects (SLURM, Open MPI, TPU pods, Kubernetes) every
  argument may be left out. On CPU, JAX needs a collectives implementation
  to run one program over several processes; this selects Gloo (when the
  option exists) before initializing. Call it first, before any other JAX
  call, in every process. Extra keyword arguments go to
  `jax.distributed.initialize` unchanged (e.g. `local_device_ids`).
  """
  # A jax without the option has nothing to select.
  with contextlib.suppress(AttributeError):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
    **kwargs,
  )
