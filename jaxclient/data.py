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

__all__ = [
  'HOST_ALIGNMENT',
  'PaddingWarning',
  'TruncationWarning',
  'aligned_zeros',
  'pack',
]

_CANONICAL_DTYPES = {
  np.dtype(np.float64): np.dtype(np.float32),
  np.dtype(np.int64): np.dtype(np.int32),
  np.dtype(np.uint64): np.dtype(np.uint32),
}


# `pack` warns when its arrays are at least this many times the examples
# they hold and take at least this many bytes.
_PADDING_WARNING_RATIO = 10
_PADDING_WARNING_BYTES = 64 * 2**20

# JAX on a CPU reads a host array in place, without a copy, when its data
# starts on a boundary of this many bytes; numpy only aligns to 16.
HOST_ALIGNMENT = 64


class TruncationWarning(UserWarning):
  """`pack` dropped examples because `num_batches` was too small."""


class PaddingWarning(UserWarning):
  """`pack`'s arrays are mostly padding: many times the examples they hold
  (a large `num_batches`, or one client much larger than the others)."""


def _canonical(array: np.ndarray) -> np.ndarray:
  # JAX computes in 32 bits unless x64 is enabled; convert once, here.
  return array.astype(
    _CANONICAL_DTYPES.get(array.dtype, array.dtype), copy=False
  )


def _check_array(i: int, key: str, value) -> np.ndarray:
  """Client `i`'s `value` of `key` as a canonical numeric numpy array."""
  where = f"pack: client_datasets[{i}]['{key}']"
  if isinstance(value, Mapping):
    raise ValueError(
      f'{where} is a mapping (keys {sorted(value, key=str)}); pack takes one '
      'array per key: stack or concatenate the features into one array.'
    )
  try:
    array = np.asarray(value)
  except ValueError as e:  # Ragged nested lists.
    raise ValueError(f'{where} is not an array ({e}).') from None
  if array.dtype.kind not in 'biufc':
    strings = ' (strings)' if array.dtype.kind in 'SU' else ''
    raise ValueError(
      f'{where}: expected numbers or bools, found dtype {array.dtype}{strings}.'
    )
  return _canonical(array)


def _check_client(i: int, data) -> dict[str, np.ndarray]:
  """Client `i`'s `{'x', 'y'}` as canonical numpy arrays, checked."""
  if not isinstance(data, Mapping) or set(data) != {'x', 'y'}:
    found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
    raise ValueError(
      f'pack: client_datasets[{i}] must have exactly keys '
      f"'x' and 'y', found {found}."
    )
  x, y = (_check_array(i, k, data[k]) for k in ('x', 'y'))
  if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
    raise ValueError(
      f"pack: client_datasets[{i}]: 'x' and 'y' must share a leading "
      f'example axis, found x.shape={x.shape}, y.shape={y.shape}.'
    )
  return {'x': x, 'y': y}


def _check_clients_agree(clients: list[dict[str, np.ndarray]]) -> None:
  """Every client has client 0's example shapes and dtypes."""
  for key in ('x', 'y'):
    first = clients[0][key]
    for i, client in enumerate(clients[1:], start=1):
      a = client[key]
      if a.shape[1:] != first.shape[1:] or a.dtype != first.dtype:
        raise ValueError(
          f"pack: client_datasets[{i}]['{key}'] has example shape "
          f'{a.shape[1:]} and dtype {a.dtype}, but client_datasets[0] has '
          f'{first.shape[1:]} and {first.dtype}; all clients must agree.'
        )


def _check_clients(client_datasets) -> list[dict[str, np.ndarray]]:
  if isinstance(client_datasets, Mapping) or not isinstance(
    client_datasets, Sequence
  ):
    raise TypeError(
      'pack: client_datasets must be a list of per-client '
      "{'x': [n, ...], 'y': [n, ...]} mappings, found "
      f'{type(client_datasets).__name__}.'
    )
  if not client_datasets:
    raise ValueError(
      'pack: client_datasets is empty; expected at least one client.'
    )
  clients = [_check_client(i, data) for i, data in enumerate(client_datasets)]
  _check_clients_agree(clients)
  return clients


