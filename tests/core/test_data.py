"""`jaxclient.data.pack`: batch boundaries as tf.data, padding, shuffling."""

import re
import time
import warnings

import numpy as np
import pytest

import jaxclient as jc


def clients_of_sizes(sizes, seed=0):
  rng = np.random.default_rng(seed)
  return [{'x': rng.normal(size=(n, 3)).astype(np.float32),
           'y': rng.integers(0, 5, size=(n,)).astype(np.int32)} for n in sizes]


def python_batches(client, batch_size, num_epochs):
  """`repeat(num_epochs).batch(batch_size)` written as a list loop."""
  rows = [(x, y) for _ in range(num_epochs)
          for x, y in zip(client['x'], client['y'])]
  return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]


def unpack(packed, client):
  """The batches of one client, padding removed."""
  batches = []
  for x, y, mask in zip(packed['x'][client], packed['y'][client],
                        packed['mask'][client]):
    if mask.any():
      assert mask[:mask.sum()].all() and not mask[mask.sum():].any()
      batches.append(list(zip(x[mask], y[mask])))
  return batches


@pytest.mark.parametrize('sizes, batch_size, num_epochs', [
    ([4], 3, 2), ([0, 1, 7, 10], 3, 1), ([5, 2], 4, 3), ([6], 6, 1)])
def test_batches_equal_repeat_then_batch(sizes, batch_size, num_epochs):
  clients = clients_of_sizes(sizes)
  packed = jc.data.pack(clients, batch_size, num_epochs)
  assert packed['mask'].dtype == bool
  assert packed['x'].shape[:3] == packed['mask'].shape
  assert packed['mask'].shape[2] == batch_size
  for i, client in enumerate(clients):
    expected = python_batches(client, batch_size, num_epochs)
    found = unpack(packed, i)
    assert len(found) == len(expected)
    for b_found, b_expected in zip(found, expected):
      np.testing.assert_array_equal([x for x, _ in b_found],
                                    [x for x, _ in b_expected])
      np.testing.assert_array_equal([y for _, y in b_found],
                                    [y for _, y in b_expected])
  # Padding is zero.
  assert not packed['x'][~packed['mask']].any()


def test_batches_equal_tf_data_where_tensorflow_is_installed():
  tf = pytest.importorskip('tensorflow')
  clients = clients_of_sizes([7, 3, 0])
  packed = jc.data.pack(clients, batch_size=3, num_epochs=2)
  for i, client in enumerate(clients):
    dataset = tf.data.Dataset.from_tensor_slices(client).repeat(2).batch(3)
    expected = [(b['x'].numpy(), b['y'].numpy()) for b in dataset]
    found = unpack(packed, i)
    assert len(found) == len(expected)
    for (ex, ey), batch in zip(expected, found):
      np.testing.assert_array_equal(ex, [x for x, _ in batch])
      np.testing.assert_array_equal(ey, [y for _, y in batch])


def test_shuffling_is_seeded_per_client_and_epoch():
  clients = clients_of_sizes([8, 8])
  a = jc.data.pack(clients, 4, num_epochs=2, shuffle=True, seed=1)
  b = jc.data.pack(clients, 4, num_epochs=2, shuffle=True, seed=1)
  c = jc.data.pack(clients, 4, num_epochs=2, shuffle=True, seed=2)
  np.testing.assert_array_equal(a['x'], b['x'])
  assert not np.array_equal(a['x'], c['x'])
  # Each epoch is a permutation of the client's examples.
  epoch_1 = a['y'][0, :2].reshape(-1)
  epoch_2 = a['y'][0, 2:].reshape(-1)
  np.testing.assert_array_equal(np.sort(epoch_1), np.sort(clients[0]['y']))
  np.testing.assert_array_equal(np.sort(epoch_2), np.sort(clients[0]['y']))
  assert not np.array_equal(epoch_1, epoch_2)
  # Client 1's order does not depend on client 0's.
  alone = jc.data.pack([clients[0], clients[1]], 4, 2, shuffle=True, seed=1)
  np.testing.assert_array_equal(alone['y'][1], a['y'][1])


