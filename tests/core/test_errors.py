"""Bad input fails loudly, naming the field, the expected and the found value."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxclient as jc
from tests.core import toy_models

X = np.ones((4, 2), np.float32)
Y = np.ones((4, 1), np.float32)


@pytest.fixture(name='process')
def fixture_process():
  return jc.build_model_delta_client_work(
      toy_models.linear_regression, jc.optimizers.build_sgdm(0.1),
      jc.ClientWeighting.NUM_EXAMPLES)


@pytest.fixture(name='data')
def fixture_data():
  return jc.data.pack([{'x': X, 'y': Y}] * 2, batch_size=3)


WEIGHTS = toy_models.linear_regression().initial_weights


def test_weights_of_wrong_shape_name_the_leaf_and_shapes(process, data):
  bad = WEIGHTS._replace(trainable={'bias': jnp.zeros((1,)),
                                    'kernel': jnp.zeros((3, 1))})
  with pytest.raises(ValueError, match=re.escape(
      "weights.trainable['kernel']: expected shape (2, 1) or, one per client, "
      '(2, 2, 1), found shape (3, 1) float32')):
    process.next(process.initialize(), bad, data)


def test_weights_of_wrong_dtype(process, data):
  bad = WEIGHTS._replace(trainable={'bias': jnp.zeros((1,), jnp.int32),
                                    'kernel': jnp.zeros((2, 1))})
  with pytest.raises(ValueError, match=re.escape(
      "weights.trainable['bias']: expected dtype float32, found shape (1,) "
      'int32')):
    process.next(process.initialize(), bad, data)


def test_weights_of_wrong_structure(process, data):
  bad = WEIGHTS._replace(trainable={'kernel': jnp.zeros((2, 1))})
  with pytest.raises(ValueError, match="weights: structure does not match"):
    process.next(process.initialize(), bad, data)


def test_weights_not_model_weights(process, data):
  with pytest.raises(TypeError, match='weights: expected a jaxclient.ModelWeights'
                     ', found dict'):
    process.next(process.initialize(), dict(WEIGHTS.trainable), data)


def test_per_client_weights_with_wrong_client_count(process, data):
  three = jax.tree.map(lambda v: jnp.stack([v] * 3), WEIGHTS)
  with pytest.raises(ValueError, match=re.escape(
      "weights.trainable['bias']: expected shape (1,) or, one per client, "
      '(2, 1), found shape (3, 1) float32')):
    process.next(process.initialize(), three, data)


@pytest.mark.parametrize('key', ['x', 'y', 'mask'])
def test_batch_missing_a_key(process, data, key):
  del data[key]
  with pytest.raises(ValueError, match=re.escape(
      f"client_data: expected exactly keys ['x', 'y', 'mask']; missing "
      f"['{key}'], unexpected []")):
    process.next(process.initialize(), WEIGHTS, data)


def test_batch_with_an_extra_key_is_not_silently_dropped(process, data):
  data['weights'] = data['mask']
  with pytest.raises(ValueError, match=re.escape("unexpected ['weights']")):
    process.next(process.initialize(), WEIGHTS, data)


def test_mask_of_wrong_shape(process, data):
  data['mask'] = data['mask'][..., None]
  with pytest.raises(ValueError, match=re.escape(
      "client_data['mask']: expected a bool array of shape [clients, batches, "
      'batch_size], found shape (2, 2, 3, 1) bool')):
    process.next(process.initialize(), WEIGHTS, data)


def test_mask_of_wrong_dtype(process, data):
  data['mask'] = data['mask'].astype(np.float32)
  with pytest.raises(ValueError, match=re.escape(
      "client_data['mask']: expected a bool array of shape [clients, batches, "
      'batch_size], found shape (2, 2, 3) float32')):
    process.next(process.initialize(), WEIGHTS, data)


def test_x_that_disagrees_with_input_spec(process, data):
  data['x'] = np.ones((2, 2, 3, 5), np.float32)
  with pytest.raises(ValueError, match=re.escape(
      "client_data['x']: expected shape (2, 2, 3, 2) float32 ([clients, "
      "batches, batch_size] + input_spec['x']), found shape (2, 2, 3, 5) "
      'float32')):
    process.next(process.initialize(), WEIGHTS, data)


def test_y_of_wrong_dtype(process, data):
  data['y'] = data['y'].astype(np.int32)
  with pytest.raises(ValueError, match=re.escape(
      "client_data['y']: expected shape (2, 2, 3, 1) float32")):
    process.next(process.initialize(), WEIGHTS, data)


def test_hparams_with_missing_or_extra_keys(process):
  state = process.initialize()
  with pytest.raises(ValueError, match=re.escape(
      "hparams: expected keys ['learning_rate']; missing ['learning_rate'], "
      "unexpected ['lr']")):
    process.set_hparams(state, {'lr': 0.1})
  with pytest.raises(ValueError, match=re.escape(
      "hparams: expected keys ['learning_rate']; missing [], unexpected "
      "['momentum']")):
    process.set_hparams(state, {'learning_rate': 0.1, 'momentum': 0.9})
  with pytest.raises(ValueError, match=re.escape(
      "hparams['learning_rate']: expected a scalar, found shape (2,)")):
    process.set_hparams(state, {'learning_rate': np.ones(2)})


def test_state_with_wrong_keys_is_rejected_by_next(process, data):
  with pytest.raises(ValueError, match=re.escape(
      "state: expected keys ['learning_rate']; missing ['learning_rate']")):
    process.next({}, WEIGHTS, data)


def test_non_callable_model_fn():
  with pytest.raises(TypeError, match=re.escape(
      'model: expected a jaxclient.FunctionalModel or a no-arg callable '
      'returning one, found int')):
    jc.build_model_delta_client_work(3, optax.sgd(0.1),
                                     jc.ClientWeighting.UNIFORM)


def test_model_fn_returning_something_else():
  with pytest.raises(TypeError, match=re.escape(
      'model_fn: expected to return a jaxclient.FunctionalModel, found str')):
    jc.build_model_delta_client_work(lambda: 'model', optax.sgd(0.1),
                                     jc.ClientWeighting.UNIFORM)


def test_model_fn_returning_the_same_model_twice():
  model = toy_models.linear_regression()
  with pytest.raises(ValueError, match='returned the same model object'):
    jc.build_model_delta_client_work(lambda: model, optax.sgd(0.1),
                                     jc.ClientWeighting.UNIFORM)


def test_optimizer_that_is_not_optax():
  with pytest.raises(TypeError, match=re.escape(
      'optimizer: expected an optax.GradientTransformation, found str')):
    jc.build_model_delta_client_work(toy_models.linear_regression, 'sgd',
                                     jc.ClientWeighting.UNIFORM)


def test_unknown_client_weighting():
  with pytest.raises(TypeError, match='client_weighting: expected'):
    jc.build_model_delta_client_work(toy_models.linear_regression,
                                     optax.sgd(0.1), 'num_examples')


def test_functional_model_validates_its_fields():
  with pytest.raises(TypeError, match=re.escape(
      'FunctionalModel.initial_weights: expected a jaxclient.ModelWeights, '
      'found dict')):
    jc.FunctionalModel({}, lambda *a: 0, lambda *a: 0,
                       input_spec={'x': jax.ShapeDtypeStruct((1,), jnp.float32)})
  with pytest.raises(ValueError, match='reserved'):
    jc.FunctionalModel(WEIGHTS, lambda *a: 0, lambda *a: 0,
                       {'loss': jc.metrics.mean_loss()},
                       {'x': jax.ShapeDtypeStruct((1,), jnp.float32)})