def _epoch_order(
  n: int, num_epochs: int, shuffle: bool, seed: int, client_index: int
) -> np.ndarray:
  """Indices of the examples in training order over all epochs."""
  if not shuffle:
    return np.tile(np.arange(n), num_epochs)
  return (
    np.concatenate(
      [
        np.random.default_rng([seed, client_index, epoch]).permutation(n)
        for epoch in range(num_epochs)
      ]
    )
    if num_epochs
    else np.zeros((0,), np.int64)
  )


def aligned_zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
  """`np.zeros(shape, dtype)` whose data (if any) starts on a
  `HOST_ALIGNMENT`-byte boundary, so that `jax.device_put` (and `next` on
  host data) on a CPU device uses it in place instead of copying it.

  >>> import numpy as np
  >>> a = aligned_zeros((3, 5), np.float32)
  >>> a.ctypes.data % HOST_ALIGNMENT, a.shape, a.dtype, float(a.sum())
  (0, (3, 5), dtype('float32'), 0.0)
  """
  dtype = np.dtype(dtype)
  nbytes = math.prod(shape) * dtype.itemsize
  buffer = np.zeros(nbytes + HOST_ALIGNMENT, np.uint8)
  start = -buffer.ctypes.data % HOST_ALIGNMENT
  return buffer[start : start + nbytes].view(dtype).reshape(shape)


def _fill(
  clients: list[dict[str, np.ndarray]],
  num_epochs: int,
  shuffle: bool,
  seed: int,
  capacity: int,
):
  """`(arrays, mask, truncated)`: each client's examples in training order
  in `[C, capacity, ...]` zeros, its mask, and the examples dropped per
  client index (those past `capacity`)."""
  num_clients = len(clients)
  out = {
    key: aligned_zeros(
      (num_clients, capacity) + clients[0][key].shape[1:], clients[0][key].dtype
    )
    for key in ('x', 'y')
  }
  mask = aligned_zeros((num_clients, capacity), bool)
  truncated = {}
  for i, client in enumerate(clients):
    order = _epoch_order(client['x'].shape[0], num_epochs, shuffle, seed, i)
    if order.size > capacity:
      truncated[i] = order.size - capacity
      order = order[:capacity]
    for key in ('x', 'y'):
      out[key][i, : order.size] = client[key][order]
    mask[i, : order.size] = True
  return out, mask, truncated


def _batch_shape(
  clients: list[dict[str, np.ndarray]],
  batch_size: int,
  num_epochs: int,
  num_batches: int | None,
) -> tuple[int, int]:
  """`(N, B)`: N is `batch_size`, but never more than the most examples a
  batch can hold (the largest client's over its epochs; at least 1), so a
  huge `batch_size` pads nothing more than one that fits; B is
  `num_batches`, by default the most batches any client needs."""
  most = max(c['x'].shape[0] for c in clients) * num_epochs
  batch_size = max(1, min(batch_size, most))
  if num_batches is None:  # The most any client needs: nothing truncated.
    num_batches = max(
      [math.ceil(c['x'].shape[0] * num_epochs / batch_size) for c in clients]
      + [1]
    )
  return batch_size, num_batches


