"""Never a silent 0.0: bad labels, bad client weights, an overflowing weight
sum, empty cohorts and unusable data are counted or named, never trained on
quietly (the core's side; the command's is in test_cli.py)."""

import re

import jax
import numpy as np
import pytest

import jaxclient as jc
from tests.core import fedavg_scenario as scenario
from tests.core import toy_models

X = np.array([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.5], [2.0, -1.0]], np.float32)
LABELS = np.array([0, 2, 1, 0], np.int32)


def _softmax_process(weighting=jc.ClientWeighting.NUM_EXAMPLES):
  return jc.build_model_delta_client_work(
      toy_models.softmax_regression(2, 3, toy_models.linear_params(2, 3, 0)),
      jc.optimizers.build_sgdm(0.1), weighting)


def _run(process, clients):
  model = process.training.model
  return process.next(process.initialize(), model.initial_weights,
                      jc.data.pack(clients, batch_size=2))


@pytest.fixture(scope='module')
def softmax_process():
  """One process for every bad label: the cohorts share their shapes, so
  it compiles once."""
  return _softmax_process()


@pytest.mark.parametrize('bad_label', [3, 5, -1])
def test_an_out_of_range_label_makes_its_client_non_finite(softmax_process,
                                                           bad_label):
  bad = LABELS.copy()
  bad[2] = bad_label
  out = _run(softmax_process, [{'x': X, 'y': LABELS}, {'x': X, 'y': bad}])
  train = out.measurements['train']
  assert int(train['num_non_finite_clients']) == 1
  np.testing.assert_array_equal(out.result.update_weight, [4.0, 0.0])
  for leaf in jax.tree.leaves(out.result.update):
    np.testing.assert_array_equal(leaf[1], 0.0)
  # Only the good client is in the metrics; its loss is no silent 0.0.
  alone = _run(softmax_process, [{'x': X, 'y': LABELS}])
  assert int(train['num_examples']) == 4
  np.testing.assert_allclose(train['loss'], alone.measurements['train']['loss'])
  assert float(train['loss']) > 0.1


def test_the_loss_of_an_out_of_range_label_is_not_finite():
  logits = np.zeros((2, 3), np.float32)
  mask = np.array([True, True])
  loss = jc.losses.sparse_categorical_crossentropy(logits, np.array([0, 3]),
                                                   mask)
  assert not np.isfinite(loss)
  grads = jax.grad(lambda z: jc.losses.sparse_categorical_crossentropy(
      z, np.array([0, -1]), mask))(logits)
  assert not np.all(np.isfinite(grads))
  # A padded row's label is never looked at.
  np.testing.assert_allclose(jc.losses.sparse_categorical_crossentropy(
      logits, np.array([0, 99]), np.array([True, False])), np.log(3.0),
                             rtol=1e-6)


def test_a_non_scalar_client_weight_is_an_error_naming_client_weighting():
  process = _softmax_process(lambda metrics: metrics['loss'][0] * np.ones(3))
  with pytest.raises(ValueError, match=re.escape(
      'client_weighting: expected a scalar weight per client, found shape '
      '(3,)')):
    _run(process, [{'x': X, 'y': LABELS}])


@pytest.mark.parametrize('bad_weight', [np.nan, np.inf, -1.0])
def test_a_bad_client_weight_makes_its_client_non_finite(bad_weight):
  def weighting(metrics):
    # The client with 3 examples gets the bad weight.
    return jax.numpy.where(metrics['num_examples'] == 3, bad_weight, 2.0)
  out = _run(_softmax_process(weighting),
             [{'x': X, 'y': LABELS}, {'x': X[:3], 'y': LABELS[:3]}])
  np.testing.assert_array_equal(out.result.update_weight, [2.0, 0.0])
  for leaf in jax.tree.leaves(out.result.update):
    np.testing.assert_array_equal(leaf[1], 0.0)
    assert np.any(leaf[0] != 0)
  assert int(out.measurements['train']['num_non_finite_clients']) == 1
  assert int(out.measurements['train']['num_examples']) == 4


def test_an_overflowing_weight_sum_marks_the_round_non_finite():
  process = scenario.build(client_weighting=lambda metrics: 3e38)
  state = process.initialize()
  new_state, metrics = process.next(state, scenario.cohort(0))
  assert int(metrics['finalizer']['update_non_finite']) == 1
  for a, b in zip(jax.tree.leaves(state.global_model_weights),
                  jax.tree.leaves(new_state.global_model_weights)):
    np.testing.assert_array_equal(a, b)


def test_a_cohort_of_no_clients_is_a_clear_error():
  process = _softmax_process()
  data = jc.data.pack([{'x': X, 'y': LABELS}], batch_size=2)
  empty = {k: v[:0] for k, v in data.items()}
  with pytest.raises(ValueError, match=re.escape(
      "client_data['mask']: expected at least one client, found shape "
      '(0, 2, 2).')):
    process.next(process.initialize(),
                 process.training.model.initial_weights, empty)


def test_a_batch_size_of_zero_is_a_clear_error():
  process = _softmax_process()
  data = jc.data.pack([{'x': X, 'y': LABELS}], batch_size=2)
  empty = {k: v[:, :, :0] for k, v in data.items()}
  with pytest.raises(ValueError, match=re.escape(
      "client_data['mask']: expected every axis of [clients, batches, "
      'batch_size] to be at least 1, found shape (1, 2, 0).')):
    process.next(process.initialize(),
                 process.training.model.initial_weights, empty)


def test_string_features_are_a_clear_error():
  process = _softmax_process()
  data = dict(jc.data.pack([{'x': X, 'y': LABELS}], batch_size=2))
  data['x'] = data['x'].astype(str)
  with pytest.raises(ValueError, match=re.escape(
      "client_data['x']: expected shape (1, 2, 2, 2) float32")) as error:
    process.next(process.initialize(),
                 process.training.model.initial_weights, data)
  assert len(str(error.value)) < 300  # Names the dtype, not every value.
