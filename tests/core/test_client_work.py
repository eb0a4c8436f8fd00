"""Semantics of the client work beyond the plain loop: non-finite updates,
inert padding, weighting, aggregation, hparams, broadcasting, compilation."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxclient as jc
from tests.core import toy_models

X = np.array([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.5], [2.0, -1.0]], np.float32)
Y = np.array([[1.0], [2.0], [0.0], [3.0]], np.float32)


def build(optimizer=None, weighting=jc.ClientWeighting.NUM_EXAMPLES, **kwargs):
  return jc.build_model_delta_client_work(
      toy_models.linear_regression,
      optimizer or jc.optimizers.build_sgdm(0.1), weighting, **kwargs)


WEIGHTS = toy_models.linear_regression().initial_weights


@pytest.fixture(scope='module')
def sgd_process():
  """`build()`, shared by the tests that need no other optimizer or
  weighting: a process is stateless, and its program compiles once per
  shape of cohort."""
  return build()


def test_non_finite_update_is_zeroed_weighted_zero_and_metrics_reset(
    sgd_process):
  process = sgd_process
  bad_y = Y.copy()
  bad_y[1] = np.inf
  data = jc.data.pack([{'x': X, 'y': Y}, {'x': X, 'y': bad_y}], batch_size=2)

  out = process.next(process.initialize(), WEIGHTS, data)

  for leaf in jax.tree.leaves(out.result.update):
    np.testing.assert_array_equal(leaf[1], np.zeros_like(leaf[1]))
    assert np.all(np.isfinite(leaf[0])) and np.any(leaf[0] != 0)
  np.testing.assert_array_equal(out.result.update_weight, [4.0, 0.0])
  train = out.measurements['train']
  assert int(train['num_non_finite_clients']) == 1
  # Only the finite client's metrics are aggregated.
  assert int(train['num_examples']) == 4
  assert int(train['num_batches']) == 2
  alone = process.next(process.initialize(), WEIGHTS,
                       jc.data.pack([{'x': X, 'y': Y}], batch_size=2))
  np.testing.assert_allclose(train['loss'], alone.measurements['train']['loss'])


@pytest.mark.parametrize('weighting, expected', [
    (jc.ClientWeighting.NUM_EXAMPLES, 0.0), (jc.ClientWeighting.UNIFORM, 1.0)])
def test_empty_client_returns_zero_update(weighting, expected):
  process = build(weighting=weighting)
  empty = {'x': np.zeros((0, 2), np.float32), 'y': np.zeros((0, 1), np.float32)}
  out = process.next(process.initialize(), WEIGHTS,
                     jc.data.pack([empty, {'x': X, 'y': Y}], batch_size=3))
  for leaf in jax.tree.leaves(out.result.update):
    np.testing.assert_array_equal(leaf[0], 0.0)
  assert float(out.result.update_weight[0]) == expected


@pytest.mark.parametrize('optimizer', [
    optax.sgd(0.1, momentum=0.9), jc.optimizers.build_adam(0.1)])
def test_all_padding_batch_between_batches_is_inert(optimizer):
  """An all-padding batch mid-sequence must not decay momentum or step Adam."""
  process = build(optimizer)
  data = jc.data.pack([{'x': X, 'y': Y}], batch_size=2)  # [1, 2, 2]
  gap = {k: np.concatenate([v[:, :1], np.zeros_like(v[:, :1]), v[:, 1:]],
                           axis=1) for k, v in data.items()}
  assert gap['mask'].shape == (1, 3, 2) and not gap['mask'][0, 1].any()
  a = process.next(process.initialize(), WEIGHTS, data)
  b = process.next(process.initialize(), WEIGHTS, gap)
  for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(leaf_a, leaf_b)


def test_padded_examples_contribute_nothing_even_if_not_zero(sgd_process):
  process = sgd_process
  data = jc.data.pack([{'x': X[:3], 'y': Y[:3]}], batch_size=2)
  noisy = dict(data)
  noisy['x'] = np.where(data['mask'][..., None], data['x'], 1e6)
  noisy['y'] = np.where(data['mask'][..., None], data['y'], np.nan)
  a = process.next(process.initialize(), WEIGHTS, data)
  b = process.next(process.initialize(), WEIGHTS, noisy)
  for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(leaf_a, leaf_b)


def test_callable_weighting_receives_unfinalized_metrics():
  seen = {}

  def weighting(metrics):
    seen.update(metrics)
    return 2.0 * metrics['loss'][1] + 1.0  # loss state is (total, count).

  process = build(weighting=weighting)
  out = process.next(process.initialize(), WEIGHTS,
                     jc.data.pack([{'x': X, 'y': Y}], batch_size=3,
                                  num_epochs=2))
  assert float(out.result.update_weight[0]) == 17.0
  assert {'loss', 'num_examples', 'num_batches', 'mean_squared_error'} <= set(
      seen)


def test_custom_metrics_aggregator_replaces_sum_then_finalize(sgd_process):
  def doubling(metrics):
    default = jc.metrics.sum_then_finalize(metrics)
    return lambda stacked: jax.tree.map(lambda v: 2 * v, default(stacked))

  data = jc.data.pack([{'x': X, 'y': Y}, {'x': X[:1], 'y': Y[:1]}], 2)
  plain = sgd_process.next(sgd_process.initialize(), WEIGHTS, data)
  doubled = build(metrics_aggregator=doubling)
  out = doubled.next(doubled.initialize(), WEIGHTS, data)
  for key, value in plain.measurements['train'].items():
    np.testing.assert_allclose(out.measurements['train'][key], 2 * value,
                               err_msg=key)


def test_model_metric_finalizes_over_all_clients(sgd_process):
  clients = [{'x': X, 'y': Y}, {'x': X[:2], 'y': Y[:2] + 1}]
  out = sgd_process.next(sgd_process.initialize(), WEIGHTS,
                         jc.data.pack(clients, batch_size=4))
  # One batch per client from zero weights: predictions are all zero.
  all_y = np.concatenate([Y, Y[:2] + 1])
  np.testing.assert_allclose(out.measurements['train']['mean_squared_error'],
                             np.mean(all_y**2), rtol=1e-6)


def test_set_hparams_changes_training_and_get_hparams_reads_back(
    sgd_process):
  process = sgd_process
  state = process.set_hparams(process.initialize(), {'learning_rate': 0.2})
  assert float(process.get_hparams(state)['learning_rate']) == pytest.approx(
      0.2)
  data = jc.data.pack([{'x': X[:1], 'y': Y[:1]}], batch_size=1)
  slow = process.next(process.initialize(), WEIGHTS, data)
  fast = process.next(state, WEIGHTS, data)
  np.testing.assert_allclose(fast.result.update['kernel'],
                             2 * slow.result.update['kernel'], rtol=1e-6)


def test_optimizer_without_injected_hparams_has_empty_state():
  process = build(optax.sgd(0.1))
  assert dict(process.initialize()) == {}
  out = process.next({}, WEIGHTS, jc.data.pack([{'x': X, 'y': Y}], 2))
  assert float(out.result.update_weight[0]) == 4.0


def test_per_client_weights_equal_separate_runs(sgd_process):
  process = sgd_process
  other = jax.tree.map(lambda v: v + 0.5, WEIGHTS)
  stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), WEIGHTS, other)
  clients = [{'x': X, 'y': Y}, {'x': X[1:], 'y': Y[1:]}]
  both = process.next(process.initialize(), stacked,
                      jc.data.pack(clients, batch_size=2))
  for i, weights in enumerate((WEIGHTS, other)):
    alone = process.next(process.initialize(), weights,
                         jc.data.pack([clients[i]], batch_size=2))
    for leaf_both, leaf_alone in zip(jax.tree.leaves(both.result),
                                     jax.tree.leaves(alone.result)):
      np.testing.assert_allclose(leaf_both[i], leaf_alone[0], rtol=1e-6)


def test_client_update_is_jittable_for_one_client(sgd_process):
  process = sgd_process
  data = jc.data.pack([{'x': X, 'y': Y}], batch_size=3)
  one = jax.tree.map(lambda v: v[0], data)
  result, metrics = jax.jit(process.client_update)(process.initialize(),
                                                   WEIGHTS, one)
  cohort = process.next(process.initialize(), WEIGHTS, data)
  np.testing.assert_array_equal(result.update['kernel'],
                                cohort.result.update['kernel'][0])
  assert int(metrics['num_examples']) == 4


def test_same_inputs_give_bitwise_identical_outputs():
  process = build(jc.optimizers.build_adam(0.1))
  data = jc.data.pack([{'x': X, 'y': Y}, {'x': X[:3], 'y': Y[:3]}], 2, 2)
  a = process.next(process.initialize(), WEIGHTS, data)
  b = process.next(process.initialize(), WEIGHTS, data)
  for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(leaf_a, leaf_b)


_COMPILATIONS = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: _COMPILATIONS.append(event)
    if event == '/jax/core/compile/backend_compile_duration' else None)


def test_second_next_with_same_shapes_does_not_recompile():
  process = build(jc.optimizers.build_adam(0.1))
  rng = np.random.default_rng(0)

  def cohort():
    return jc.data.pack([{'x': rng.normal(size=(5, 2)).astype(np.float32),
                          'y': rng.normal(size=(5, 1)).astype(np.float32)}
                         for _ in range(3)], batch_size=2)

  state = process.initialize()
  new_state = process.set_hparams(state, {'learning_rate': 0.3, 'beta_1': 0.5,
                                          'beta_2': 0.9, 'epsilon': 1e-3})
  shifted = jax.tree.map(lambda v: v + 1, WEIGHTS)
  cohorts = [cohort() for _ in range(3)]
  process.next(state, WEIGHTS, cohorts[0])
  before = len(_COMPILATIONS)
  process.next(new_state, WEIGHTS, cohorts[1])
  process.next(state, shifted, cohorts[2])
  assert len(_COMPILATIONS) == before
  process.next(state, WEIGHTS,
               jc.data.pack([{'x': X, 'y': Y}], batch_size=2))
  assert len(_COMPILATIONS) > before  # A new shape compiles: the count works.


def test_dropout_randomness_is_per_client_and_independent_of_cohort():
  def model_fn():
    def predict(weights, x, training, rng=None):
      keep = jax.random.bernoulli(rng, 0.5, x.shape)
      return (jnp.where(keep, x, 0.0) @ weights.trainable['kernel'] +
              weights.trainable['bias'])
    return jc.FunctionalModel(WEIGHTS, predict, jc.losses.mean_squared_error,
                              input_spec={'x': jax.ShapeDtypeStruct(
                                  (2,), jnp.float32)})

  process = jc.build_model_delta_client_work(
      model_fn, jc.optimizers.build_sgdm(0.1), jc.ClientWeighting.UNIFORM)
  key = jax.random.PRNGKey(7)
  a = {'x': X, 'y': Y}
  b = {'x': X[::-1].copy(), 'y': Y[::-1].copy()}
  pair = process.next(process.initialize(), WEIGHTS,
                      jc.data.pack([a, b], batch_size=2), rng=key)
  other_pair = process.next(process.initialize(), WEIGHTS,
                            jc.data.pack([a, {'x': X[:1], 'y': Y[:1]}], 2),
                            rng=key)
  np.testing.assert_array_equal(pair.result.update['kernel'][0],
                                other_pair.result.update['kernel'][0])
  # The same key trains client 0 the same way; another key differently.
  changed = process.next(process.initialize(), WEIGHTS,
                         jc.data.pack([a, b], batch_size=2),
                         rng=jax.random.PRNGKey(8))
  assert not np.array_equal(pair.result.update['kernel'][0],
                            changed.result.update['kernel'][0])


def _six_clients():
  rng = np.random.default_rng(3)
  clients = [{'x': rng.normal(size=(n, 2)).astype(np.float32),
              'y': rng.normal(size=(n, 1)).astype(np.float32)}
             for n in (5, 0, 3, 8, 1, 4)]
  return jc.data.pack(clients, batch_size=2)


def _shared_and_per_client_weights():
  return WEIGHTS, jax.tree.map(
      lambda v: jnp.stack([v + 0.1 * i for i in range(6)]), WEIGHTS)


@pytest.fixture(scope='module')
def all_at_once_outputs():
  """AllAtOnce's outputs on `_six_clients()`, shared and per-client weights:
  the reference every Blocked schedule is compared with (computed once)."""
  whole = build(jc.optimizers.build_adam(0.1), strategy=jc.cohort.AllAtOnce())
  return [jax.device_get(whole.next(whole.initialize(), weights,
                                    _six_clients(), rng=jax.random.PRNGKey(0)))
          for weights in _shared_and_per_client_weights()]


@pytest.mark.parametrize('clients_per_block, used', [(1, 1), (2, 2), (4, 3),
                                                     (100, 6)])
def test_blocked_strategy_changes_nothing_but_the_schedule(
    all_at_once_outputs, clients_per_block, used):
  data = _six_clients()
  strategy = jc.cohort.Blocked(clients_per_block)
  blocked = build(jc.optimizers.build_adam(0.1), strategy=strategy)
  assert blocked.plan(data) == (strategy, 'given to the builder')
  assert strategy.block_size(6, devices=1) == used
  for weights, a in zip(_shared_and_per_client_weights(), all_at_once_outputs):
    b = blocked.next(blocked.initialize(), weights, data,
                     rng=jax.random.PRNGKey(0))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(leaf_a, leaf_b, rtol=1e-6, atol=1e-7)


def test_strategies_are_checked():
  with pytest.raises(ValueError, match=re.escape(
      'Blocked.clients_per_block: expected a positive int, found 0.')):
    jc.cohort.Blocked(0)
  with pytest.raises(TypeError, match=re.escape(
      'strategy: expected None or a jaxclient.cohort strategy (Auto, '
      'AllAtOnce, Blocked, ShardedOverClients), found int.')):
    build(strategy=4)
  with pytest.raises(ValueError, match="ShardedOverClients.mesh: expected one "
                     "axis named 'clients'"):
    jc.cohort.ShardedOverClients(jax.sharding.Mesh(jax.devices(), ('x',)))
