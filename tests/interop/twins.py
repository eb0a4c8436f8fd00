"""Twin models, client data and processes shared by the interop tests.

Every model exists twice with the same architecture and initial weights: as
a `jaxclient.FunctionalModel` (ours) and as a Keras model wrapped by
`tff.learning.models.from_keras_model` (TFF's own), so that TFF's own
`build_model_delta_client_work` is the reference for every number.
"""

import collections
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import jaxclient as jc
import jaxclient_tff

BATCH_SIZE = 3
# Client sizes: a short last batch (7 = 3 + 3 + 1), an empty dataset, and
# clients of different sizes.
CLIENT_SIZES = (7, 0, 4, 6)
NUM_EXAMPLES = tff.learning.ClientWeighting.NUM_EXAMPLES


# -- twin models -------------------------------------------------------------

class Twin(collections.namedtuple('Twin', 'name jax_model_fn keras_model_fn '
                                  'initial_weights make_data')):
  """A jaxclient model and its Keras twin, with a data generator."""


def _linear_jax_model(kernel, bias):
  def predict_on_batch(weights, x, training, rng=None):
    del training, rng
    return x @ weights.trainable['kernel'] + weights.trainable['bias']
  return jc.FunctionalModel(
      jc.ModelWeights({'kernel': jnp.asarray(kernel),
                       'bias': jnp.asarray(bias)}, {}),
      predict_on_batch, jc.losses.mean_squared_error, {},
      {'x': jax.ShapeDtypeStruct((2,), jnp.float32),
       'y': jax.ShapeDtypeStruct((1,), jnp.float32)})


def _keras_model(keras_layers, weights, loss, input_spec, metrics=()):
  model = tf.keras.Sequential(keras_layers)
  model.set_weights(weights)
  return tff.learning.models.from_keras_model(
      model, loss=loss, input_spec=input_spec, metrics=list(metrics))


def _linear_data(seed, sizes=CLIENT_SIZES):
  rng = np.random.default_rng(seed)
  clients = []
  for n in sizes:
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x @ np.array([[1.5], [-2.0]], np.float32) + 0.5 +
         0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    clients.append({'x': x, 'y': y})
  return clients


@functools.cache
def linear_twin() -> Twin:
  rng = np.random.default_rng(1)
  kernel = rng.normal(size=(2, 1)).astype(np.float32)
  bias = np.array([0.25], np.float32)
  input_spec = collections.OrderedDict(
      x=tf.TensorSpec([None, 2], tf.float32),
      y=tf.TensorSpec([None, 1], tf.float32))
  return Twin(
      'linear', lambda: _linear_jax_model(kernel, bias),
      lambda: _keras_model([tf.keras.layers.Dense(1, input_shape=(2,))],
                           [kernel, bias], tf.keras.losses.MeanSquaredError(),
                           input_spec),
      tff.learning.models.ModelWeights([kernel, bias], []), _linear_data)


class _Mlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    hidden = nn.relu(nn.Dense(5, name='hidden')(x))
    return nn.Dense(3, name='logits')(hidden)


def _mlp_data(seed, sizes=CLIENT_SIZES):
  rng = np.random.default_rng(seed)
  return [{'x': rng.normal(size=(n, 4)).astype(np.float32),
           'y': rng.integers(0, 3, size=(n, 1)).astype(np.int32)}
          for n in sizes]


@functools.cache
def mlp_twin() -> Twin:
  sample_x = np.zeros((1, 4), np.float32)
  sample_y = np.zeros((1, 1), np.int32)

  def jax_model_fn():
    return jc.models.from_flax(
        _Mlp(), sample_x, jc.losses.sparse_categorical_crossentropy,
        {'sparse_categorical_accuracy':
         jc.metrics.sparse_categorical_accuracy()},
        rng=jax.random.PRNGKey(3), sample_y=sample_y)

  params = jax_model_fn().initial_weights.trainable
  weights = [np.asarray(params[layer][name])
             for layer in ('hidden', 'logits') for name in ('kernel', 'bias')]
  input_spec = collections.OrderedDict(
      x=tf.TensorSpec([None, 4], tf.float32),
      y=tf.TensorSpec([None, 1], tf.int32))

  def keras_model_fn():
    return _keras_model(
        [tf.keras.layers.Dense(5, activation='relu', input_shape=(4,)),
         tf.keras.layers.Dense(3)], weights,
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec, [tf.keras.metrics.SparseCategoricalAccuracy()])

  return Twin('mlp', jax_model_fn, keras_model_fn,
              tff.learning.models.ModelWeights(weights, []), _mlp_data)


