"""`backend='jax'` in `jaxclient_tff.execution_context()`, against TFF's own
`build_model_delta_client_work` on TFF's native runtime (the session
fixture's, outside the context): every TFF optimizer on ragged clients (an
empty one, a short last batch), both weightings, a non-finite client, and
FedAvg rounds composed with TFF's stock parts. The cohort runs as one
program (counted and logged) with the numbers of the client-by-client
path."""

import logging

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import jaxclient_tff
from test_tff_composition import _fed_avg as fed_avg
import twins

UNIFORM = tff.learning.ClientWeighting.UNIFORM


def _run_in_context(process, twin, clients, data=None, **context_kwargs):
  """`process.next` on the clients in the in-process context; returns the
  output and the context's stats."""
  data = twins.as_datasets(clients) if data is None else data
  with jaxclient_tff.execution_context(**context_kwargs) as context:
    out = process.next(process.initialize(),
                       [twin.initial_weights] * len(clients), data)
  return out, context.stats


def _largest_difference(a, b):
  """Largest |a - b| over two outputs of the same process."""
  a_leaves, b_leaves = tf.nest.flatten((a.result, a.measurements)), (
      tf.nest.flatten((b.result, b.measurements)))
  assert len(a_leaves) == len(b_leaves)
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)), initial=0))
             for x, y in zip(a_leaves, b_leaves))


def _run_native(process, twin, clients):
  return process.next(process.initialize(),
                      [twin.initial_weights] * len(clients),
                      twins.as_datasets(clients))


@pytest.mark.parametrize('optimizer_name', sorted(twins.OPTIMIZERS))
def test_every_tff_optimizer_equals_tffs_process_on_the_native_runtime(
    optimizer_name):
  twin = twins.mlp_twin()
  clients = twin.make_data(0)
  ours, stats = _run_in_context(
      twins.our_jax_process('mlp', optimizer_name), twin, clients)
  theirs = _run_native(twins.tff_process('mlp', optimizer_name), twin, clients)
  twins.assert_parity(f'backend=jax in-process mlp/{optimizer_name}', ours,
                      theirs)
  assert [float(r.update_weight) for r in ours.result] == [
      float(n) for n in twins.CLIENT_SIZES]
  assert stats['cohort_program_calls'] == 2  # Padding and client update.


def test_uniform_weighting_equals_tffs():
  twin = twins.linear_twin()
  clients = twin.make_data(0)
  ours, _ = _run_in_context(
      twins.our_jax_process('linear', 'sgd', UNIFORM), twin, clients)
  theirs = _run_native(twins.tff_process('linear', 'sgd', UNIFORM), twin,
                       clients)
  twins.assert_parity('backend=jax uniform', ours, theirs)
  assert [float(r.update_weight) for r in ours.result] == [1.0] * len(clients)


def test_non_finite_client_is_zeroed_and_excluded_as_in_tff():
  twin = twins.linear_twin()
  clients = twin.make_data(0, sizes=(5, 4))
  clients[1]['x'][0] = np.float32(1e38)  # Overflows the squared error.
  ours, _ = _run_in_context(twins.our_jax_process('linear', 'sgd'), twin,
                            clients)
  theirs = _run_native(twins.tff_process('linear', 'sgd'), twin, clients)
  for out in (ours, theirs):
    assert float(out.result[1].update_weight) == 0.0
    assert all(np.all(u == 0) for u in out.result[1].update)
    assert out.measurements['train']['num_examples'] == 5
  assert ours.measurements['train']['num_non_finite_clients'] == 1
  for a, b in zip(ours.result[0].update, theirs.result[0].update):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_cohort_program_equals_client_by_client_and_is_logged(caplog):
  twin = twins.mlp_twin()
  clients = twin.make_data(3)
  process = twins.our_jax_process('mlp', 'adam')
  with caplog.at_level(logging.INFO, logger='jaxclient_tff.in_process'):
    cohort, cohort_stats = _run_in_context(process, twin, clients)
  one_by_one, one_by_one_stats = _run_in_context(
      process, twin, clients, use_cohort_programs=False)
  assert cohort_stats['cohort_program_calls'] == 2
  assert one_by_one_stats['cohort_program_calls'] == 0
  assert sum('ran as one cohort program' in r.getMessage()
             for r in caplog.records) == 2
  largest = _largest_difference(cohort, one_by_one)
  print(f'\nPARITY cohort program vs client by client: {largest:.3g}')
  assert largest <= 1e-6


def test_lists_of_batches_equal_datasets():
  twin = twins.mlp_twin()
  clients = twin.make_data(0)
  as_lists = [[{'x': c['x'][i:i + twins.BATCH_SIZE],
                'y': c['y'][i:i + twins.BATCH_SIZE]}
               for i in range(0, len(c['x']), twins.BATCH_SIZE)]
              for c in clients]
  process = twins.our_jax_process('mlp', 'adam')
  from_datasets, _ = _run_in_context(process, twin, clients)
  for use_cohort_programs in (True, False):
    from_lists, _ = _run_in_context(process, twin, clients, as_lists,
                                    use_cohort_programs=use_cohort_programs)
    assert _largest_difference(from_lists, from_datasets) <= 1e-6


def test_batch_larger_than_padded_shape_names_the_client_and_sizes():
  twin = twins.mlp_twin()
  clients = twin.make_data(0)
  data = twins.as_datasets(clients[:2]) + twins.as_datasets(
      clients[2:], batch_size=twins.BATCH_SIZE + 1)
  with pytest.raises(ValueError, match=r'client 2, batch 0 has 4 examples.*'
                     r'at most 3'):
    _run_in_context(twins.our_jax_process('mlp', 'adam'), twin, clients, data)


def _train_rounds(process, rounds):
  """`process`'s state and train losses after one round per data set."""
  state, losses = process.initialize(), []
  for data in rounds:
    out = process.next(state, data)
    state = out.state
    losses.append(out.metrics['client_work']['train']['loss'])
  return state, losses


@pytest.mark.parametrize('twin_name,optimizer_name', [('linear', 'sgd'),
                                                      ('mlp', 'adam')])
def test_fed_avg_rounds_equal_tffs_composition_on_the_native_runtime(
    twin_name, optimizer_name):
  twin = twins.TWINS[twin_name]()
  ours = fed_avg(twins.our_jax_process(twin_name, optimizer_name), twin)
  theirs = fed_avg(twins.tff_process(twin_name, optimizer_name), twin)
  rounds = [twins.as_datasets(twin.make_data(seed=100 + r)) for r in range(3)]
  their_state, their_losses = _train_rounds(theirs, rounds)
  with jaxclient_tff.execution_context() as context:
    our_state, our_losses = _train_rounds(ours, rounds)
  assert context.stats['cohort_program_calls'] == 2 * len(rounds)
  np.testing.assert_allclose(our_losses, their_losses, atol=1e-5)
  for a, b in zip(ours.get_model_weights(our_state).trainable,
                  theirs.get_model_weights(their_state).trainable):
    np.testing.assert_allclose(a, b, atol=1e-5)
