"""The vmapped cohort equals a plain per-client loop without padding.

Property tests over ragged client sizes (including empty clients), epochs and
batch sizes, for SGD, momentum and Adam, on two models whose gradients are
written by hand in numpy (tests/core/reference.py).
"""

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

import jaxclient as jc
from tests.core import reference
from tests.core import toy_models

OPTIMIZERS = {
    'sgd': (lambda: jc.optimizers.build_sgdm(0.05),
            lambda: reference.Sgdm(0.05)),
    'momentum': (lambda: jc.optimizers.build_sgdm(0.05, momentum=0.9),
                 lambda: reference.Sgdm(0.05, momentum=0.9)),
    'adam': (lambda: jc.optimizers.build_adam(0.01),
             lambda: reference.Adam(0.01)),
}
MODELS = {
    'linear': (lambda p: toy_models.linear_regression(3, 2, p),
               reference.linear_loss_and_grads, 2),
    'softmax': (lambda p: toy_models.softmax_regression(3, 4, p),
                reference.softmax_loss_and_grads, 4),
}


def make_clients(sizes, model_name, seed):
  rng = np.random.default_rng(seed)
  clients = []
  for n in sizes:
    x = rng.normal(size=(n, 3)).astype(np.float32)
    if model_name == 'linear':
      y = rng.normal(size=(n, 2)).astype(np.float32)
    else:
      y = rng.integers(0, 4, size=(n,)).astype(np.int32)
    clients.append({'x': x, 'y': y})
  return clients


@pytest.mark.parametrize('optimizer_name', list(OPTIMIZERS))
@hypothesis.settings(max_examples=12, deadline=None, derandomize=True)
@hypothesis.given(
    sizes=st.lists(st.integers(0, 9), min_size=1, max_size=4),
    batch_size=st.integers(1, 4),
    num_epochs=st.integers(1, 3),
    model_name=st.sampled_from(list(MODELS)),
    weighting=st.sampled_from(list(jc.ClientWeighting)),
    seed=st.integers(0, 2**16))
def test_vmapped_cohort_equals_plain_loop(optimizer_name, sizes, batch_size,
                                          num_epochs, model_name, weighting,
                                          seed):
  build_model, loss_and_grads, num_outputs = MODELS[model_name]
  params = toy_models.linear_params(3, num_outputs, seed=seed)
  build_jc_opt, build_ref_opt = OPTIMIZERS[optimizer_name]
  clients = make_clients(sizes, model_name, seed)
  process = jc.build_model_delta_client_work(
      lambda: build_model(params), build_jc_opt(), weighting)

  out = process.next(process.initialize(), build_model(params).initial_weights,
                     jc.data.pack(clients, batch_size, num_epochs))
  out = jax.device_get(out)  # Indexed in numpy, not op by op on devices.

  total_loss = total_examples = total_batches = 0
  for i, client in enumerate(clients):
    update, loss_sum, n, b = reference.train_client(
        params, client['x'], client['y'], batch_size, num_epochs,
        build_ref_opt(), loss_and_grads)
    for key in params:
      np.testing.assert_allclose(out.result.update[key][i], update[key],
                                 rtol=2e-4, atol=2e-6, err_msg=key)
    if weighting is jc.ClientWeighting.NUM_EXAMPLES:
      expected_weight = float(n)
    else:
      expected_weight = 1.0
    assert float(out.result.update_weight[i]) == expected_weight
    total_loss, total_examples, total_batches = (
        total_loss + loss_sum, total_examples + n, total_batches + b)
  train = out.measurements['train']
  assert int(train['num_examples']) == total_examples
  assert int(train['num_batches']) == total_batches
  np.testing.assert_allclose(train['loss'],
                             total_loss / max(total_examples, 1), rtol=1e-4)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(leaf_a, leaf_b)


@pytest.mark.parametrize('optimizer_name', list(OPTIMIZERS))
def test_extra_all_padding_batches_change_nothing_bitwise(optimizer_name):
  params = toy_models.linear_params(3, 4, seed=1)
  clients = make_clients([5, 0, 9, 3], 'softmax', seed=2)
  process = jc.build_model_delta_client_work(
      lambda: toy_models.softmax_regression(3, 4, params),
      OPTIMIZERS[optimizer_name][0](), jc.ClientWeighting.NUM_EXAMPLES)
  weights = toy_models.softmax_regression(3, 4, params).initial_weights
  tight = jc.data.pack(clients, batch_size=2, num_epochs=2)
  padded = jc.data.pack(clients, batch_size=2, num_epochs=2,
                        num_batches=tight['mask'].shape[1] + 3)

  a = process.next(process.initialize(), weights, tight)
  b = process.next(process.initialize(), weights, padded)

  assert_trees_equal(a.result, b.result)
  assert_trees_equal(a.measurements, b.measurements)


def test_permuting_clients_permutes_results():
  params = toy_models.linear_params(3, 4, seed=3)
  clients = make_clients([4, 7, 0, 2, 5], 'softmax', seed=4)
  process = jc.build_model_delta_client_work(
      lambda: toy_models.softmax_regression(3, 4, params),
      jc.optimizers.build_adam(0.01), jc.ClientWeighting.NUM_EXAMPLES)
  weights = toy_models.softmax_regression(3, 4, params).initial_weights
  permutation = [3, 0, 4, 2, 1]

  a = process.next(process.initialize(), weights,
                   jc.data.pack(clients, batch_size=3))
  b = process.next(process.initialize(), weights,
                   jc.data.pack([clients[i] for i in permutation],
                                batch_size=3))

  assert_trees_equal(
      jax.tree.map(lambda v: np.asarray(v)[permutation], a.result), b.result)
  assert_trees_equal(a.measurements['train']['num_examples'],
                      b.measurements['train']['num_examples'])