TWINS = {'linear': linear_twin, 'mlp': mlp_twin}


def as_datasets(clients, batch_size=BATCH_SIZE):
  """TFF client data: one `tf.data.Dataset` of batches per client."""
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=c['x'], y=c['y'])).batch(batch_size) for c in clients]


# -- processes, built once per configuration ---------------------------------

OPTIMIZERS = {
    'sgd': lambda: tff.learning.optimizers.build_sgdm(learning_rate=0.1),
    'sgdm': lambda: tff.learning.optimizers.build_sgdm(learning_rate=0.1,
                                                       momentum=0.9),
    'adam': lambda: tff.learning.optimizers.build_adam(learning_rate=0.05),
    'adagrad': lambda: tff.learning.optimizers.build_adagrad(
        learning_rate=0.1),
    'rmsprop': lambda: tff.learning.optimizers.build_rmsprop(
        learning_rate=0.05),
    'yogi': lambda: tff.learning.optimizers.build_yogi(learning_rate=0.05),
    'adamw': lambda: tff.learning.optimizers.build_adamw(learning_rate=0.05),
}


@functools.cache
def tff_process(twin_name, optimizer_name, weighting=NUM_EXAMPLES):
  return tff.learning.templates.build_model_delta_client_work(
      TWINS[twin_name]().keras_model_fn, OPTIMIZERS[optimizer_name](),
      weighting)


@functools.cache
def our_process(twin_name, optimizer_name, weighting=NUM_EXAMPLES):
  return jaxclient_tff.build_model_delta_client_work(
      TWINS[twin_name]().jax_model_fn, OPTIMIZERS[optimizer_name](),
      weighting)


def run_both(ours, theirs, twin, seed=0, state_fn=None):
  """Runs both processes on the same clients and weights; returns outputs."""
  clients = twin.make_data(seed)
  data = as_datasets(clients)
  weights = [twin.initial_weights] * len(clients)
  our_state, their_state = ours.initialize(), theirs.initialize()
  if state_fn is not None:
    our_state, their_state = state_fn(ours, our_state), state_fn(
        theirs, their_state)
  return ours.next(our_state, weights, data), theirs.next(
      their_state, weights, data)


def max_abs_difference(ours, theirs):
  """Largest |ours - theirs| over the updates, weights and train metrics,
  after checking that both have the same structure."""
  diffs = [0.0]
  assert len(ours.result) == len(theirs.result)
  for a, b in zip(ours.result, theirs.result):
    assert len(a.update) == len(b.update)
    for u, v in zip(a.update, b.update):
      assert np.shape(u) == np.shape(v) and np.asarray(u).dtype == np.asarray(
          v).dtype
      diffs.append(float(np.max(np.abs(np.asarray(u) - np.asarray(v)),
                                initial=0.0)))
    diffs.append(abs(float(a.update_weight) - float(b.update_weight)))
  ours_train = dict(ours.measurements['train'])
  assert ours_train.pop('num_non_finite_clients') == 0
  theirs_train = theirs.measurements['train']
  assert list(ours_train) == list(theirs_train)
  for name, value in theirs_train.items():
    assert np.asarray(ours_train[name]).dtype == np.asarray(value).dtype, name
    diffs.append(abs(float(ours_train[name]) - float(value)))
  return max(diffs)


def assert_parity(label, ours, theirs, tolerance=1e-5):
  """Asserts `max_abs_difference <= tolerance`; prints it (see with -s)."""
  difference = max_abs_difference(ours, theirs)
  print(f'\nPARITY {label}: max |diff| = {difference:.3g}')
  assert difference <= tolerance, (label, difference)


# backend='jax': enough padded batches of BATCH_SIZE for CLIENT_SIZES' 7.
PADDED_SHAPE = (3, BATCH_SIZE)


@functools.cache
def our_jax_process(twin_name, optimizer_name, weighting=NUM_EXAMPLES):
  """`backend='jax'` (run it in `jaxclient_tff.execution_context()`)."""
  return jaxclient_tff.build_model_delta_client_work(
      TWINS[twin_name]().jax_model_fn, OPTIMIZERS[optimizer_name](),
      weighting, backend='jax', padded_shape=PADDED_SHAPE)
