"""TFF 0.87's own `tff.learning.templates.build_model_delta_client_work` on
TFF's stock C++ runtime: a Keras twin of the workload's model (same layers,
same initial weights) via `tff.learning.models.from_keras_model`, TFF's SGD,
clients' data as `tf.data` datasets of the same batches.

`loop` names the `tff.learning.LoopImplementation`: peer `tff` uses the
default (`DATASET_REDUCE`), `tff_iterator` the other one
(`DATASET_ITERATOR`).
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from benchmarks import workloads
from benchmarks.peers import Peer

def keras_model(workload: workloads.Workload) -> tf.keras.Model:
  """The workload's layers in Keras, initialized from `workload.init()`."""
  layers = [tf.keras.layers.InputLayer(input_shape=workload.example_shape)]
  for layer in workload.layers:
    if layer.kind == 'conv':
      layers.append(tf.keras.layers.Conv2D(layer.units, 3, padding='valid',
                                           activation=layer.activation))
    elif layer.kind == 'maxpool':
      layers.append(tf.keras.layers.MaxPool2D(2))
    else:
      if len(workload.example_shape) > 1 and not any(
          isinstance(l, tf.keras.layers.Flatten) for l in layers):
        layers.append(tf.keras.layers.Flatten())
      layers.append(tf.keras.layers.Dense(layer.units,
                                          activation=layer.activation))
  model = tf.keras.Sequential(layers)
  model.set_weights(workloads.flat_weights(workload.init()))
  return model


def input_spec(workload):
  return collections.OrderedDict(
      x=tf.TensorSpec((None,) + workload.example_shape, tf.float32),
      y=tf.TensorSpec((None,), tf.int32))


def client_datasets(data):
  """One `tf.data.Dataset` of the client's batches per client."""
  batch_size = data['y'].shape[2]
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=x.reshape((-1,) + x.shape[2:]), y=y.reshape(-1))).batch(batch_size)
          for x, y in zip(data['x'], data['y'])]


def build(workload, data, learning_rate, loop='DATASET_REDUCE') -> Peer:
  def model_fn():
    return tff.learning.models.from_keras_model(
        keras_model(workload), input_spec=input_spec(workload),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))

  process = tff.learning.templates.build_model_delta_client_work(
      model_fn, tff.learning.optimizers.build_sgdm(learning_rate=learning_rate),
      tff.learning.ClientWeighting.NUM_EXAMPLES,
      loop_implementation=tff.learning.LoopImplementation[loop])
  return federated_peer(process, workload, data)


def federated_peer(process, workload, data) -> Peer:
  """A `Peer` running `process.next` on TFF's runtime with every client
  starting from the workload's initial weights (TFF clients' weights are
  CLIENTS-placed: one copy per client)."""
  num_clients = data['y'].shape[0]
  weights = tff.learning.models.ModelWeights(
      trainable=workloads.flat_weights(workload.init()), non_trainable=[])
  datasets = client_datasets(data)
  state = process.initialize()

  def run():
    return process.next(state, [weights] * num_clients, datasets)

  def mean_update(output):
    updates = [client.update for client in output.result]
    client_weights = [client.update_weight for client in output.result]
    leaves = [np.stack(leaf) for leaf in zip(*updates)]
    stacked = [{'kernel': k, 'bias': b} for k, b in zip(leaves[::2],
                                                        leaves[1::2])]
    return workloads.weighted_mean_update(stacked, client_weights)

  return Peer(run, mean_update)