def test_fixed_num_batches_pads_and_truncates_with_a_warning():
  clients = clients_of_sizes([2, 9])
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    padded = jc.data.pack(clients, 2, num_batches=6)
  assert padded['mask'].shape == (2, 6, 2)
  assert padded['mask'].sum() == 11
  with pytest.warns(jc.data.TruncationWarning,
                    match=re.escape('examples dropped per client index: '
                                    '{1: 3}')):
    truncated = jc.data.pack(clients, 2, num_batches=3)
  assert truncated['mask'].sum(axis=(1, 2)).tolist() == [2, 6]


def test_64_bit_inputs_become_32_bit():
  packed = jc.data.pack([{'x': np.ones((2, 1)), 'y': np.arange(2)}], 2)
  assert packed['x'].dtype == np.float32 and packed['y'].dtype == np.int32


@pytest.mark.parametrize('clients, message', [
    ({'x': np.ones(2), 'y': np.ones(2)}, 'must be a list of per-client'),
    ([], 'client_datasets is empty'),
    ([{'x': np.ones((2, 1))}], re.escape(
        "client_datasets[0] must have exactly keys 'x' and 'y', found ['x']")),
    ([{'x': np.ones((2, 1)), 'y': np.ones(3)}], re.escape(
        "client_datasets[0]: 'x' and 'y' must share a leading example axis, "
        'found x.shape=(2, 1), y.shape=(3,)')),
    ([{'x': np.ones((2, 1)), 'y': np.ones(2)},
      {'x': np.ones((2, 3)), 'y': np.ones(2)}], re.escape(
          "client_datasets[1]['x'] has example shape (3,) and dtype float32, "
          'but client_datasets[0] has (1,) and float32')),
])
def test_bad_client_datasets(clients, message):
  with pytest.raises((TypeError, ValueError), match=message):
    jc.data.pack(clients, 2)


@pytest.mark.parametrize('kwargs, message', [
    ({'batch_size': 0}, 'batch_size: expected a positive int, found 0.'),
    ({'batch_size': 2, 'num_epochs': -1},
     'num_epochs: expected a non-negative int, found -1.'),
    ({'batch_size': 2, 'num_batches': 0},
     'num_batches: expected None or a positive int, found 0.')])
def test_bad_sizes(kwargs, message):
  with pytest.raises(ValueError, match=re.escape(f'pack: {message}')):
    jc.data.pack(clients_of_sizes([3]), **kwargs)


def test_numpy_integers_are_accepted_and_bools_are_not():
  packed = jc.data.pack(clients_of_sizes([5]), np.int64(2), np.int32(2),
                        num_batches=np.int64(6))
  assert packed['mask'].shape == (1, 6, 2)
  with pytest.raises(ValueError, match=re.escape(
      'pack: batch_size: expected a positive int, found True.')):
    jc.data.pack(clients_of_sizes([5]), True)


def test_a_huge_batch_size_pads_no_more_than_a_batch_can_hold():
  clients = clients_of_sizes([13])
  start = time.perf_counter()
  huge = jc.data.pack(clients, batch_size=10**7)
  assert time.perf_counter() - start < 1.0
  tight = jc.data.pack(clients, batch_size=13)
  assert huge['mask'].shape == (1, 1, 13)
  for key in tight:
    np.testing.assert_array_equal(huge[key], tight[key], err_msg=key)
  # Over epochs and clients: the largest client's examples over its epochs.
  clients = clients_of_sizes([5, 8, 0])
  huge = jc.data.pack(clients, 10**9, num_epochs=2, shuffle=True, seed=3)
  tight = jc.data.pack(clients, 16, num_epochs=2, shuffle=True, seed=3)
  assert huge['mask'].shape == (3, 1, 16)
  for key in tight:
    np.testing.assert_array_equal(huge[key], tight[key], err_msg=key)
  # Also with a fixed num_batches: the extra batches are all padding.
  fixed = jc.data.pack(clients, 10**9, num_epochs=2, num_batches=3)
  assert fixed['mask'].shape == (3, 3, 16) and fixed['mask'].sum() == 26
  # Empty clients only: one slot per client, all padding.
  empty = jc.data.pack(clients_of_sizes([0, 0]), batch_size=10**7)
  assert empty['mask'].shape == (2, 1, 1) and not empty['mask'].any()


