"""Small `jaxclient.FunctionalModel`s whose gradients `reference.py` knows."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxclient as jc


def linear_params(num_features, num_outputs=1, seed=None):
  if seed is None:
    return {'kernel': np.zeros((num_features, num_outputs), np.float32),
            'bias': np.zeros((num_outputs,), np.float32)}
  rng = np.random.default_rng(seed)
  return {'kernel': rng.normal(size=(num_features, num_outputs)).astype(
      np.float32) * 0.3,
          'bias': rng.normal(size=(num_outputs,)).astype(np.float32) * 0.1}


def _affine(weights, x, training, rng=None):
  del training, rng
  return x @ weights.trainable['kernel'] + weights.trainable['bias']


def _affine_model(params, loss, metrics, y_spec):
  num_features = params['kernel'].shape[0]
  return jc.FunctionalModel(
      initial_weights=jc.ModelWeights(jax.tree.map(jnp.asarray, params), {}),
      predict_on_batch=_affine,
      loss=loss,
      metrics=metrics,
      input_spec={'x': jax.ShapeDtypeStruct((num_features,), jnp.float32),
                  'y': y_spec})


def linear_regression(num_features=2, num_outputs=1, params=None):
  """`x @ kernel + bias` under mean squared error."""
  return _affine_model(
      params or linear_params(num_features, num_outputs),
      jc.losses.mean_squared_error,
      {'mean_squared_error': jc.metrics.mean_squared_error()},
      jax.ShapeDtypeStruct((num_outputs,), jnp.float32))


def softmax_regression(num_features, num_classes, params=None):
  """Softmax regression under sparse categorical cross-entropy."""
  return _affine_model(
      params or linear_params(num_features, num_classes),
      jc.losses.sparse_categorical_crossentropy,
      {'accuracy': jc.metrics.sparse_categorical_accuracy()},
      jax.ShapeDtypeStruct((), jnp.int32))
