"""Parity with TFF's own `build_model_delta_client_work` on a Keras twin:
the same type signatures, and the same numbers within 1e-5 for every TFF
optimizer, on clients of different sizes (an empty one, a short last
batch), on TFF's C++ runtime."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_federated as tff

import jaxclient as jc
import jaxclient_tff
from jaxclient_tff import conversion
import twins

TOLERANCE = 1e-5


@pytest.mark.parametrize('twin_name', sorted(twins.TWINS))
@pytest.mark.parametrize('optimizer_name', sorted(twins.OPTIMIZERS))
def test_type_signatures_equal_tffs(twin_name, optimizer_name):
  ours = twins.our_process(twin_name, optimizer_name)
  theirs = twins.tff_process(twin_name, optimizer_name)
  assert ours.initialize.type_signature == theirs.initialize.type_signature
  assert ours.get_hparams.type_signature == theirs.get_hparams.type_signature
  assert ours.set_hparams.type_signature == theirs.set_hparams.type_signature
  assert ours.next.type_signature.parameter == (
      theirs.next.type_signature.parameter)
  our_result, their_result = (ours.next.type_signature.result,
                              theirs.next.type_signature.result)
  assert our_result.state == their_result.state
  assert our_result.result == their_result.result
  # The one intentional difference: num_non_finite_clients (int64), as later
  # TFF versions report.
  their_train = their_result.measurements.member.train
  our_train = our_result.measurements.member.train
  their_fields = tff.structure.to_elements(their_train)
  our_fields = tff.structure.to_elements(our_train)
  assert our_fields == their_fields + [
      ('num_non_finite_clients', tff.TensorType(np.int64))]


@pytest.mark.parametrize('twin_name', sorted(twins.TWINS))
@pytest.mark.parametrize('optimizer_name', sorted(twins.OPTIMIZERS))
def test_numbers_equal_tffs(twin_name, optimizer_name):
  ours = twins.our_process(twin_name, optimizer_name)
  theirs = twins.tff_process(twin_name, optimizer_name)
  assert ours.initialize() == theirs.initialize()
  our_out, their_out = twins.run_both(ours, theirs, twins.TWINS[twin_name]())
  twins.assert_parity(f'{twin_name}/{optimizer_name}', our_out, their_out)
  # The test data is not trivial: clients trained, the empty one did not.
  weights = [float(r.update_weight) for r in our_out.result]
  assert weights == [float(n) for n in twins.CLIENT_SIZES]
  assert np.max(np.abs(our_out.result[0].update[0])) > 1e-3
  assert all(np.all(u == 0) for u in our_out.result[1].update)


def test_set_hparams_changes_the_numbers_as_tffs():
  def halve_learning_rate(process, state):
    hparams = process.get_hparams(state)
    hparams['learning_rate'] = np.float32(hparams['learning_rate'] / 2)
    return process.set_hparams(state, hparams)

  ours, theirs = twins.our_process('mlp', 'sgdm'), twins.tff_process(
      'mlp', 'sgdm')
  our_out, their_out = twins.run_both(ours, theirs, twins.mlp_twin(),
                                      state_fn=halve_learning_rate)
  assert our_out.state['learning_rate'] == pytest.approx(0.05)
  twins.assert_parity('set_hparams mlp/sgdm', our_out, their_out)
  default_out, _ = twins.run_both(ours, theirs, twins.mlp_twin())
  assert not np.allclose(default_out.result[0].update[0],
                         our_out.result[0].update[0])


@pytest.mark.parametrize('our_weighting', [
    tff.learning.ClientWeighting.UNIFORM, jc.ClientWeighting.UNIFORM])
def test_uniform_weighting_equals_tffs(our_weighting):
  ours = twins.our_process('linear', 'sgd', our_weighting)
  theirs = twins.tff_process('linear', 'sgd',
                             tff.learning.ClientWeighting.UNIFORM)
  our_out, their_out = twins.run_both(ours, theirs, twins.linear_twin())
  twins.assert_parity(f'uniform {our_weighting}', our_out, their_out)
  assert [float(r.update_weight) for r in our_out.result] == [1.0] * len(
      twins.CLIENT_SIZES)


def test_non_finite_client_is_zeroed_and_excluded_as_in_tff():
  twin = twins.linear_twin()
  clients = twin.make_data(0, sizes=(5, 4))
  clients[1]['x'][0] = np.float32(1e38)  # Overflows the squared error.
  data = twins.as_datasets(clients)
  weights = [twin.initial_weights] * 2
  ours = twins.our_process('linear', 'sgd')
  theirs = twins.tff_process('linear', 'sgd')
  our_out = ours.next(ours.initialize(), weights, data)
  their_out = theirs.next(theirs.initialize(), weights, data)
  for out in (our_out, their_out):
    assert float(out.result[1].update_weight) == 0.0
    assert all(np.all(u == 0) for u in out.result[1].update)
    assert out.measurements['train']['num_examples'] == 5
  assert our_out.measurements['train']['num_non_finite_clients'] == 1
  our_train = dict(our_out.measurements['train'])
  del our_train['num_non_finite_clients']
  for name, value in their_out.measurements['train'].items():
    assert our_train[name] == pytest.approx(value, abs=TOLERANCE)
  for a, b in zip(our_out.result[0].update, their_out.result[0].update):
    np.testing.assert_allclose(a, b, atol=TOLERANCE)


def test_out_of_range_label_makes_a_non_finite_client_where_tff_raises():
  """A deliberate difference from TFF: jaxclient's sparse categorical
  cross-entropy makes an out-of-range label's loss and gradient NaN, so the
  client is zeroed and counted as non-finite; Keras's raises on a CPU (on a
  GPU it returns NaN), which fails TFF's whole round."""
  twin = twins.mlp_twin()
  clients = twin.make_data(0, sizes=(5, 4))
  clients[1]['y'][2] = 3  # The MLP has 3 classes: labels 0, 1 and 2.
  data = twins.as_datasets(clients)
  weights = [twin.initial_weights] * 2
  ours = twins.our_process('mlp', 'sgd')
  our_out = ours.next(ours.initialize(), weights, data)
  assert float(our_out.result[1].update_weight) == 0.0
  assert all(np.all(u == 0) for u in our_out.result[1].update)
  train = our_out.measurements['train']
  assert train['num_non_finite_clients'] == 1
  assert train['num_examples'] == 5  # The other client's only.
  assert np.isfinite(train['loss'])
  # The finite client is untouched: as when trained alone.
  alone = ours.next(ours.initialize(), weights[:1], data[:1])
  for a, b in zip(our_out.result[0].update, alone.result[0].update):
    np.testing.assert_array_equal(a, b)
  theirs = twins.tff_process('mlp', 'sgd')
  with pytest.raises(Exception, match='outside the valid range'):
    theirs.next(theirs.initialize(), weights, data)


