"""How much memory a client needs, and how much a device has to give.

The default plan (`jaxclient.cohort.Auto`) trains no more clients at once
than fit in a budget: `MEMORY_FRACTION` of what the device has free (on a
GPU or TPU from `device.memory_stats()`, on a CPU the host's available
memory), or the bytes a user gives. What one client needs is measured from
its traced program, without running or compiling it (`client_bytes`).

>>> import jaxclient as jc
>>> need = jc.memory.ClientBytes(data=100, training=50, update=10)
>>> need.at_once(1000), need.at_once(1000, resident=5)
(20, 9)
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxclient import client as client_lib
from jaxclient.typing import ClientData

__all__ = [
  'MEMORY_FRACTION',
  'ClientBytes',
  'available_bytes',
  'budget_bytes',
  'client_bytes',
  'shape_structs',
  'shapes_of',
  'tree_bytes',
]

# The share of a device's free memory the default plan may fill: the rest
# is headroom for XLA's own buffers and for what else the process holds.
MEMORY_FRACTION = 0.5


class ClientBytes(NamedTuple):
  """Bytes one client occupies while it trains.

  Attributes:
    data: its `x`, `y` and `mask`, every batch.
    training: its weights, optimizer state and metrics, and every value one
      batch step computes (an upper bound: all of them, as if none were
      freed or fused).
    update: its update and weight in the result.
  """

  data: int
  training: int
  update: int

  @property
  def total(self) -> int:
    """Everything one client holds while it trains."""
    return self.data + self.training + self.update

  def at_once(self, budget: int, resident: int = 0) -> int:
    """How many such clients can train at once in `budget` bytes (at least
    1) while `resident` clients' data and updates (theirs included) stay
    in memory throughout."""
    room = budget - resident * (self.data + self.update)
    return max(1, room // max(self.training, 1))


def _values_bytes(jaxpr: Any) -> int:
  """The bytes of every value a jaxpr computes, sub-jaxprs (a scan's body,
  a branch) counted once."""
  total = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      aval = var.aval
      if hasattr(aval, 'shape') and hasattr(aval, 'dtype'):
        total += int(np.prod(aval.shape)) * aval.dtype.itemsize
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          total += _values_bytes(inner)
  return total


def tree_bytes(tree: Any) -> int:
  """The bytes of every leaf of `tree` (arrays or `jax.ShapeDtypeStruct`s)."""
  return sum(
    int(np.prod(np.shape(leaf))) * jnp.result_type(leaf).itemsize
    for leaf in jax.tree.leaves(tree)
  )


def shapes_of(client_data: ClientData) -> tuple:
  """The shapes and dtypes of `client_data`'s `x`, `y` and `mask`, hashable:
  what a plan worked out once per data shape is cached by."""
  return tuple(
    (k, (tuple(np.shape(client_data[k])), np.dtype(client_data[k].dtype)))
    for k in ('x', 'y', 'mask')
  )


def shape_structs(shapes: tuple) -> dict[str, jax.ShapeDtypeStruct]:
  """`shapes_of`'s summary back as `jax.ShapeDtypeStruct`s, which
  `client_bytes` takes."""
  return {k: jax.ShapeDtypeStruct(shape, dtype) for k, (shape, dtype) in shapes}


def client_bytes(
  training: client_lib.LocalTraining, client_data: ClientData
) -> ClientBytes:
  """What one client of `client_data` (`[C, B, N, ...]` arrays, or
  `jax.ShapeDtypeStruct`s) needs, from its traced `client_update`."""
  one_client = {
    k: jax.ShapeDtypeStruct(client_data[k].shape[1:], client_data[k].dtype)
    for k in ('x', 'y', 'mask')
  }
  weights = training.model.initial_weights
  hparams = getattr(
    jax.eval_shape(training.optimizer.init, weights.trainable),
    'hyperparams',
    {},
  )
  key = jax.ShapeDtypeStruct((2,), np.uint32)  # For stochastic models.
  jaxpr = jax.make_jaxpr(functools.partial(client_lib.client_update, training))(
    dict(hparams), weights, one_client, key
  )
  return ClientBytes(
    data=tree_bytes(one_client),
    training=_values_bytes(jaxpr.jaxpr),
    update=tree_bytes(weights.trainable) + 4,
  )


def _host_available_bytes() -> int:
  """The host's available memory (Linux `MemAvailable`), else its free
  pages."""
  try:
    with open('/proc/meminfo', encoding='ascii') as meminfo:
      for line in meminfo:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def available_bytes(device: jax.Device | None = None) -> int:
  """Free memory of `device` (default: JAX's first): an accelerator's
  `memory_stats()` limit less what is in use; on a CPU, or where a device
  keeps no statistics, the host's available memory."""
  device = device or jax.devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and 'bytes_limit' in stats:
    return int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
  return _host_available_bytes()


def budget_bytes(
  memory_bytes: int | None, device: jax.Device | None = None
) -> int:
  """`memory_bytes` when given, else `MEMORY_FRACTION` of
  `available_bytes(device)`."""
  if memory_bytes is not None:
    return memory_bytes
  return int(MEMORY_FRACTION * available_bytes(device))
