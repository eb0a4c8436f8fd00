"""jaxclient's TFF-named optimizers against numpy ports of TFF's rules."""

import inspect

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


# -- The composed transformations. -----------------------------------------

_opt = jc.optimizers

# build_* -> the same rule composed by hand from the public transformations.
COMPOSED = {
    'sgd': (_opt.build_sgdm(0.1), optax.scale_by_learning_rate(0.1)),
    'sgdm': (_opt.build_sgdm(0.1, momentum=0.9),
             optax.chain(_opt.scale_by_tff_momentum(0.9),
                         optax.scale_by_learning_rate(0.1))),
    'adagrad': (_opt.build_adagrad(0.1, initial_preconditioner_value=0.5,
                                   epsilon=1e-3),
                optax.chain(_opt.scale_by_tff_adagrad(1e-3, 0.5),
                            optax.scale_by_learning_rate(0.1))),
    'rmsprop': (_opt.build_rmsprop(0.01, decay=0.8),
                optax.chain(_opt.scale_by_tff_rmsprop(decay=0.8),
                            optax.scale_by_learning_rate(0.01))),
    'adam': (_opt.build_adam(0.05),
             optax.chain(_opt.scale_by_tff_adam(),
                         optax.scale_by_learning_rate(0.05))),
    'adamw': (_opt.build_adamw(0.05, weight_decay=0.01),
              optax.chain(_opt.scale_by_tff_adam(),
                          optax.add_decayed_weights(0.01),
                          optax.scale_by_learning_rate(0.05))),
    'yogi': (_opt.build_yogi(0.05, initial_preconditioner_value=1e-4),
             optax.chain(
                 _opt.scale_by_tff_yogi(initial_preconditioner_value=1e-4),
                 optax.scale_by_learning_rate(0.05))),
}


def _params_and_grads(num_steps, seed=0):
  rng = np.random.default_rng(seed)
  params = {'w': rng.normal(size=(3, 2)).astype(np.float32),
            'b': rng.normal(size=(2,)).astype(np.float32)}
  grads = [{k: rng.normal(size=v.shape).astype(np.float32)
            for k, v in params.items()} for _ in range(num_steps)]
  return params, grads


