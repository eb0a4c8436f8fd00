"""Metric definitions against hand computations, and the core's imports."""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxclient as jc
from tests.core import children


def run_metric(metric, batches):
  state = metric.init()
  for predictions, labels, mask, loss in batches:
    state = metric.update(state, jc.metrics.BatchOutput(
        jnp.asarray(predictions), jnp.asarray(labels), jnp.asarray(mask),
        jnp.asarray(loss, jnp.float32)))
  return state


BATCHES = [
    (np.array([[0.1, 0.9], [0.8, 0.2], [0.0, 0.0]]), np.array([1, 1, 0]),
     np.array([True, True, False]), 2.0),
    (np.array([[0.3, 0.7], [0.6, 0.4], [0.5, 0.1]]), np.array([1, 0, 1]),
     np.array([True, True, True]), 4.0),
]


def test_sparse_categorical_accuracy_ignores_padding():
  metric = jc.metrics.sparse_categorical_accuracy()
  state = run_metric(metric, BATCHES)
  # Correct: 1 of 2 valid in batch 1, 2 of 3 in batch 2.
  np.testing.assert_allclose(metric.finalize(state), 3 / 5)


def test_loss_is_the_example_weighted_mean_of_batch_losses():
  metric = jc.metrics.mean_loss()
  np.testing.assert_allclose(metric.finalize(run_metric(metric, BATCHES)),
                             (2.0 * 2 + 4.0 * 3) / 5)


def test_counters():
  assert int(run_metric(jc.metrics.num_examples(), BATCHES)) == 5
  assert int(run_metric(jc.metrics.num_batches(), BATCHES)) == 2


def test_mean_squared_error():
  metric = jc.metrics.mean_squared_error()
  batches = [(np.array([[1.0, 2.0], [0.0, 0.0]]),
              np.array([[0.0, 0.0], [9.0, 9.0]]), np.array([True, False]), 0.)]
  np.testing.assert_allclose(metric.finalize(run_metric(metric, batches)),
                             2.5)


def test_sum_then_finalize_sums_clients_before_finalizing():
  metrics = {'accuracy': jc.metrics.sparse_categorical_accuracy()}
  stacked = {'accuracy': (jnp.array([1.0, 9.0]), jnp.array([2.0, 10.0]))}
  finalized = jc.metrics.sum_then_finalize(metrics)(stacked)
  # A mean of the per-client ratios would be 0.7; the pooled ratio is 10/12.
  np.testing.assert_allclose(finalized['accuracy'], 10 / 12)


def test_empty_mean_metric_finalizes_to_zero_not_nan():
  metric = jc.metrics.mean_loss()
  assert float(metric.finalize(metric.init())) == 0.0


_IMPORTS = ('import sys, jaxclient, jaxclient.client_work; '
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tensorflow_federated', 'jaxclient_tff')))")
children.ahead('core imports', [[sys.executable, '-c', _IMPORTS]], cwd=None)


def test_core_imports_no_tensorflow():
  (done,) = children.result('core imports')
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == '[]'


def test_tree_of_metrics_is_a_jax_pytree():
  states = {n: m.init() for n, m in jc.metrics.with_built_ins({}).items()}
  assert len(jax.tree.leaves(states)) == 5
