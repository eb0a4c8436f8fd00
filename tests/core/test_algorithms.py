"""Weighted FedAvg: one round equals the client work and a hand-computed
weighted mean; a plain numpy FedAvg loop; chunked equals unchunked; TFF's
metric nesting, rejection of non-finite means, and the errors."""

import jax
import numpy as np
import optax
import pytest

import jaxclient as jc
from jaxclient import algorithms
from tests.core import fedavg_scenario as scenario
from tests.core import reference


def _numpy_fedavg(num_rounds, weighting):
  """Plain numpy FedAvg: per-client loop, weighted mean, server SGDM."""
  params = {k: v.astype(np.float64) for k, v in
            scenario.initial_params().items()}
  server = reference.Sgdm(scenario.SERVER_LR, scenario.SERVER_MOMENTUM)
  server_state = {k: server.init(v) for k, v in params.items()}
  losses = []
  for round_num in range(num_rounds):
    data = scenario.cohort(round_num)
    updates, weights, loss_sum, examples = [], [], 0.0, 0
    for i in range(len(scenario.CLIENT_SIZES)):
      mask = data['mask'][i].reshape(-1)
      x = data['x'][i].reshape(-1, scenario.NUM_FEATURES)[mask]
      y = data['y'][i].reshape(-1)[mask]
      # pack already repeated and shuffled the epochs: train one pass.
      update, client_loss, n, _ = reference.train_client(
          params, x, y, scenario.BATCH_SIZE, 1,
          reference.Sgdm(scenario.CLIENT_LR), reference.softmax_loss_and_grads)
      updates.append(update)
      weights.append(float(n) if weighting == 'examples' else 1.0)
      loss_sum, examples = loss_sum + client_loss, examples + n
    mean = {k: sum(w * u[k] for w, u in zip(weights, updates)) / sum(weights)
            for k in params}
    for k in params:
      server_state[k], params[k] = server.step(server_state[k], params[k],
                                               mean[k])
    losses.append(loss_sum / examples)
  return params, losses


@pytest.fixture(scope='module')
def process():
  """`scenario.build()` (NUM_EXAMPLES weighting), shared: a process is
  stateless, and its programs compile once for the scenario's shapes."""
  return scenario.build()


@pytest.fixture(scope='module')
def uniform_process():
  """`scenario.build()` with UNIFORM client weighting, shared likewise."""
  return scenario.build(client_weighting=jc.ClientWeighting.UNIFORM)


@pytest.mark.parametrize('weighting', ['examples', 'uniform'])
def test_rounds_equal_a_numpy_fedavg_loop(process, uniform_process,
                                          weighting):
  trainable, metrics = scenario.run(
      process if weighting == 'examples' else uniform_process, num_rounds=3)
  expected, losses = _numpy_fedavg(3, weighting)
  for k in expected:
    np.testing.assert_allclose(trainable[k], expected[k], rtol=1e-5,
                               atol=1e-6)
  np.testing.assert_allclose([m['loss'] for m in metrics], losses, rtol=1e-5)


def client_work_then_weighted_mean(data):
  """The client work alone, then the weighted mean of its updates by hand.

  Returns (initial weights, client work output, {name: mean update}).
  """
  client_work = jc.build_model_delta_client_work(
      scenario.model(), jc.optimizers.build_sgdm(scenario.CLIENT_LR),
      jc.ClientWeighting.NUM_EXAMPLES)
  initial = scenario.model().initial_weights
  work = client_work.next(client_work.initialize(), initial, data)
  weights = np.asarray(work.result.update_weight)
  means = {k: np.tensordot(weights, np.asarray(u, np.float64), 1) /
              weights.sum() for k, u in work.result.update.items()}
  return initial, work, means


@pytest.fixture(scope='module')
def first_cohort_by_hand():
  """`client_work_then_weighted_mean(scenario.cohort(0))`, computed once."""
  return client_work_then_weighted_mean(scenario.cohort(0))