@pytest.mark.parametrize('name', list(COMPOSED))
def test_scale_by_tff_then_learning_rate_equals_build(name):
  built, composed = COMPOSED[name]
  params, all_grads = _params_and_grads(6)
  built_state, composed_state = built.init(params), composed.init(params)
  built_step, composed_step = jax.jit(built.update), jax.jit(composed.update)
  for grads in all_grads:
    built_updates, built_state = built_step(grads, built_state, params)
    composed_updates, composed_state = composed_step(grads, composed_state,
                                                     params)
    for k in params:
      np.testing.assert_allclose(built_updates[k], composed_updates[k],
                                 rtol=1e-6, atol=1e-9)
    params = optax.apply_updates(params, built_updates)
  assert (jax.tree.structure(built_state.inner_state) ==
          jax.tree.structure(composed_state))
  for a, b in zip(jax.tree.leaves(built_state.inner_state),
                  jax.tree.leaves(composed_state)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize('transform, build', [
    (_opt.scale_by_tff_adagrad, _opt.build_adagrad),
    (_opt.scale_by_tff_rmsprop, _opt.build_rmsprop),
    (_opt.scale_by_tff_adam, _opt.build_adam),
    (_opt.scale_by_tff_yogi, _opt.build_yogi),
])
def test_scale_by_tff_defaults_are_the_builders(transform, build):
  build_params = inspect.signature(build).parameters
  for name, param in inspect.signature(transform).parameters.items():
    assert param.default == build_params[name].default, name


STATES = {
    'momentum': (_opt.scale_by_tff_momentum(0.9),
                 _opt.ScaleByTffMomentumState, {'accumulator': 0.0}),
    'adagrad': (_opt.scale_by_tff_adagrad(),
                _opt.ScaleByTffAdagradState, {'preconditioner': 0.1}),
    'rmsprop': (_opt.scale_by_tff_rmsprop(),
                _opt.ScaleByTffRmsPropState, {'preconditioner': 0.0}),
    'adam': (_opt.scale_by_tff_adam(), _opt.ScaleByTffAdamState,
             {'step': 0, 'accumulator': 0.0, 'preconditioner': 0.0}),
    'yogi': (_opt.scale_by_tff_yogi(), _opt.ScaleByTffAdamState,
             {'step': 0, 'accumulator': 0.0, 'preconditioner': 1e-6}),
}


@pytest.mark.parametrize('name', list(STATES))
def test_transform_states_are_the_documented_named_tuples(name):
  transform, state_type, initial = STATES[name]
  params, (grads,) = _params_and_grads(1)
  state = transform.init(params)
  assert type(state) is state_type
  assert state._fields == tuple(initial)
  for field in state._fields:
    assert f'    {field}: ' in state_type.__doc__, field
  for field, value in initial.items():
    leaves = getattr(state, field)
    if field == 'step':
      assert leaves.dtype == jnp.int32 and leaves.shape == () and leaves == 0
      continue
    assert jax.tree.structure(leaves) == jax.tree.structure(params)
    for leaf, param in zip(jax.tree.leaves(leaves), jax.tree.leaves(params)):
      assert leaf.shape == param.shape and leaf.dtype == param.dtype
      np.testing.assert_array_equal(leaf, np.full_like(param, value))
  _, new_state = transform.update(grads, state, params)
  assert type(new_state) is state_type
  if 'step' in initial:
    assert new_state.step == 1


@pytest.mark.parametrize('name', list(CASES))
def test_hyperparams_are_top_level_and_replaceable(name):
  optimizer, _, _ = CASES[name]
  params, (grads,) = _params_and_grads(1)
  state = optimizer.init(params)
  doubled = state._replace(hyperparams={
      **state.hyperparams,
      'learning_rate': 2 * state.hyperparams['learning_rate']})
  updates, _ = optimizer.update(grads, state, params)
  doubled_updates, new_state = optimizer.update(grads, doubled, params)
  assert float(new_state.hyperparams['learning_rate']) == pytest.approx(
      2 * float(state.hyperparams['learning_rate']))
  for k in params:
    np.testing.assert_array_equal(doubled_updates[k], 2 * updates[k])


@pytest.mark.parametrize('build, hparam_names', [
    (_opt.build_adagrad, ['learning_rate', 'epsilon']),
    (_opt.build_yogi, ['learning_rate', 'beta_1', 'beta_2', 'epsilon']),
])
def test_initial_preconditioner_value_is_static(build, hparam_names):
  # As interop's jax backend calls it: TFF's hparams, then the static value.
  optimizer = build(**{k: 0.5 for k in hparam_names},
                    initial_preconditioner_value=0.25)
  state = optimizer.init({'w': jnp.zeros((2,))})
  assert list(state.hyperparams) == hparam_names
  (preconditioner,) = [s.preconditioner for s in state.inner_state
                       if hasattr(s, 'preconditioner')]
  np.testing.assert_array_equal(preconditioner['w'], [0.25, 0.25])


def test_adamw_update_needs_params():
  optimizer = _opt.build_adamw(0.05)
  state = optimizer.init({'w': jnp.zeros((2,))})
  with pytest.raises(ValueError, match='params'):
    optimizer.update({'w': jnp.ones((2,))}, state)


def test_updates_are_the_negated_step():
  # SGD: w - lr * g, exactly.
  optimizer = _opt.build_sgdm(0.5)
  params = {'w': jnp.array([1.0, -2.0])}
  updates, _ = optimizer.update({'w': jnp.array([4.0, 2.0])},
                                optimizer.init(params), params)
  np.testing.assert_array_equal(optax.apply_updates(params, updates)['w'],
                                [-1.0, -3.0])


def test_all_lists_exactly_the_public_names():
  public = {name for name, value in vars(_opt).items()
            if not name.startswith('_') and
            getattr(value, '__module__', None) == _opt.__name__}
  assert sorted(_opt.__all__) == sorted(public)
  assert len(set(_opt.__all__)) == len(_opt.__all__)
  assert {'build_sgdm', 'build_adagrad', 'build_rmsprop', 'build_adam',
          'build_adamw', 'build_yogi', 'scale_by_tff_momentum',
          'scale_by_tff_adagrad', 'scale_by_tff_rmsprop', 'scale_by_tff_adam',
          'scale_by_tff_yogi'} <= public
