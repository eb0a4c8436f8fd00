"""jaxclient's TFF-named optimizers against numpy ports of TFF's update rules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxclient as jc
from tests.core import reference

CASES = {
    'sgd': (jc.optimizers.build_sgdm(0.1), reference.Sgdm(0.1),
            ['learning_rate']),
    'sgdm': (jc.optimizers.build_sgdm(0.1, momentum=0.9),
             reference.Sgdm(0.1, momentum=0.9), ['learning_rate', 'momentum']),
    'adam': (jc.optimizers.build_adam(0.05), reference.Adam(0.05),
             ['learning_rate', 'beta_1', 'beta_2', 'epsilon']),
    'adagrad': (jc.optimizers.build_adagrad(0.1), reference.Adagrad(0.1),
                ['learning_rate', 'epsilon']),
    'rmsprop': (jc.optimizers.build_rmsprop(0.01, decay=0.8),
                reference.RmsProp(0.01, decay=0.8),
                ['learning_rate', 'decay', 'epsilon']),
    'yogi': (jc.optimizers.build_yogi(0.05),
             reference.Adam(0.05, epsilon=1e-3, yogi=True,
                            initial_preconditioner_value=1e-6),
             ['learning_rate', 'beta_1', 'beta_2', 'epsilon']),
    'adamw': (jc.optimizers.build_adamw(0.05, weight_decay=0.01),
              reference.Adam(0.05, weight_decay=0.01),
              ['learning_rate', 'beta_1', 'beta_2', 'epsilon', 'weight_decay']),
}


@pytest.mark.parametrize('name', list(CASES))
def test_matches_tff_update_rule_over_several_steps(name):
  optimizer, ref, _ = CASES[name]
  rng = np.random.default_rng(0)
  params = {'w': rng.normal(size=(3, 2)).astype(np.float32),
            'b': rng.normal(size=(2,)).astype(np.float32)}
  ref_params = {k: v.astype(np.float64) for k, v in params.items()}
  ref_state = {k: ref.init(v) for k, v in ref_params.items()}
  state = optimizer.init(params)
  step = jax.jit(optimizer.update)
  for _ in range(6):
    grads = {k: rng.normal(size=v.shape).astype(np.float32)
             for k, v in params.items()}
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
    for k in ref_params:
      ref_state[k], ref_params[k] = ref.step(ref_state[k], ref_params[k],
                                             grads[k].astype(np.float64))
  for k in params:
    np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', list(CASES))
def test_hyperparameters_carry_tff_names(name):
  optimizer, _, expected_keys = CASES[name]
  process = jc.build_model_delta_client_work(
      lambda: jc.FunctionalModel(
          jc.ModelWeights({'w': jnp.zeros((2,))}, {}),
          lambda w, x, training, rng=None: x @ w.trainable['w'],
          jc.losses.mean_squared_error,
          input_spec={'x': jax.ShapeDtypeStruct((2,), jnp.float32)}),
      optimizer, jc.ClientWeighting.UNIFORM)
  hparams = process.get_hparams(process.initialize())
  assert list(hparams) == expected_keys
  assert all(v.dtype == jnp.float32 and v.shape == () for v in hparams.values())


def test_sgd_momentum_zero_has_no_momentum_hparam():
  state = jc.optimizers.build_sgdm(0.1, momentum=0.0).init({'w': jnp.zeros(2)})
  assert list(state.hyperparams) == ['learning_rate']


@pytest.mark.parametrize('build, kwargs, message', [
    (jc.optimizers.build_sgdm, {'learning_rate': -1.0}, 'learning_rate'),
    (jc.optimizers.build_sgdm, {'learning_rate': 0.1, 'momentum': 1.5},
     'momentum'),
    (jc.optimizers.build_adam, {'learning_rate': 0.1, 'beta_1': 2.0},
     'beta_1'),
    (jc.optimizers.build_adagrad, {'learning_rate': 0.1, 'epsilon': -1.0},
     'epsilon'),
    (jc.optimizers.build_rmsprop, {'learning_rate': 0.1, 'decay': -0.5},
     'decay'),
    (jc.optimizers.build_adamw, {'learning_rate': 0.1, 'weight_decay': -1.0},
     'weight_decay'),
    (jc.optimizers.build_yogi,
     {'learning_rate': 0.1, 'initial_preconditioner_value': -1.0},
     'initial_preconditioner_value'),
])
def test_invalid_hyperparameters_are_rejected(build, kwargs, message):
  with pytest.raises(ValueError, match=message):
    build(**kwargs)