def test_round_is_client_work_then_weighted_mean_then_server_step(
    process, first_cohort_by_hand):
  data = scenario.cohort(0)
  initial, work, means = first_cohort_by_hand

  state, metrics = process.next(process.initialize(), data)

  np.testing.assert_array_equal(work.result.update_weight,
                                [10, 6, 14, 0, 4, 8, 12])
  for k, w0 in initial.trainable.items():
    # SGDM's first step: accumulator = mean, w <- w - lr * mean.
    np.testing.assert_allclose(
        state.global_model_weights.trainable[k],
        np.asarray(w0) - scenario.SERVER_LR * means[k], rtol=1e-6, atol=1e-7)
  train, expected = metrics['client_work']['train'], work.measurements['train']
  assert list(train) == list(expected)
  for k in expected:
    np.testing.assert_allclose(train[k], expected[k], rtol=1e-6)


def test_metrics_and_state_nest_like_tff(process):
  state = process.initialize()
  assert isinstance(state, algorithms.LearningAlgorithmState)
  assert state._fields == ('global_model_weights', 'distributor',
                           'client_work', 'aggregator', 'finalizer')
  assert dict(state.client_work) == {'learning_rate': 0.1}
  output = process.next(state, scenario.cohort(0))
  assert isinstance(output, algorithms.LearningProcessOutput)
  metrics = output.metrics
  assert list(metrics) == ['distributor', 'client_work', 'aggregator',
                           'finalizer']
  assert metrics['distributor'] == ()
  assert list(metrics['client_work']) == ['train']
  assert set(metrics['client_work']['train']) == {
      'accuracy', 'loss', 'num_examples', 'num_batches',
      'num_non_finite_clients'}
  assert int(metrics['client_work']['train']['num_examples']) == 54
  assert dict(metrics['aggregator']) == {'mean_value': (), 'mean_weight': ()}
  assert int(metrics['finalizer']['update_non_finite']) == 0


@pytest.fixture(scope='module')
def unchunked_run(process):
  return scenario.run(process, num_rounds=2)


@pytest.mark.parametrize('clients_per_chunk', [1, 3, 100])
def test_chunked_equals_unchunked(unchunked_run, clients_per_chunk):
  whole, whole_metrics = unchunked_run
  chunked, chunked_metrics = scenario.run(
      scenario.build(clients_per_chunk=clients_per_chunk), num_rounds=2)
  for k in whole:
    np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-6, atol=1e-7)
  for chunked_round, whole_round in zip(chunked_metrics, whole_metrics):
    assert set(chunked_round) == set(whole_round)
    for k in whole_round:
      np.testing.assert_allclose(chunked_round[k], whole_round[k], rtol=1e-6)


