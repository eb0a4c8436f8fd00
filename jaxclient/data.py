"""Packing ragged per-client data into padded arrays that `vmap` can batch.

`pack` turns a list of per-client `{'x': [n_i, ...], 'y': [n_i, ...]}` into

    {'x': [C, B, N, ...], 'y': [C, B, N, ...], 'mask': [C, B, N] (bool)}

with C clients, B batches and a batch size N. With shuffling off, client i's
batches hold exactly the examples, in the order, that
`tf.data.Dataset.from_tensor_slices(d).repeat(num_epochs).batch(N)` yields;
the short last batch and the missing batches are padded with zeros and
`mask == False`, which the client work treats as inert.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from jaxclient import _validation

_CANONICAL_DTYPES = {np.dtype(np.float64): np.dtype(np.float32),
                     np.dtype(np.int64): np.dtype(np.int32),
                     np.dtype(np.uint64): np.dtype(np.uint32)}


class TruncationWarning(UserWarning):
  """`pack` dropped examples because `num_batches` was too small."""


def _canonical(array: np.ndarray) -> np.ndarray:
  # JAX computes in 32 bits unless x64 is enabled; convert once, here.
  return array.astype(_CANONICAL_DTYPES.get(array.dtype, array.dtype),
                      copy=False)


def _check_clients(client_datasets) -> list[dict[str, np.ndarray]]:
  if isinstance(client_datasets, Mapping) or not isinstance(
      client_datasets, Sequence):
    raise TypeError('pack: client_datasets must be a list of per-client '
                    "{'x': [n, ...], 'y': [n, ...]} mappings, found "
                    f'{type(client_datasets).__name__}.')
  if not client_datasets:
    raise ValueError('pack: client_datasets is empty; expected at least one '
                     'client.')
  clients = []
  for i, data in enumerate(client_datasets):
    if not isinstance(data, Mapping) or set(data) != {'x', 'y'}:
      found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
      raise ValueError(f"pack: client_datasets[{i}] must have exactly keys "
                       f"'x' and 'y', found {found}.")
    x, y = (_canonical(np.asarray(data[k])) for k in ('x', 'y'))
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
      raise ValueError(
          f"pack: client_datasets[{i}]: 'x' and 'y' must share a leading "
          f'example axis, found x.shape={x.shape}, y.shape={y.shape}.')
    clients.append({'x': x, 'y': y})
  for key in ('x', 'y'):
    first = clients[0][key]
    for i, client in enumerate(clients[1:], start=1):
      a = client[key]
      if a.shape[1:] != first.shape[1:] or a.dtype != first.dtype:
        raise ValueError(
            f"pack: client_datasets[{i}]['{key}'] has example shape "
            f'{a.shape[1:]} and dtype {a.dtype}, but client_datasets[0] has '
            f'{first.shape[1:]} and {first.dtype}; all clients must agree.')
  return clients


def _epoch_order(n: int, num_epochs: int, shuffle: bool, seed: int,
                 client_index: int) -> np.ndarray:
  """Indices of the examples in training order over all epochs."""
  if not shuffle:
    return np.tile(np.arange(n), num_epochs)
  return np.concatenate([
      np.random.default_rng([seed, client_index, epoch]).permutation(n)
      for epoch in range(num_epochs)
  ]) if num_epochs else np.zeros((0,), np.int64)


def pack(client_datasets: Sequence[Mapping[str, np.ndarray]],
         batch_size: int,
         num_epochs: int = 1,
         *,
         shuffle: bool = False,
         seed: int = 0,
         num_batches: int | None = None) -> dict[str, np.ndarray]:
  """Pads ragged client data to `{'x', 'y', 'mask'}` arrays `[C, B, N, ...]`.

  Args:
    client_datasets: per-client mappings `{'x': [n_i, ...], 'y': [n_i, ...]}`
      (numpy or array-likes); example shapes and dtypes must agree across
      clients. float64/int64 become float32/int32, as JAX computes them.
    batch_size: N, the examples per batch.
    num_epochs: passes over each client's data; batches run across epoch
      boundaries exactly as `repeat(num_epochs).batch(batch_size)`.
    shuffle: reshuffle each client's examples at every epoch, from
      `seed`, the client's index and the epoch (reproducible).
    seed: the shuffling seed.
    num_batches: B. Default: the most batches any client needs. A larger B
      pads with all-padding batches; a smaller one truncates and warns with a
      `TruncationWarning` naming the clients and examples dropped.

  Returns:
    `{'x': [C, B, N, ...], 'y': [C, B, N, ...], 'mask': [C, B, N] bool}`
    numpy arrays; padded entries are zero with `mask == False`.
  """
  if not _validation.is_int(batch_size) or batch_size < 1:
    raise ValueError(f'pack: batch_size must be a positive int, found '
                     f'{batch_size!r}.')
  if not _validation.is_int(num_epochs) or num_epochs < 0:
    raise ValueError(f'pack: num_epochs must be a non-negative int, found '
                     f'{num_epochs!r}.')
  if num_batches is not None and (not _validation.is_int(num_batches) or
                                  num_batches < 1):
    raise ValueError(f'pack: num_batches must be None or a positive int, '
                     f'found {num_batches!r}.')
  batch_size, num_epochs = int(batch_size), int(num_epochs)
  num_batches = None if num_batches is None else int(num_batches)
  clients = _check_clients(client_datasets)
  needed = [math.ceil(c['x'].shape[0] * num_epochs / batch_size)
            for c in clients]
  total_batches = num_batches if num_batches is not None else max(
      max(needed), 1)
  capacity = total_batches * batch_size

  num_clients = len(clients)
  out = {
      key: np.zeros((num_clients, capacity) + clients[0][key].shape[1:],
                    clients[0][key].dtype) for key in ('x', 'y')
  }
  mask = np.zeros((num_clients, capacity), bool)
  truncated = {}
  for i, client in enumerate(clients):
    order = _epoch_order(client['x'].shape[0], num_epochs, shuffle, seed, i)
    if order.size > capacity:
      truncated[i] = order.size - capacity
      order = order[:capacity]
    for key in ('x', 'y'):
      out[key][i, :order.size] = client[key][order]
    mask[i, :order.size] = True
  if truncated:
    warnings.warn(
        f'pack: num_batches={num_batches} truncated {len(truncated)} '
        f'client(s); examples dropped per client index: {truncated}.',
        TruncationWarning, stacklevel=2)

  def batched(a):
    return a.reshape((num_clients, total_batches, batch_size) + a.shape[2:])
  return {'x': batched(out['x']), 'y': batched(out['y']),
          'mask': batched(mask)}
