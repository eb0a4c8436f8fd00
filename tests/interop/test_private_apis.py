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


def test_jaxlib_compiles_and_runs_a_serialized_hlo_module():
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxlib import xla_client  # pylint: disable=g-import-not-at-top
  assert hasattr(xla_client, 'XlaComputation'), (
      'jaxlib.xla_client.XlaComputation is gone: jaxclient_tff._private_apis.'
      'compile_hlo_module needs another way to compile a tff.jax payload.')
  lowered = jax.jit(lambda x, y: (x * y + 1.0,)).lower(np.float32(2.0),
                                                        np.float32(3.0))
  hlo_module = lowered.compiler_ir('hlo').as_serialized_hlo_module_proto()
  device = jax.devices()[0]
  executable = _private_apis.compile_hlo_module(hlo_module, device)
  outputs = executable.execute([jax.device_put(np.float32(2.0), device),
                                jax.device_put(np.float32(3.0), device)])
  assert float(np.asarray(outputs[0])) == 7.0
