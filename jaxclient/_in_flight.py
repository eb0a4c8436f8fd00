"""At most `MAX_IN_FLIGHT` of jaxclient's programs over several CPU devices
of one process are launched and unfinished at a time.

XLA:CPU in jaxlib 0.10.2 deadlocks, and after 60 s aborts the whole process
(`Termination timeout for all reduce ...`), once more than 32 programs that
communicate between CPU devices of one process are in flight: 33 calls of a
jitted `shard_map` with a `psum` over two CPU devices, issued without
waiting, are enough, whether or not each call takes the previous one's
output (jaxlib 0.4.30 runs the same loop). JAX dispatches asynchronously, so
a user's loop of 33 rounds that never reads a result would hang. jaxclient
therefore waits, before launching such a program, until fewer than
`MAX_IN_FLIGHT` of its own are unfinished; that still lets several rounds
queue up behind the one running. Programs on one device, or on
accelerators, are not held back.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable
from typing import TypeVar

import jax

__all__: list[str] = []

MAX_IN_FLIGHT = 8

_unfinished: collections.deque = collections.deque()
_lock = threading.Lock()

Fn = TypeVar('Fn', bound=Callable)


def _multi_cpu_marker(outputs) -> jax.Array | None:
  """The smallest output spread over every CPU device the outputs lie on
  (ready once the program has finished there), or None when the program
  ran on one device or not on a CPU."""
  leaves = [
    leaf for leaf in jax.tree.leaves(outputs) if isinstance(leaf, jax.Array)
  ]
  spread = max((len(leaf.sharding.device_set) for leaf in leaves), default=0)
  if spread < 2:
    return None
  widest = [leaf for leaf in leaves if len(leaf.sharding.device_set) == spread]
  devices: set[jax.Device] = widest[0].sharding.device_set
  if any(device.platform != 'cpu' for device in devices):
    return None
  return min(widest, key=lambda leaf: leaf.nbytes)


def _wait_for_room() -> None:
  while True:
    with _lock:
      if len(_unfinished) < MAX_IN_FLIGHT:
        return
      oldest = _unfinished.popleft()
    if not oldest.is_deleted():  # Donated to a later program: tracked too.
      oldest.block_until_ready()


def bounded(fn: Fn) -> Fn:
  """`fn` (a jitted program), launched only when fewer than `MAX_IN_FLIGHT`
  of the programs passed through here are unfinished on several CPU devices;
  its outputs are tracked when they lie on several CPU devices."""

  @functools.wraps(fn)
  def call(*args, **kwargs):
    _wait_for_room()
    outputs = fn(*args, **kwargs)
    marker = _multi_cpu_marker(outputs)
    if marker is not None:
      with _lock:
        _unfinished.append(marker)
    return outputs

  return call  # type: ignore[return-value]
