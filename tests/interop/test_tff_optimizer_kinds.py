"""The two other optimizer kinds: optax transformations and the Keras
fallback, against TFF's own client work with the matching TFF optimizer."""

import collections

import numpy as np
import optax
import pytest
import tensorflow as tf

import jaxclient as jc
import jaxclient_tff
import twins

def _ours(optimizer, twin=None):
  twin = twin or twins.mlp_twin()
  return jaxclient_tff.build_model_delta_client_work(
      twin.jax_model_fn, optimizer, twins.NUM_EXAMPLES)


@pytest.mark.parametrize('name,build', [
    ('adam', lambda: jc.optimizers.build_adam(learning_rate=0.05)),
    ('sgdm', lambda: jc.optimizers.build_sgdm(learning_rate=0.1,
                                              momentum=0.9)),
])
def test_optax_with_injected_hparams_equals_tff(name, build):
  ours, theirs = _ours(build()), twins.tff_process('mlp', name)
  assert ours.initialize.type_signature == theirs.initialize.type_signature
  assert ours.next.type_signature.parameter == (
      theirs.next.type_signature.parameter)
  our_out, their_out = twins.run_both(ours, theirs, twins.mlp_twin())
  twins.assert_parity(f'optax jc.optimizers {name}', our_out, their_out)


def test_plain_optax_sgd_has_empty_state_and_tff_numbers():
  ours, theirs = _ours(optax.sgd(0.1)), twins.tff_process('mlp', 'sgd')
  assert str(ours.initialize.type_signature) == '( -> <>@SERVER)'
  clients = twins.mlp_twin().make_data(0)
  weights = [twins.mlp_twin().initial_weights] * len(clients)
  our_out = ours.next(ours.initialize(), weights, twins.as_datasets(clients))
  their_out = theirs.next(theirs.initialize(), weights,
                          twins.as_datasets(clients))
  twins.assert_parity('optax.sgd vs sgdm', our_out, their_out)


@pytest.mark.parametrize('keras_fn,tff_name', [
    (lambda: tf.keras.optimizers.SGD(0.1), 'sgd'),
    (lambda: tf.keras.optimizers.SGD(0.1, momentum=0.9), 'sgdm'),
    (lambda: tf.keras.optimizers.legacy.SGD(0.1), 'sgd'),
])
def test_keras_sgd_equals_tff_sgdm(keras_fn, tff_name):
  ours, theirs = _ours(keras_fn), twins.tff_process('mlp', tff_name)
  assert str(ours.initialize.type_signature) == '( -> <>@SERVER)'
  assert ours.get_hparams(ours.initialize()) == collections.OrderedDict()
  assert ours.next.type_signature.parameter[1:] == (
      theirs.next.type_signature.parameter[1:])
  clients = twins.mlp_twin().make_data(0)
  weights = [twins.mlp_twin().initial_weights] * len(clients)
  data = twins.as_datasets(clients)
  our_out = ours.next(ours.initialize(), weights, data)
  their_out = theirs.next(theirs.initialize(), weights, data)
  twins.assert_parity(f'keras {type(keras_fn()).__module__}.'
                      f'{type(keras_fn()).__name__} vs {tff_name}', our_out,
                      their_out)


def _one_batch_update(optimizer_fn):
  """The update of the linear model after one batch of 3 examples."""
  twin = twins.linear_twin()
  process = _ours(optimizer_fn, twin)
  clients = twin.make_data(5, sizes=(3,))
  out = process.next(process.initialize(), [twin.initial_weights],
                     twins.as_datasets(clients))
  return [np.asarray(u) for u in out.result[0].update]


def test_keras_clipvalue_and_clipnorm_take_effect():
  learning_rate = 0.1
  plain = _one_batch_update(lambda: tf.keras.optimizers.SGD(learning_rate))
  grads = [u / learning_rate for u in plain]  # One SGD step: update = lr * g.
  clip = 0.05
  assert max(np.max(np.abs(g)) for g in grads) > clip  # The clip bites.
  clipped = _one_batch_update(
      lambda: tf.keras.optimizers.SGD(learning_rate, clipvalue=clip))
  for u, g in zip(clipped, grads):
    np.testing.assert_allclose(u, learning_rate * np.clip(g, -clip, clip),
                               atol=1e-6)
  normed = _one_batch_update(
      lambda: tf.keras.optimizers.SGD(learning_rate, clipnorm=clip))
  for u, g in zip(normed, grads):  # Keras clips each gradient's own norm.
    scale = min(1.0, clip / np.linalg.norm(g))
    np.testing.assert_allclose(u, learning_rate * g * scale, atol=1e-6)


def test_built_keras_optimizer_is_a_type_error():
  with pytest.raises(TypeError, match='already-built SGD'):
    _ours(tf.keras.optimizers.SGD(0.1))


def test_callable_not_returning_a_keras_optimizer_is_a_type_error():
  with pytest.raises(TypeError, match='must return a tf.keras optimizer'):
    _ours(lambda: 'sgd')