def test_a_small_memory_budget_chunks_the_round_same_numbers(unchunked_run,
                                                             process):
  data = scenario.cohort(0)
  need = jc.memory.client_bytes(process.client_work.training, data)
  # Two clients per device fit: 7 clients run in chunks of 2 per device.
  budget = 2 * (need.total + need.data)
  fitted = scenario.build(strategy=jc.cohort.Auto(memory_bytes=budget))
  cohort = fitted.prefetch(data)
  size = 2 * fitted.mesh.size
  assert cohort.chunks[0]['mask'].shape[0] == size
  assert len(cohort.chunks) == -(-7 // size)
  assert (f'the round trains in chunks of {size} clients: 2 per device fit '
          f'in a budget of {budget >> 20} MiB per device') in (
              fitted.plan(data).reason)
  assert 'chunks' not in process.plan(data).reason  # The default fits.
  trainable, metrics = scenario.run(fitted, num_rounds=2)
  whole, whole_metrics = unchunked_run
  for k in whole:
    np.testing.assert_allclose(trainable[k], whole[k], rtol=1e-6, atol=1e-7)
  for fitted_round, whole_round in zip(metrics, whole_metrics):
    for k in whole_round:
      np.testing.assert_allclose(fitted_round[k], whole_round[k], rtol=1e-6)


def _count_clients_then_finalize(metrics):
  """A custom aggregator: sum-then-finalize plus the number of clients, which
  a chunked round can only get right from every client's own metrics."""
  default = jc.metrics.sum_then_finalize(metrics)
  def aggregate(stacked):
    return {**default(stacked),
            'clients': stacked['num_examples'].shape[0]}
  return aggregate


def test_chunked_custom_aggregator_sees_every_client_once():
  results = []
  for chunk in (None, 4):
    process = scenario.build(metrics_aggregator=_count_clients_then_finalize,
                             clients_per_chunk=chunk)
    _, metrics = process.next(process.initialize(), scenario.cohort(0))
    results.append(jax.tree.map(np.asarray, metrics['client_work']['train']))
  for result in results:
    assert int(result['clients']) == 7
    assert int(result['num_examples']) == 54
    np.testing.assert_allclose(result['loss'], results[0]['loss'], rtol=1e-6)


def test_chunks_give_padding_clients_no_weight_under_uniform(uniform_process):
  whole, _ = scenario.run(uniform_process, num_rounds=1)
  chunked, _ = scenario.run(scenario.build(
      client_weighting=jc.ClientWeighting.UNIFORM, clients_per_chunk=4),
                            num_rounds=1)  # 7 clients -> one padding client.
  for k in whole:
    np.testing.assert_allclose(chunked[k], whole[k], rtol=1e-6, atol=1e-7)


def test_prefetched_cohort_equals_host_data():
  process = scenario.build(clients_per_chunk=3)
  state = process.initialize()
  cohort = process.prefetch(scenario.cohort(0))
  assert cohort.num_clients == 7
  assert len(cohort.chunks) == -(-7 // process.chunk_size)  # 3 a device.
  assert isinstance(cohort.chunks[0]['x'], jax.Array)
  assert isinstance(cohort.chunks[1]['x'], np.ndarray)
  a = process.next(state, cohort).state.global_model_weights
  b = process.next(state, scenario.cohort(0)).state.global_model_weights
  assert jax.tree.all(jax.tree.map(np.array_equal, a, b))


def test_zero_total_weight_is_rejected_like_tff(process):
  data = jc.data.pack([{'x': np.zeros((0, 3), np.float32),
                        'y': np.zeros((0,), np.int32)}] * 2, 2)
  state = process.initialize()
  new_state, metrics = process.next(state, data)
  assert int(metrics['finalizer']['update_non_finite']) == 1
  assert jax.tree.all(jax.tree.map(np.array_equal, new_state, state))


def test_model_weights_round_trip_and_errors(process):
  state = process.initialize()
  weights = process.get_model_weights(state)
  doubled = jax.tree.map(lambda w: 2 * np.asarray(w), weights)
  new_state = process.set_model_weights(state, doubled)
  np.testing.assert_array_equal(
      process.get_model_weights(new_state).trainable['kernel'],
      2 * np.asarray(weights.trainable['kernel']))
  bad = doubled._replace(trainable={**doubled.trainable,
                                    'bias': np.zeros(5, np.float32)})
  with pytest.raises(ValueError, match=r"weights.*\['bias'\].*expected shape "
                     r'\(4,\).*found shape \(5,\)'):
    process.set_model_weights(state, bad)


def test_bad_arguments_name_the_field():
  model = scenario.model()
  sgd = jc.optimizers.build_sgdm(0.1)
  with pytest.raises(TypeError, match='server_optimizer: expected an optax'):
    algorithms.build_weighted_fed_avg(model, sgd, server_optimizer='sgd')
  with pytest.raises(ValueError, match='clients_per_chunk: expected None or a '
                     'positive int, found 0'):
    algorithms.build_weighted_fed_avg(model, sgd, clients_per_chunk=0)
  process = algorithms.build_weighted_fed_avg(model, sgd)
  with pytest.raises(TypeError, match='state: expected a jaxclient.algorithms'
                     '.LearningAlgorithmState, found dict'):
    process.next({}, scenario.cohort(0))
  other = algorithms.build_weighted_fed_avg(model, sgd, optax.adam(0.1))
  with pytest.raises(ValueError, match='state: structure does not match'):
    process.next(other.initialize(), scenario.cohort(0))
  data = dict(scenario.cohort(0))
  data['x'] = data['x'][..., :2]
  with pytest.raises(ValueError, match=r"client_data\['x'\]: expected shape"):
    process.next(process.initialize(), data)


def test_default_server_optimizer_is_plain_fedavg(first_cohort_by_hand):
  plain = algorithms.build_weighted_fed_avg(
      scenario.model(), jc.optimizers.build_sgdm(scenario.CLIENT_LR))
  initial, _, means = first_cohort_by_hand
  state, _ = plain.next(plain.initialize(), scenario.cohort(0))
  for k, w0 in initial.trainable.items():
    np.testing.assert_allclose(state.global_model_weights.trainable[k],
                               np.asarray(w0) - means[k], rtol=1e-6, atol=1e-7)


def test_checkpoint_restore_resumes_to_the_same_state(tmp_path, process):
  state = process.initialize()
  for round_num in range(3):
    state = process.next(state, scenario.cohort(round_num)).state
  uninterrupted = jax.device_get(state)

  state = process.next(process.initialize(), scenario.cohort(0)).state
  path = tmp_path / 'ckpt.msgpack'
  jc.checkpoint.save(path, {'round': np.int32(1), 'state': state})
  saved = jc.checkpoint.restore(path, {'round': np.int32(0),
                                       'state': process.initialize()})
  assert int(saved['round']) == 1
  state = jc.sharding.put_replicated(saved['state'], process.mesh)
  for round_num in (1, 2):
    state = process.next(state, scenario.cohort(round_num)).state
  assert jax.tree.all(jax.tree.map(np.array_equal, jax.device_get(state),
                                   uninterrupted))

  with pytest.raises(ValueError, match=r"missing \[.*finalizer\[0\]\.count"):
    jc.checkpoint.restore(path, {'round': np.int32(0), 'state': algorithms
                                 .build_weighted_fed_avg(
                                     scenario.model(),
                                     jc.optimizers.build_sgdm(0.1),
                                     optax.adam(0.1)).initialize()})


_COMPILATIONS = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: _COMPILATIONS.append(event)
    if event == '/jax/core/compile/backend_compile_duration' else None)


def test_chunked_rounds_of_any_cohort_size_compile_once():
  compiles = _COMPILATIONS
  before = len(compiles)
  process = scenario.build(clients_per_chunk=3)
  state = process.next(process.initialize(), scenario.cohort(0)).state
  compiled_by_first_round = len(compiles)
  # At least the chunk program and the finish.
  assert compiled_by_first_round - before >= 2
  clients = scenario.client_datasets()
  for cohort in (clients[:2], clients[1:6], clients + clients):
    data = jc.data.pack(cohort, scenario.BATCH_SIZE, scenario.NUM_EPOCHS,
                        num_batches=int(scenario.cohort(0)['mask'].shape[1]))
    state = process.next(state, data).state
  assert len(compiles) == compiled_by_first_round


def test_dropout_keys_follow_the_client_not_the_chunk():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class DropoutRegression(nn.Module):

    @nn.compact
    def __call__(self, x, training):
      x = nn.Dropout(0.5, deterministic=not training)(x)
      return nn.Dense(scenario.NUM_CLASSES)(x)

  model = jc.models.from_flax(
      DropoutRegression(), np.zeros((1, scenario.NUM_FEATURES), np.float32),
      jc.losses.sparse_categorical_crossentropy, train_kwarg='training')
  rng = jax.random.PRNGKey(7)
  results = []
  for chunk in (None, 2):
    process = algorithms.build_weighted_fed_avg(
        model, jc.optimizers.build_sgdm(0.1), clients_per_chunk=chunk)
    state = process.initialize()
    results.append([process.next(state, scenario.cohort(0), rng=key)
                    .state.global_model_weights.trainable
                    for key in (rng, jax.random.PRNGKey(8))])
  (whole, other_key), (chunked, _) = results
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(whole),
                                                  jax.tree.leaves(other_key)))
