"""Embedded data sets and the user's `.npz`: contents, skew, errors."""

import numpy as np
import pytest

from jaxclient import datasets


def test_digits_partitions_sklearn_digits_with_label_skew():
  from sklearn.datasets import load_digits
  raw = load_digits()
  fed = datasets.digits(num_clients=20, alpha=0.1, seed=3)
  assert fed.num_classes == 10 and len(fed.train) == 20
  xs = np.concatenate([c['x'] for c in fed.train] + [fed.test['x']])
  assert xs.shape == (1797, 8, 8, 1) and xs.dtype == np.float32
  assert len(fed.test['y']) == round(0.2 * 1797)
  # Every image appears exactly once: compare sorted rows with sklearn's.
  rows = np.sort(xs.reshape(1797, -1) * 16.0, axis=0)
  np.testing.assert_allclose(rows, np.sort(raw.data, axis=0), atol=1e-5)
  ys = np.concatenate([c['y'] for c in fed.train] + [fed.test['y']])
  np.testing.assert_array_equal(np.bincount(ys), np.bincount(raw.target))
  assert min(len(c['y']) for c in fed.train) >= 2
  # alpha=0.1 is strongly non-IID: most clients see few classes.
  classes = [len(np.unique(c['y'])) for c in fed.train]
  assert np.median(classes) <= 4
  iid = datasets.digits(num_clients=20, alpha=1000.0, seed=3)
  assert min(len(np.unique(c['y'])) for c in iid.train) == 10


def test_digits_is_deterministic_in_the_seed():
  a, b = datasets.digits(10, seed=1), datasets.digits(10, seed=1)
  c = datasets.digits(10, seed=2)
  assert all(np.array_equal(x['y'], y['y']) for x, y in zip(a.train, b.train))
  assert not all(np.array_equal(x['y'], y['y'])
                 for x, y in zip(a.train, c.train))


def test_dirichlet_split_is_a_partition():
  labels = np.repeat(np.arange(5), 40)
  parts = datasets.dirichlet_label_skew(labels, 7, 0.5,
                                        np.random.default_rng(0))
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)),
                                np.arange(200))
  with pytest.raises(datasets.DataError, match='num_clients: 150 clients of '
                     'at least 2 examples need 300 examples, found 200'):
    datasets.dirichlet_label_skew(labels, 150, 0.5, np.random.default_rng(0))
  with pytest.raises(datasets.DataError, match='alpha: expected a positive '
                     'float, found 0'):
    datasets.dirichlet_label_skew(labels, 3, 0, np.random.default_rng(0))


def test_synthetic_follows_fedprox_generator():
  fed = datasets.synthetic(num_clients=5, alpha=0.5, beta=0.5, seed=0)
  assert len(fed.train) == 5 and fed.num_classes == 10
  assert all(c['x'].shape[1:] == (60,) and c['x'].dtype == np.float32
             for c in fed.train)
  sizes = [len(c['y']) for c in fed.train]
  # FedProx's sizes are lognormal(4, 2) + 50; 20% of each is held out.
  rng = np.random.default_rng(0)
  expected = rng.lognormal(4, 2, 5).astype(int) + 50
  np.testing.assert_array_equal(
      sizes, expected - np.round(0.2 * expected).astype(int))
  # Labels come from one client's softmax model: a linear classifier fits
  # each client's data perfectly.
  from sklearn.linear_model import LogisticRegression
  client = fed.train[int(np.argmax(sizes))]
  assert len(np.unique(client['y'])) >= 2
  fit = LogisticRegression(C=1e4, max_iter=5000).fit(client['x'], client['y'])
  assert fit.score(client['x'], client['y']) >= 0.97
  with pytest.raises(datasets.DataError, match='beta: expected a float >= 0'):
    datasets.synthetic(3, beta=-1.0)


def test_npz_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  train = [{'x': rng.normal(size=(n, 4)), 'y': rng.integers(0, 3, n)}
           for n in (3, 0, 5)]
  test = {'x': rng.normal(size=(2, 4)), 'y': np.array([0, 3])}
  datasets.save_npz(tmp_path / 'd.npz', train, test)
  fed = datasets.load_npz(tmp_path / 'd.npz')
  assert fed.num_classes == 4
  for got, want in zip(fed.train, train):
    np.testing.assert_allclose(got['x'], want['x'], rtol=1e-6)
    np.testing.assert_array_equal(got['y'], want['y'])
    assert got['x'].dtype == np.float32 and got['y'].dtype == np.int32
  np.testing.assert_array_equal(fed.test['y'], [0, 3])
  datasets.save_npz(tmp_path / 'no_test.npz', train)
  assert datasets.load_npz(tmp_path / 'no_test.npz').test['x'].shape == (0, 4)


