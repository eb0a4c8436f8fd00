"""Bad arguments fail at build time with errors naming the argument."""

import functools
import re

import jax
import jax.numpy as jnp
import optax
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import jaxclient as jc
import jaxclient_tff
import twins


def _build(model_fn=None, optimizer=None, weighting=twins.NUM_EXAMPLES,
           **kwargs):
  return jaxclient_tff.build_model_delta_client_work(
      model_fn or twins.linear_twin().jax_model_fn,
      optimizer or tff.learning.optimizers.build_sgdm(0.1), weighting,
      **kwargs)


def test_model_instance_instead_of_model_fn_is_a_type_error():
  with pytest.raises(TypeError, match='model_fn: expected a no-arg callable'):
    _build(model_fn=twins.linear_twin().jax_model_fn())


def test_model_fn_returning_the_same_model_is_a_value_error():
  model = twins.linear_twin().jax_model_fn()
  with pytest.raises(ValueError, match='same model object'):
    _build(model_fn=lambda: model)


def test_model_fn_returning_a_non_model_is_a_type_error():
  with pytest.raises(TypeError, match='model_fn: expected to return'):
    _build(model_fn=lambda: object())


def test_model_without_label_spec_is_a_value_error():
  def model_fn():
    model = twins.linear_twin().jax_model_fn()
    return jc.FunctionalModel(
        model.initial_weights, model.predict_on_batch, model.loss, {},
        {'x': jax.ShapeDtypeStruct((2,), jnp.float32)})
  with pytest.raises(ValueError, match=r"input_spec: expected keys 'x' and "
                     r"'y'.*missing \['y'\]"):
    _build(model_fn=model_fn)


def test_unknown_optimizer_is_a_type_error():
  with pytest.raises(TypeError, match='optimizer: expected a tff.learning'
                     '.optimizers.Optimizer.*found int'):
    _build(optimizer=3)


def test_bad_client_weighting_is_a_type_error():
  with pytest.raises(TypeError, match='client_weighting: expected'):
    _build(weighting='num_examples')


def test_non_scalar_callable_weight_is_a_value_error():
  # Raised by the core's `finish_client` while jax2tf converts it.
  with pytest.raises(ValueError, match='client_weighting: expected a scalar'):
    _build(weighting=lambda metrics: jnp.ones((2,)))


def test_unknown_backend_is_a_value_error():
  with pytest.raises(ValueError, match="backend: expected one of "
                     r"\('tensorflow', 'jax'\), found 'xla'"):
    _build(backend='xla')


def test_conflicting_loop_arguments_are_a_value_error():
  with pytest.raises(ValueError, match='use_experimental_simulation_loop'):
    _build(use_experimental_simulation_loop=True,
           loop_implementation=tff.learning.LoopImplementation.DATASET_REDUCE)


def test_padded_shape_with_tensorflow_backend_is_a_value_error():
  with pytest.raises(ValueError, match="padded_shape: only backend='jax'"):
    _build(padded_shape=(2, 3))


def test_unconvertible_jax_op_names_the_limitation():
  def model_fn():
    model = twins.mlp_twin().jax_model_fn()
    def gathering_loss(logits, y, mask):  # take_along_axis: an XLA gather.
      per_example = optax.softmax_cross_entropy_with_integer_labels(
          logits, y.reshape(mask.shape))
      return jc.losses.masked_mean(per_example, mask)
    return jc.FunctionalModel(
        model.initial_weights, model.predict_on_batch, gathering_loss,
        model.metrics, model.input_spec)
  with pytest.raises(NotImplementedError, match=(
      r'jax2tf converted it to plain TF ops \(enable_xla=False\).*'
      r'write it with `jax.nn.one_hot` instead')) as raised:
    jaxclient_tff.build_model_delta_client_work(
        model_fn, tff.learning.optimizers.build_sgdm(0.1), twins.NUM_EXAMPLES)
  # Chained to jax2tf's own error.
  assert isinstance(raised.value.__cause__, NotImplementedError)


def test_jax_backend_without_padded_shape_is_a_value_error():
  with pytest.raises(ValueError, match=r"padded_shape: backend='jax' needs "
                     r'\(num_batches, batch_size\).*found None'):
    _build(backend='jax')


def test_jax_backend_with_keras_optimizer_is_a_type_error():
  with pytest.raises(TypeError, match="backend='jax' takes an optax"):
    _build(optimizer=lambda: tf.keras.optimizers.SGD(0.1), backend='jax',
           padded_shape=(2, 3))


# An optimizer builder passed uncalled would be taken for the Keras
# fallback's no-arg callable and fail deep inside TFF's tracing.
UNCALLED_BUILDERS = [  # (builder, its name, what it returns, wrapped?)
    (optax.sgd, 'optax.sgd', 'optax.GradientTransformation', False),
    (optax.adam, 'optax.adam', 'optax.GradientTransformation', False),
    (optax.inject_hyperparams(optax.sgd), 'optax.sgd',
     'optax.GradientTransformation', True),
    (functools.partial(optax.sgd, 0.1), 'optax.sgd',
     'optax.GradientTransformation', True),
    (jc.optimizers.build_sgdm, 'jaxclient.optimizers.build_sgdm',
     'optax.GradientTransformation', False),
    (tff.learning.optimizers.build_sgdm,
     'tff.learning.optimizers.build_sgdm',
     'tff.learning.optimizers.Optimizer', False),
]


@pytest.mark.parametrize('backend', ['tensorflow', 'jax'])
@pytest.mark.parametrize('builder,name,returns,wrapped', UNCALLED_BUILDERS,
                         ids=['sgd', 'adam', 'inject_hyperparams', 'partial',
                              'jaxclient', 'tff'])
def test_uncalled_optimizer_builder_is_a_type_error(builder, name, returns,
                                                    wrapped, backend):
  padded_shape = (2, 3) if backend == 'jax' else None
  found = (rf'a wrapper of `{re.escape(name)}` \(.*\)' if wrapped else
           rf'`{re.escape(name)}` itself')
  call = 'call it' if wrapped else (
      rf'call it \(e.g. `{re.escape(name)}\(learning_rate=0.1\)`\)')
  with pytest.raises(TypeError, match=(
      rf'^optimizer: found {found}, an optimizer builder that was not '
      rf'called; {call} and pass the {re.escape(returns)} it returns')):
    _build(optimizer=builder, backend=backend, padded_shape=padded_shape)


@pytest.mark.parametrize('optimizer_fn,kind', [
    (lambda: optax.sgd(0.1), 'an optax.GradientTransformation'),
    (lambda: tff.learning.optimizers.build_sgdm(0.1),
     'a tff.learning.optimizers.Optimizer'),
], ids=['optax', 'tff'])
def test_callable_returning_an_optax_or_tff_optimizer_says_pass_it(
    optimizer_fn, kind):
  name = kind.split()[1]
  with pytest.raises(TypeError, match=(
      f'optimizer: the callable returned {re.escape(kind)}; pass the '
      f'{re.escape(name)} itself, not a callable returning it')):
    _build(optimizer=optimizer_fn)
