"""TFF's reference scenario for build_model_delta_client_work, by hand."""

import numpy as np
import pytest

import jaxclient as jc
from tests.core import toy_models

X = np.array([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.5], [2.0, -1.0]], np.float32)
Y = np.array([[1.0], [2.0], [0.0], [3.0]], np.float32)


def hand_computed_sgd():
  """4 examples, repeated 2 epochs, batches of 3 -> [0,1,2], [3,0,1], [2,3].

  Linear regression y = x.w + b, MSE, SGD 0.1 from zero weights.
  """
  w, b = np.zeros((2, 1)), np.zeros((1,))
  losses = []
  for idx in ([0, 1, 2], [3, 0, 1], [2, 3]):
    x, y = X[idx].astype(np.float64), Y[idx].astype(np.float64)
    err = x @ w + b - y
    losses.append((np.mean(err**2), len(idx)))
    grad_w = 2 * x.T @ err / len(idx)
    grad_b = 2 * err.sum(axis=0) / len(idx)
    w, b = w - 0.1 * grad_w, b - 0.1 * grad_b
  mean_loss = sum(l * n for l, n in losses) / sum(n for _, n in losses)
  return {'kernel': -w, 'bias': -b}, mean_loss


@pytest.mark.parametrize('weighting, expected_weight', [
    (jc.ClientWeighting.NUM_EXAMPLES, 8.0),
    (jc.ClientWeighting.UNIFORM, 1.0),
])
def test_linear_regression_two_epochs_batch_three(weighting, expected_weight):
  process = jc.build_model_delta_client_work(
      toy_models.linear_regression, jc.optimizers.build_sgdm(0.1), weighting)
  data = jc.data.pack([{'x': X, 'y': Y}], batch_size=3, num_epochs=2)
  assert data['mask'].shape == (1, 3, 3)

  out = process.next(process.initialize(),
                     toy_models.linear_regression().initial_weights, data)

  expected_update, expected_loss = hand_computed_sgd()
  for key in ('kernel', 'bias'):
    np.testing.assert_allclose(out.result.update[key][0],
                               expected_update[key], rtol=1e-6, atol=1e-7)
  assert out.result.update_weight.dtype == np.float32
  assert float(out.result.update_weight[0]) == expected_weight
  train = out.measurements['train']
  assert int(train['num_examples']) == 8
  assert int(train['num_batches']) == 3
  assert int(train['num_non_finite_clients']) == 0
  np.testing.assert_allclose(train['loss'], expected_loss, rtol=1e-6)
  assert dict(out.state) == {'learning_rate': pytest.approx(0.1)}