@pytest.mark.parametrize('arrays,message', [
    ({'x_a': np.zeros((2, 3)), 'y_a': np.zeros(2, int), 'z': np.zeros(1)},
     r"unexpected key\(s\) \['z'\]"),
    ({'x_a': np.zeros((2, 3))}, r"missing \['y_a'\]"),
    ({'x_a': np.zeros((2, 3)), 'y_a': np.zeros(3, int)},
     r'y_a: expected integer class labels of shape \(2,\), found shape '
     r'\(3,\)'),
    ({'x_a': np.zeros((2, 3)), 'y_a': np.zeros(2)},
     r'y_a: expected integer class labels .* float64'),
    ({'x_a': np.zeros((2, 3)), 'y_a': np.zeros(2, int),
      'x_b': np.zeros((1, 4)), 'y_b': np.zeros(1, int)},
     r'x_b has example shape \(4,\), but x_a has \(3,\)'),
    ({'x_a': np.zeros((2, 3)), 'y_a': np.zeros(2, int),
      'test_x': np.zeros((1, 3))}, 'found test_x without its pair'),
    ({'x_a': np.zeros((2, 3)), 'y_a': -np.ones(2, int)},
     'y_a: expected labels >= 0, found -1'),
    ({'test_x': np.zeros((1, 3)), 'test_y': np.zeros(1, int)},
     'expected x_<client>, y_<client> pairs for at least one client'),
])
def test_npz_errors_name_the_key(tmp_path, arrays, message):
  path = tmp_path / 'bad.npz'
  np.savez(path, **arrays)
  with pytest.raises(datasets.DataError, match=message):
    datasets.load_npz(path)


def test_unreadable_files(tmp_path):
  with pytest.raises(datasets.DataError, match='no such data file'):
    datasets.load_npz(tmp_path / 'missing.npz')
  (tmp_path / 'junk.npz').write_text('not a zip')
  with pytest.raises(datasets.DataError, match='not a readable .npz file'):
    datasets.load_npz(tmp_path / 'junk.npz')


@pytest.mark.parametrize('labels, message', [
    (np.array([0, 2**31 - 1]), 'y_a: expected labels < 10000, found '
     '2147483647; class labels must be in 0..K-1 with K <= 10000 classes '
     r'\(jaxclient.datasets.MAX_CLASSES\), found 0..2147483647'),
    # Beyond int32: checked before the cast, so it cannot wrap around to 0.
    (np.array([1, 2**32]), 'y_a: expected labels < 10000, found 4294967296'),
    (np.array([3, -2, 1], np.int8), 'y_a: expected labels >= 0, found -2; '
     'class labels must be in 0..K-1 .* found -2..3'),
    (np.array([1, 2**64 - 1], np.uint64),
     'y_a: .* found 1..18446744073709551615'),
])
def test_npz_labels_out_of_range_are_an_error_in_seconds(
    tmp_path, labels, message):
  path = tmp_path / 'bad.npz'
  np.savez(path, x_a=np.zeros((len(labels), 3)), y_a=labels)
  with pytest.raises(datasets.DataError, match=f'{path}: {message}'):
    datasets.load_npz(path)


def test_npz_num_classes_bounds_the_labels(tmp_path):
  path = tmp_path / 'd.npz'
  np.savez(path, x_a=np.zeros((3, 2)), y_a=np.array([0, 1, 1]),
           test_x=np.zeros((2, 2)), test_y=np.array([0, 4]))
  assert datasets.load_npz(path).num_classes == 5
  assert datasets.load_npz(path, num_classes=7).num_classes == 7
  with pytest.raises(datasets.DataError, match=f'{path}: test_y: expected '
                     r'labels < 3, found 4; class labels must be in 0..2 '
                     r'\(num_classes=3\), found 0..4'):
    datasets.load_npz(path, num_classes=3)
  with pytest.raises(datasets.DataError, match='num_classes: expected an int '
                     r'in 2..10000, found 10001'):
    datasets.load_npz(path, num_classes=10_001)


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf])
def test_npz_non_finite_features_are_an_error(tmp_path, value):
  x = np.zeros((4, 3))
  x[2, 1] = value
  path = tmp_path / 'bad.npz'
  np.savez(path, x_a=np.zeros((2, 3)), y_a=np.zeros(2, int), x_b=x,
           y_b=np.zeros(4, int))
  with pytest.raises(datasets.DataError, match=f'{path}: x_b: expected finite '
                     r'features, found 1 NaN or infinite value\(s\)'):
    datasets.load_npz(path)


def test_npy_and_string_files_are_data_errors(tmp_path):
  np.save(tmp_path / 'a.npy', np.zeros((2, 3)))
  with pytest.raises(datasets.DataError, match='a.npy: not an .npz archive '
                     r'\(a single .npy array\)'):
    datasets.load_npz(tmp_path / 'a.npy')
  np.savez(tmp_path / 's.npz', x_a=np.array([['a', 'b']]), y_a=np.zeros(1, int))
  with pytest.raises(datasets.DataError, match='x_a: expected numeric '
                     'features'):
    datasets.load_npz(tmp_path / 's.npz')


def test_validate_checks_any_source():
  fed = datasets.digits(num_clients=5, seed=0)
  assert datasets.validate(fed, 'digits') is fed
  bad = fed.train[3]['y'].copy()
  bad[0] = 10
  train = list(fed.train)
  train[3] = {'x': fed.train[3]['x'], 'y': bad}
  with pytest.raises(datasets.DataError, match=r'digits: train client 3 y: '
                     r'expected labels < 10, found 10; class labels must be '
                     r'in 0..9 \(num_classes=10\), found \d..10'):
    datasets.validate(fed._replace(train=train), 'digits')
  with pytest.raises(datasets.DataError, match=r'data: num_classes: expected '
                     r'an int in 2..10000, found 20000'):
    datasets.validate(fed._replace(num_classes=20_000))
  nan_test = {'x': fed.test['x'] * np.nan, 'y': fed.test['y']}
  with pytest.raises(datasets.DataError, match='data: test x: expected finite'):
    datasets.validate(fed._replace(test=nan_test))
  with pytest.raises(datasets.DataError, match='num_classes: expected an int '
                     r'in 2..10000, found 10001'):
    datasets.synthetic(3, num_classes=10_001)
