"""The host side of a federated round: chunks, transfers, and their order.

A round's cohort may be larger than what the devices should hold at once.
`prefetch` checks the round's host data, splits it into chunks of a fixed
number of clients (padded with inert all-padding clients to a multiple of
the mesh size, so that every chunk has one shape and compiles once) and
starts moving the first chunk to the devices. `run_chunks` feeds the chunks
to a compiled chunk function one by one, with at most two chunks on the
devices: the one training and the next, whose transfer overlaps it (JAX
dispatches asynchronously). What a chunk computes is the caller's
(`jaxclient.algorithms`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from jaxclient import _validation
from jaxclient import sharding as sharding_lib
from jaxclient.typing import ClientData, PyTree

__all__ = ['Cohort', 'prefetch', 'run_chunks']


class Cohort(NamedTuple):
  """A round's client data, split into chunks of one size.

  `chunks[0]` is already on the devices (split over the client axis); the
  others are host arrays, transferred one by one as the round reaches them.
  `chunking` says why the chunks have their size. Build with `prefetch` (or
  a process's `prefetch`).
  """

  num_clients: int
  chunks: tuple
  chunking: str = ''  # Why the chunks have their size.


def _put_chunk(chunk: ClientData, size: int, mesh: Mesh) -> ClientData:
  if all(
    isinstance(v, jax.Array) and v.shape[0] == size for v in chunk.values()
  ):
    return sharding_lib.put_clients(chunk, mesh)
  return sharding_lib.put_clients(sharding_lib.pad_clients(chunk, size), mesh)


def prefetch(
  input_spec: Mapping[str, jax.ShapeDtypeStruct],
  client_data: ClientData,
  mesh: Mesh,
  clients_per_chunk: int | None,
  chunking: str = '',
) -> Cohort:
  """Checks a round's data and starts moving its first chunk to `mesh`.

  Args:
    input_spec: the model's spec of one example (for the checks).
    client_data: `{'x': [C, B, N, ...], 'y': [C, B, N, ...], 'mask':
      [C, B, N]}`; every process passes the same full host data.
    mesh: the `'clients'` mesh the chunks are split over.
    clients_per_chunk: the chunk size (a multiple of the mesh size), or None
      for the whole cohort as one chunk.
    chunking: why that size (kept in the `Cohort`).
  """
  _validation.check_client_data(
    input_spec, client_data, ('clients', 'batches', 'batch_size')
  )
  client_data = {k: client_data[k] for k in _validation.DATA_KEYS}
  num_clients = int(np.shape(client_data['mask'])[0])
  size = clients_per_chunk or sharding_lib.padded_size(num_clients, mesh)
  starts = range(0, num_clients, size)
  if len(starts) == 1 and all(
    isinstance(v, jax.Array) for v in client_data.values()
  ):
    chunks: tuple = (client_data,)  # One chunk already on devices.
  else:
    host = {k: np.asarray(v) for k, v in client_data.items()}
    chunks = tuple(
      {k: v[s : s + size] for k, v in host.items()} for s in starts
    )
  return Cohort(
    num_clients, (_put_chunk(chunks[0], size, mesh),) + chunks[1:], chunking
  )


def run_chunks(
  train_chunk: Callable[[Any, ClientData, jax.Array], Any],
  initial: Any,
  cohort: Cohort,
  mesh: Mesh,
) -> tuple[Any, list[PyTree]]:
  """Folds `train_chunk(carry, chunk, client_ids) -> (carry, per_client)`
  over the cohort's chunks, transferring each chunk while the previous one
  trains. Client ids continue across chunks (chunk k holds ids k*size ...).

  Returns:
    The final carry and the list of each chunk's `per_client` output.
  """
  size = cohort.chunks[0]['mask'].shape[0]
  carry, chunk, outputs, previous = initial, cohort.chunks[0], [], None
  for index in range(len(cohort.chunks)):
    ids = sharding_lib.put_clients(
      np.arange(index * size, (index + 1) * size, dtype=np.int32), mesh
    )
    carry, per_client = train_chunk(carry, chunk, ids)
    outputs.append(per_client)
    if index + 1 < len(cohort.chunks):
      jax.block_until_ready(previous)
      chunk = _put_chunk(cohort.chunks[index + 1], size, mesh)
    previous = per_client
  return carry, outputs
