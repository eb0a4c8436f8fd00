"""`backend='jax'` translates TFF optimizers to their `jaxclient.optimizers`
twins, identified by the types of TFF's public builders, with the hparams
and the initial preconditioner read from the state that the public
`optimizer.initialize(spec)` returns: the twin steps as TFF's optimizer."""

import jax
import numpy as np
import optax
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from jaxclient_tff import optimizer_adapters

_BUILDERS = tff.learning.optimizers
TFF_OPTIMIZERS = {
    'sgd': lambda: _BUILDERS.build_sgdm(learning_rate=0.1),
    'sgdm': lambda: _BUILDERS.build_sgdm(learning_rate=0.1, momentum=0.8),
    'adam': lambda: _BUILDERS.build_adam(learning_rate=0.05, beta_1=0.8,
                                         epsilon=1e-3),
    'adamw': lambda: _BUILDERS.build_adamw(learning_rate=0.05,
                                           weight_decay=0.1),
    'rmsprop': lambda: _BUILDERS.build_rmsprop(learning_rate=0.05, decay=0.8),
    # Non-default initial preconditioners: read from the initial state.
    'adagrad': lambda: _BUILDERS.build_adagrad(
        learning_rate=0.1, initial_preconditioner_value=0.3),
    'yogi': lambda: _BUILDERS.build_yogi(
        learning_rate=0.05, initial_preconditioner_value=0.02),
}
NUM_STEPS = 3


@pytest.mark.parametrize('name', sorted(TFF_OPTIMIZERS))
def test_twin_steps_as_tffs_optimizer(name):
  tff_optimizer = TFF_OPTIMIZERS[name]()
  twin = optimizer_adapters.as_optax(tff_optimizer)
  rng = np.random.default_rng(0)
  weights = (rng.normal(size=(3,)).astype(np.float32),
             rng.normal(size=(2, 2)).astype(np.float32))
  grads = [tuple(rng.normal(size=w.shape).astype(np.float32)
                 for w in weights) for _ in range(NUM_STEPS)]

  theirs = tuple(tf.constant(w) for w in weights)
  state = tff_optimizer.initialize(
      tuple(tf.TensorSpec.from_tensor(w) for w in theirs))
  ours = tuple(jax.numpy.asarray(w) for w in weights)
  opt_state = twin.init(ours)
  for g in grads:
    state, theirs = tff_optimizer.next(state, theirs,
                                       tuple(tf.constant(x) for x in g))
    updates, opt_state = twin.update(tuple(jax.numpy.asarray(x) for x in g),
                                     opt_state, ours)
    ours = optax.apply_updates(ours, updates)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-6, rtol=0)


def test_hparams_are_tffs():
  for name, build in TFF_OPTIMIZERS.items():
    tff_optimizer = build()
    theirs = tff_optimizer.get_hparams(
        tff_optimizer.initialize(tf.TensorSpec((), tf.float32)))
    ours = optimizer_adapters.as_optax(build()).init(
        np.zeros((), np.float32)).hyperparams
    assert list(ours) == list(theirs), name
    for key in theirs:
      assert float(ours[key]) == pytest.approx(float(theirs[key])), (name, key)


def test_untranslatable_tff_optimizer_is_a_type_error():
  scheduled = tff.learning.optimizers.schedule_learning_rate(
      _BUILDERS.build_sgdm(0.1), lambda round_num: 0.1)
  with pytest.raises(TypeError, match="backend='jax' translates the TFF "
                     r'optimizers.*Pass an optax.GradientTransformation'):
    optimizer_adapters.as_optax(scheduled)