def test_negative_callable_weight_makes_a_non_finite_client():
  """Stricter than TFF (which would carry the weight into the mean): a
  weight that is negative (or not finite) zeroes the client as a non-finite
  update does."""
  twin = twins.linear_twin()
  ours = jaxclient_tff.build_model_delta_client_work(
      twin.jax_model_fn, twins.OPTIMIZERS['sgd'](),
      lambda metrics: jnp.where(metrics['num_examples'] > 4, 1.0, -1.0))
  clients = twin.make_data(0, sizes=(5, 4))
  out = ours.next(ours.initialize(), [twin.initial_weights] * 2,
                  twins.as_datasets(clients))
  assert [float(r.update_weight) for r in out.result] == [1.0, 0.0]
  assert np.max(np.abs(out.result[0].update[0])) > 1e-3
  assert all(np.all(u == 0) for u in out.result[1].update)
  assert out.measurements['train']['num_non_finite_clients'] == 1
  assert out.measurements['train']['num_examples'] == 5


def test_simulation_loop_and_loop_implementation_give_the_same_numbers():
  twin = twins.mlp_twin()
  optimizer = twins.OPTIMIZERS['adam']()
  reference = twins.tff_process('mlp', 'adam')
  for kwargs in ({'use_experimental_simulation_loop': True},
                 {'loop_implementation':
                  tff.learning.LoopImplementation.DATASET_ITERATOR}):
    ours = jaxclient_tff.build_model_delta_client_work(
        twin.jax_model_fn, optimizer, twins.NUM_EXAMPLES, **kwargs)
    our_out, their_out = twins.run_both(ours, reference, twin)
    twins.assert_parity(f'iterator loop {kwargs}', our_out, their_out)


def test_custom_metrics_aggregator_doubling_every_metric():
  def doubling_aggregator(metric_finalizers):
    doubled = collections.OrderedDict(
        (name, (lambda f: lambda unfinalized: f(unfinalized) * 2)(f))
        for name, f in metric_finalizers.items())
    return tff.learning.metrics.sum_then_finalize(doubled)

  twin = twins.mlp_twin()
  ours = jaxclient_tff.build_model_delta_client_work(
      twin.jax_model_fn, twins.OPTIMIZERS['sgd'](), twins.NUM_EXAMPLES,
      metrics_aggregator=doubling_aggregator)
  theirs = twins.tff_process('mlp', 'sgd')
  our_out, their_out = twins.run_both(ours, theirs, twin)
  for name, value in their_out.measurements['train'].items():
    assert our_out.measurements['train'][name] == pytest.approx(
        2 * value, abs=2 * TOLERANCE), name


@pytest.mark.parametrize('twin_name', sorted(twins.TWINS))
def test_weights_layout_is_kerass_creation_order(twin_name):
  twin = twins.TWINS[twin_name]()
  model = twin.jax_model_fn()
  layout = conversion.WeightsLayout(model.initial_weights)
  as_tff = layout.to_tff(model.initial_weights)
  assert len(as_tff.trainable) == len(twin.initial_weights.trainable)
  for ours, keras in zip(as_tff.trainable, twin.initial_weights.trainable):
    np.testing.assert_array_equal(ours, keras)
  assert as_tff.non_trainable == []
  back = layout.from_tff(as_tff)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(
      model.initial_weights)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(
      model.initial_weights)):
    np.testing.assert_array_equal(a, b)
