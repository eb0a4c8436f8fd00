"""Federated data sets that need no download, and a user's own `.npz`.

Every source returns a `FederatedData`: a list of per-client
`{'x': [n_i, ...], 'y': [n_i]}` numpy training sets (ready for
`jaxclient.data.pack`) and one centralized held-out `{'x', 'y'}` set.

* `digits`: the 8x8 handwritten digits bundled with scikit-learn
  (1,797 images, 10 classes), pixels scaled to [0, 1], `x` of shape
  `[8, 8, 1]`; a held-out fraction is set aside, the rest is split over
  clients with a Dirichlet(alpha) label skew (small alpha: each client sees
  few classes; large alpha: near IID).
* `synthetic`: FedProx's Synthetic(alpha, beta) (Li et al., 2020): client k
  draws `u_k ~ N(0, alpha)`, `B_k ~ N(0, beta)`, a softmax model
  `W_k, b_k ~ N(u_k, 1)`, a feature mean `v_k ~ N(B_k, 1)`, features
  `x ~ N(v_k, diag(j^-1.2))` and labels `y = argmax(W_k x + b_k)`; client
  sizes follow FedProx's power law (lognormal(4, 2) + 50). A fraction of
  each client's examples is held out.
* `load_npz`: a user's file in the `.npz` layout below.

The `.npz` layout (write it with `save_npz` or `numpy.savez`):

* `x_<client>` and `y_<client>` for every client, one pair per client, in
  the order the clients should be numbered: features `[n, ...]` (any
  numeric dtype, finite, the same example shape for all clients) and
  integer class labels `[n]` (0 <= y < number of classes <= `MAX_CLASSES`,
  10,000);
* optionally `test_x` and `test_y`, the held-out set, in the same shapes.

`<client>` is any name; nothing else may be in the file.

Labels are checked on the host, before anything trains: a label outside
`0..K-1` (K the number of classes, at most `MAX_CLASSES`) is a `DataError`
naming the file, the key and the range found, never a model with 2**31
outputs or a silently non-finite client. `validate` checks any
`FederatedData` the same way.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from jaxclient import _validation

__all__ = [
  'MAX_CLASSES',
  'DataError',
  'FederatedData',
  'digits',
  'dirichlet_label_skew',
  'load_npz',
  'save_npz',
  'synthetic',
  'validate',
]

#: The most classes a data set may have: a larger label is taken for a
#: mistake (a sentinel, an id), not a class of a model's output layer.
MAX_CLASSES = 10_000


class DataError(ValueError):
  """A data source's arguments or a user's data file are invalid."""


class FederatedData(NamedTuple):
  """Per-client training sets and a centralized held-out set.

  Attributes:
    train: per-client `{'x': [n_i, ...] float32, 'y': [n_i] int32}`.
    test: `{'x': [m, ...] float32, 'y': [m] int32}`; `m` may be 0.
    num_classes: labels are in `[0, num_classes)`.
  """

  train: list[dict[str, np.ndarray]]
  test: dict[str, np.ndarray]
  num_classes: int


def _check_int(name, value, minimum=1) -> int:
  """`_validation.check_int`, raising its message as a `DataError`."""
  try:
    return _validation.check_int(name, value, minimum=minimum)
  except ValueError as e:
    raise DataError(str(e)) from None


def _check_num_classes(name, value) -> int:
  if not _validation.is_int(value) or not 2 <= value <= MAX_CLASSES:
    raise DataError(
      f'{name}: expected an int in 2..{MAX_CLASSES}, found {value!r}.'
    )
  return int(value)


def _check_label_range(name, labels, num_classes=None) -> None:
  """A `DataError` naming `name`, the range found and the range expected
  when an integer label is outside `0..num_classes-1` (`num_classes` None:
  `0..MAX_CLASSES-1`). Checked before any cast, so nothing wraps around."""
  if not labels.size:
    return
  low, high = int(labels.min()), int(labels.max())
  if num_classes is None:
    bound = MAX_CLASSES
    expected = (
      f'0..K-1 with K <= {MAX_CLASSES} classes (jaxclient.datasets.MAX_CLASSES)'
    )
  else:
    bound = num_classes
    expected = f'0..{num_classes - 1} (num_classes={num_classes})'
  if low < 0:
    condition, found = '>= 0', low
  elif high >= bound:
    condition, found = f'< {bound}', high
  else:
    return
  raise DataError(
    f'{name}: expected labels {condition}, found {found}; class labels '
    f'must be in {expected}, found {low}..{high}.'
  )


def _check_finite(name, features) -> None:
  if np.issubdtype(features.dtype, np.inexact):
    bad = int(np.count_nonzero(~np.isfinite(features)))
    if bad:
      raise DataError(
        f'{name}: expected finite features, found {bad} NaN or infinite '
        'value(s).'
      )


def validate(data: FederatedData, source: str = 'data') -> FederatedData:
  """Checks any source's data on the host before it trains: `num_classes`
  in 2..`MAX_CLASSES`, integer labels in `0..num_classes-1`, finite
  features.

  Returns:
    `data`, unchanged.

  Raises:
    DataError: naming `source`, the client (or the held-out set), the
      key, and the range found and expected.
  """
  _check_num_classes(f'{source}: num_classes', data.num_classes)
  named = [(f'train client {i}', c) for i, c in enumerate(data.train)]
  for name, d in named + [('test', data.test)]:
    y = np.asarray(d['y'])
    if not np.issubdtype(y.dtype, np.integer):
      raise DataError(
        f'{source}: {name} y: expected integer class labels, found {y.dtype}.'
      )
    _check_label_range(f'{source}: {name} y', y, data.num_classes)
    _check_finite(f'{source}: {name} x', np.asarray(d['x']))
  return data


def _check_fraction(name, value):
  if not 0.0 <= value < 1.0:
    raise DataError(f'{name}: expected a fraction in [0, 1), found {value!r}.')


def dirichlet_label_skew(
  labels: np.ndarray,
  num_clients: int,
  alpha: float,
  rng: np.random.Generator,
  min_examples: int = 2,
  max_tries: int = 1000,
) -> list[np.ndarray]:
  """Splits example indices over clients with a Dirichlet(alpha) label skew.

  For each class, the proportions going to each client are drawn from
  `Dirichlet(alpha * ones(num_clients))` (Hsu et al., 2019). The draw is
  repeated until every client holds at least `min_examples` examples.

  Returns:
    One sorted index array per client; together a partition of the indices.
  """
  _check_int('num_clients', num_clients)
  if not alpha > 0:
    raise DataError(f'alpha: expected a positive float, found {alpha!r}.')
  if num_clients * min_examples > len(labels):
    raise DataError(
      f'num_clients: {num_clients} clients of at least {min_examples} '
      f'examples need {num_clients * min_examples} examples, found '
      f'{len(labels)}.'
    )
  for _ in range(max_tries):
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
      indices = rng.permutation(np.flatnonzero(labels == label))
      shares = rng.dirichlet(np.full(num_clients, alpha))
      cuts = (np.cumsum(shares)[:-1] * len(indices)).astype(int)
      for part, piece in zip(pieces, np.split(indices, cuts), strict=True):
        part.append(piece)
    parts = [np.sort(np.concatenate(p)) for p in pieces]
    if min(len(p) for p in parts) >= min_examples:
      return parts
  raise DataError(
    f'alpha: no Dirichlet({alpha}) split of {len(labels)} examples over '
    f'{num_clients} clients gave every client {min_examples} examples in '
    f'{max_tries} draws; use fewer clients or a larger alpha.'
  )


def digits(
  num_clients: int = 100,
  alpha: float = 0.5,
  test_fraction: float = 0.2,
  seed: int = 0,
) -> FederatedData:
  """scikit-learn's bundled handwritten digits, Dirichlet-split over clients.

  Args:
    num_clients: the number of clients.
    alpha: the Dirichlet concentration of the label skew.
    test_fraction: the share of images held out, a uniformly random
      subset (the held-out set is centralized, not split over clients).
    seed: the seed of the held-out split and the client split.
  """
  # Imported here: scikit-learn is an optional dependency (`[sim]`).
  # pylint: disable-next=g-import-not-at-top
  from sklearn import datasets as sk_datasets

  _check_fraction('test_fraction', test_fraction)
  bunch = sk_datasets.load_digits()
  x = (bunch.images / 16.0).astype(np.float32)[..., None]
  y = bunch.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(y))
  num_test = int(round(test_fraction * len(y)))
  test, train = order[:num_test], order[num_test:]
  parts = dirichlet_label_skew(y[train], num_clients, alpha, rng)
  return FederatedData(
    train=[{'x': x[train[p]], 'y': y[train[p]]} for p in parts],
    test={'x': x[test], 'y': y[test]},
    num_classes=10,
  )


def synthetic(
  num_clients: int = 30,
  alpha: float = 1.0,
  beta: float = 1.0,
  *,
  num_features: int = 60,
  num_classes: int = 10,
  test_fraction: float = 0.2,
  seed: int = 0,
) -> FederatedData:
  """FedProx's Synthetic(alpha, beta) data set (Li et al., 2020).

  Args:
    num_clients: the number of clients (FedProx used 30).
    alpha: how much the clients' models differ.
    beta: how much the clients' features differ.
    num_features: the feature dimension (60 in FedProx).
    num_classes: the number of classes (10 in FedProx).
    test_fraction: the share of each client's examples held out (pooled into
      the centralized held-out set).
    seed: the generator's seed.
  """
  _check_int('num_clients', num_clients)
  _check_int('num_features', num_features)
  _check_num_classes('num_classes', num_classes)
  _check_fraction('test_fraction', test_fraction)
  for name, value in (('alpha', alpha), ('beta', beta)):
    if not value >= 0:
      raise DataError(f'{name}: expected a float >= 0, found {value!r}.')
  rng = np.random.default_rng(seed)
  sizes = rng.lognormal(4, 2, num_clients).astype(int) + 50
  feature_scale = np.sqrt(np.arange(1, num_features + 1) ** -1.2)
  train, test_x, test_y = [], [], []
  for size in sizes:
    x, y = _synthetic_client(rng, size, alpha, beta, feature_scale, num_classes)
    num_test = int(round(test_fraction * size))
    train.append({'x': x[num_test:], 'y': y[num_test:]})
    test_x.append(x[:num_test])
    test_y.append(y[:num_test])
  return FederatedData(
    train=train,
    test={'x': np.concatenate(test_x), 'y': np.concatenate(test_y)},
    num_classes=num_classes,
  )


def _synthetic_client(rng, size, alpha, beta, feature_scale, num_classes):
  """One client of Synthetic(alpha, beta): `size` features and labels."""
  num_features = len(feature_scale)
  u = rng.normal(0.0, np.sqrt(alpha))
  b = rng.normal(0.0, np.sqrt(beta))
  kernel = rng.normal(u, 1.0, (num_features, num_classes))
  bias = rng.normal(u, 1.0, num_classes)
  mean = rng.normal(b, 1.0, num_features)
  x = (mean + feature_scale * rng.normal(size=(size, num_features))).astype(
    np.float32
  )
  return x, np.argmax(x @ kernel + bias, axis=1).astype(np.int32)


def save_npz(
  path: str | os.PathLike,
  train: Sequence[Mapping[str, np.ndarray]],
  test: Mapping[str, np.ndarray] | None = None,
) -> None:
  """Writes per-client data in the `.npz` layout that `load_npz` reads;
  clients are named by their index."""
  arrays = {}
  for i, client in enumerate(train):
    arrays[f'x_{i}'], arrays[f'y_{i}'] = client['x'], client['y']
  if test is not None:
    arrays['test_x'], arrays['test_y'] = test['x'], test['y']
  np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub


def _as_features(name, array):
  if array.ndim < 1 or not (
    np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
  ):
    raise DataError(
      f'{name}: expected numeric features [n, ...], found '
      f'shape {array.shape} {array.dtype}.'
    )
  features = array.astype(np.float32)
  _check_finite(name, features)  # After the cast: float64 may overflow.
  return features


def _as_labels(name, array, num_examples, num_classes=None):
  if array.shape != (num_examples,) or not np.issubdtype(
    array.dtype, np.integer
  ):
    raise DataError(
      f'{name}: expected integer class labels of shape '
      f'({num_examples},), found shape {array.shape} '
      f'{array.dtype}.'
    )
  _check_label_range(name, array, num_classes)
  return array.astype(np.int32)


def load_npz(
  path: str | os.PathLike, num_classes: int | None = None
) -> FederatedData:
  """Reads a user's per-client data in the module's `.npz` layout.

  Args:
    path: the file.
    num_classes: K, when known: every label must be in `0..K-1`. Default:
      one more than the largest label (at least 2), which must be below
      `MAX_CLASSES`.

  Raises:
    DataError: naming the file and the offending key when the file is
      missing, unreadable, or not in the layout, a label is out of range
      (with the range found and expected) or a feature is not finite.
  """
  if num_classes is not None:
    num_classes = _check_num_classes('num_classes', num_classes)
  arrays = _read_npz(path)
  clients = _client_names(path, arrays)
  train = _train_sets(path, arrays, clients, num_classes)
  test = _test_set(path, arrays, train[0]['x'].shape[1:], num_classes)
  if sum(len(c['y']) for c in train) == 0:
    raise DataError(f'{path}: every client is empty; expected examples.')
  if num_classes is None:
    largest = int(max(d['y'].max() for d in train + [test] if len(d['y'])))
    num_classes = max(largest + 1, 2)
  return FederatedData(train, test, num_classes)


def _read_npz(path) -> dict[str, np.ndarray]:
  """Every array of the file at `path`, by key."""
  try:
    # mmap_mode: a large .npy is rejected without being read.
    loaded = np.load(path, mmap_mode='r', allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise DataError(
        f'{path}: not an .npz archive (a single .npy array); expected '
        'x_<client> and y_<client> arrays saved with numpy.savez.'
      )
    with loaded as npz:
      return {key: npz[key] for key in npz.files}
  except FileNotFoundError as e:
    raise DataError(f'{path}: no such data file.') from e
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f'{path}: not a readable .npz file ({e}).') from e


def _client_names(path, arrays) -> list[str]:
  """The `<client>` names, in the file's order, once the keys are checked
  against the layout."""
  test_keys = {'test_x', 'test_y'} & set(arrays)
  if len(test_keys) == 1:
    raise DataError(
      f'{path}: found {test_keys.pop()} without its pair; '
      "expected both 'test_x' and 'test_y' or neither."
    )
  clients = [k[2:] for k in arrays if k.startswith('x_')]
  expected = {f'{p}_{c}' for c in clients for p in 'xy'} | {'test_x', 'test_y'}
  unexpected = sorted(set(arrays) - expected)
  if unexpected:
    raise DataError(
      f'{path}: unexpected key(s) {unexpected}; expected x_<client> and '
      'y_<client> pairs and optionally test_x, test_y.'
    )
  missing = sorted(f'y_{c}' for c in clients if f'y_{c}' not in arrays)
  if missing or not clients:
    raise DataError(
      f'{path}: expected x_<client>, y_<client> pairs for at '
      f'least one client; missing {missing or ["x_<client>"]}.'
    )
  return clients


def _train_sets(
  path, arrays, clients, num_classes
) -> list[dict[str, np.ndarray]]:
  """Each client's `{'x', 'y'}`, checked; example shapes must agree."""
  train = []
  for c in clients:
    x = _as_features(f'{path}: x_{c}', arrays[f'x_{c}'])
    y = _as_labels(f'{path}: y_{c}', arrays[f'y_{c}'], len(x), num_classes)
    train.append({'x': x, 'y': y})
    if x.shape[1:] != train[0]['x'].shape[1:]:
      raise DataError(
        f'{path}: x_{c} has example shape {x.shape[1:]}, but x_{clients[0]}'
        f' has {train[0]["x"].shape[1:]}; all clients must agree.'
      )
  return train


def _test_set(
  path, arrays, example_shape, num_classes
) -> dict[str, np.ndarray]:
  """The held-out `{'x', 'y'}`: the file's, or an empty one."""
  if 'test_x' not in arrays:
    return {
      'x': np.zeros((0,) + example_shape, np.float32),
      'y': np.zeros((0,), np.int32),
    }
  x = _as_features(f'{path}: test_x', arrays['test_x'])
  if x.shape[1:] != example_shape:
    raise DataError(
      f'{path}: test_x has example shape {x.shape[1:]}, the '
      f'clients {example_shape}.'
    )
  y = _as_labels(f'{path}: test_y', arrays['test_y'], len(x), num_classes)
  return {'x': x, 'y': y}