def _warn_if_mostly_padding(
  clients: list[dict[str, np.ndarray]], num_epochs: int, capacity: int
) -> None:
  """A `PaddingWarning`, before anything is allocated, when the arrays of
  `capacity` slots per client would be mostly padding and large."""
  slots = len(clients) * capacity
  examples = sum(c['x'].shape[0] for c in clients) * num_epochs
  per_slot = 1 + sum(
    clients[0][k].dtype.itemsize * math.prod(clients[0][k].shape[1:])
    for k in ('x', 'y')
  )
  if (
    slots >= _PADDING_WARNING_RATIO * max(examples, 1)
    and slots * per_slot >= _PADDING_WARNING_BYTES
  ):
    warnings.warn(
      f'pack: the arrays hold {slots} example slots for {examples} examples '
      f'({slots / max(examples, 1):.0f}x, {slots * per_slot / 2**20:.0f} '
      'MiB), mostly padding; a smaller num_batches, or clients of more even '
      'sizes, would pack less.',
      PaddingWarning,
      stacklevel=3,
    )


def pack(
  client_datasets: Sequence[Mapping[str, np.ndarray]],
  batch_size: int,
  num_epochs: int = 1,
  *,
  shuffle: bool = False,
  seed: int = 0,
  num_batches: int | None = None,
) -> dict[str, np.ndarray]:
  """Pads ragged client data to `{'x', 'y', 'mask'}` arrays `[C, B, N, ...]`.

  Args:
    client_datasets: per-client mappings `{'x': [n_i, ...], 'y': [n_i, ...]}`
      (numpy or array-likes); example shapes and dtypes must agree across
      clients. float64/int64 become float32/int32, as JAX computes them.
    batch_size: N, the examples per batch; a larger one than the most
      examples a batch can hold (the largest client's over its epochs) is
      that many instead: the same batches, no wasted padding.
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
    numpy arrays, each starting on a 64-byte boundary (`aligned_zeros`: JAX
    on a CPU then trains on them without copying them); padded entries are
    zero with `mask == False`. Arrays that are mostly padding (10x the
    examples, and 64 MiB or more) come with a `PaddingWarning`.

  Raises:
    TypeError, ValueError: naming the client, key and shape at fault (a
      nested mapping or non-numeric values, such as strings, included), or
      the size argument that is not a positive (`num_epochs`: non-negative)
      int.

  Example:
    Two clients of 3 and 1 examples in batches of 2: client 0 fills one batch
    and half of the next, client 1 half of one batch.

    >>> import numpy as np
    >>> import jaxclient as jc
    >>> clients = [{'x': np.ones((3, 5)), 'y': np.arange(3)},
    ...            {'x': np.ones((1, 5)), 'y': np.arange(1)}]
    >>> packed = jc.data.pack(clients, batch_size=2)
    >>> for key, a in packed.items():
    ...   print(key, a.shape, a.dtype)
    x (2, 2, 2, 5) float32
    y (2, 2, 2) int32
    mask (2, 2, 2) bool
    >>> packed['mask']
    array([[[ True,  True],
            [ True, False]],
    <BLANKLINE>
           [[ True, False],
            [False, False]]])
    >>> packed['y'][0]
    array([[0, 1],
           [2, 0]], dtype=int32)
  """
  batch_size = _validation.check_int('pack: batch_size', batch_size)
  num_epochs = _validation.check_int('pack: num_epochs', num_epochs, minimum=0)
  num_batches = _validation.check_int(
    'pack: num_batches', num_batches, optional=True
  )
  clients = _check_clients(client_datasets)
  batch_size, num_batches = _batch_shape(
    clients, batch_size, num_epochs, num_batches
  )
  _warn_if_mostly_padding(clients, num_epochs, num_batches * batch_size)
  out, mask, truncated = _fill(
    clients, num_epochs, shuffle, seed, num_batches * batch_size
  )
  if truncated:
    warnings.warn(
      f'pack: num_batches={num_batches} truncated {len(truncated)} '
      f'client(s); examples dropped per client index: {truncated}.',
      TruncationWarning,
      stacklevel=2,
    )

  def batched(a):
    return a.reshape((len(clients), num_batches, batch_size) + a.shape[2:])

  return {'x': batched(out['x']), 'y': batched(out['y']), 'mask': batched(mask)}
