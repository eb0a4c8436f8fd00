"""Guards `jaxclient_tff._private_apis`: each private name of another
project that the interop uses still exists and still does what the interop
relies on. A failure here names the dependency that changed."""

import tensorflow as tf

from jaxclient_tff import _private_apis


def test_legacy_keras_create_all_weights_creates_slots_before_a_step():
  assert hasattr(tf.keras.optimizers.legacy.Optimizer, '_create_all_weights'), (
      'Keras legacy OptimizerV2._create_all_weights is gone: '
      'jaxclient_tff._private_apis.create_legacy_keras_optimizer_weights '
      'needs another way to create a legacy optimizer\'s slots.')
  variables = [tf.Variable(tf.ones((2,))), tf.Variable(tf.ones((3, 1)))]
  optimizer = tf.keras.optimizers.legacy.SGD(0.1, momentum=0.9)
  assert not optimizer.weights
  _private_apis.create_legacy_keras_optimizer_weights(optimizer, variables)
  for variable in variables:
    slot = optimizer.get_slot(variable, 'momentum')
    assert slot.shape == variable.shape
  assert int(optimizer.iterations) == 0  # Created, no step applied.
  for variable in variables:
    assert float(tf.reduce_min(variable)) == 1.0