def test_a_huge_padding_ratio_warns():
  big = {'x': np.ones((1, 1024), np.float32), 'y': np.zeros(1, np.int32)}
  with pytest.warns(jc.data.PaddingWarning, match=re.escape(
      'pack: the arrays hold 20000 example slots for 2 examples')):
    packed = jc.data.pack([big, big], batch_size=1, num_batches=10_000)
  assert packed['mask'].shape == (2, 10_000, 1)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    jc.data.pack([big, big], batch_size=1, num_batches=10)


@pytest.mark.parametrize('client, message', [
    ({'x': {'a': np.ones((2, 3)), 'b': np.ones((2, 1))}, 'y': np.ones(2)},
     "pack: client_datasets[0]['x'] is a mapping (keys ['a', 'b']); pack "
     'takes one array per key'),
    ({'x': np.ones((2, 1)), 'y': {'label': np.ones(2)}},
     "pack: client_datasets[0]['y'] is a mapping (keys ['label'])"),
    ({'x': np.array([['a', 'b'], ['c', 'd']]), 'y': np.ones(2)},
     "pack: client_datasets[0]['x']: expected numbers or bools, found dtype "
     '<U1 (strings)'),
    ({'x': np.ones((2, 1)), 'y': [b'cat', b'dog']},
     "pack: client_datasets[0]['y']: expected numbers or bools, found dtype "
     '|S3 (strings)'),
    ({'x': np.array([np.ones(2), np.ones(3)], dtype=object), 'y': np.ones(2)},
     "pack: client_datasets[0]['x']: expected numbers or bools, found dtype "
     'object'),
])
def test_nested_and_string_features_are_named_errors(client, message):
  good = {'x': np.ones((2, 1)), 'y': np.ones(2)}
  with pytest.raises(ValueError, match=re.escape(message)):
    jc.data.pack([client], 2)
  with pytest.raises(ValueError, match=re.escape(
      message.replace('client_datasets[0]', 'client_datasets[1]'))):
    jc.data.pack([good, client], 2)


def test_packed_arrays_are_used_in_place_by_a_cpu_device():
  import jax  # pylint: disable=g-import-not-at-top
  packed = jc.data.pack(clients_of_sizes([37, 5, 12]), batch_size=4)
  for key, array in packed.items():
    assert array.ctypes.data % jc.data.HOST_ALIGNMENT == 0, key
    on_device = jax.device_put(array, jax.devices('cpu')[0])
    assert on_device.unsafe_buffer_pointer() == array.ctypes.data, key
    np.testing.assert_array_equal(on_device, array)


@pytest.mark.parametrize('shape,dtype', [
    ((0,), np.float32), ((3, 5), np.int8), ((7,), bool),
    ((2, 3, 4), np.float64), ((1, 1), np.uint16)])
def test_aligned_zeros_are_writable_contiguous_zeros(shape, dtype):
  array = jc.data.aligned_zeros(shape, dtype)
  assert array.size == 0 or array.ctypes.data % jc.data.HOST_ALIGNMENT == 0
  assert (array.shape, array.dtype) == (shape, np.dtype(dtype))
  assert array.flags.c_contiguous and array.flags.writeable
  assert not array.any()
  array[...] = 1
  assert array.all() or array.size == 0
