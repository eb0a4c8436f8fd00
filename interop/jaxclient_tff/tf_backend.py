"""`backend='tensorflow'`: the client update as a `tff.tensorflow.computation`.

The client update runs over a `tff.SequenceType` of batches, with TFF's two
loops (`tff.learning.LoopImplementation`): `Dataset.reduce`
(`DATASET_REDUCE`), or a Python iterator loop in a `tf.function`
(`DATASET_ITERATOR`, the experimental simulation loop). The loop body is the
jax2tf-converted JAX gradient step (`converted_model`) followed by the
optimizer's step (`optimizer_adapters`); after the loop, the converted
`finish` computes the delta, the weight and the metrics. It runs on TFF's
stock C++ runtime.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff

from jaxclient_tff import converted_model, optimizer_adapters, tff_process

__all__ = ['build', 'training_loop']


def training_loop(loop: tff.learning.LoopImplementation) -> Callable:
  """`(reduce_fn, dataset, initial_state_fn) -> final state`, as TFF's."""
  if loop is tff.learning.LoopImplementation.DATASET_REDUCE:
    return lambda reduce_fn, dataset, initial_state_fn: dataset.reduce(
      initial_state_fn(), reduce_fn
    )

  def iterate(reduce_fn, dataset, initial_state_fn):
    state = initial_state_fn()
    for batch in iter(dataset):
      state = reduce_fn(state, batch)
    return state

  return iterate


def _client_update_fn(
  converted: converted_model.ConvertedModel,
  bound_optimizer: optimizer_adapters.BoundOptimizer,
  loop: tff.learning.LoopImplementation,
) -> Callable:
  """The `tf.function` training one client on its dataset."""
  run_loop = training_loop(loop)

  @tf.function
  def client_update(hparams, weights, dataset):
    initial_trainable = list(weights.trainable)
    non_trainable = list(weights.non_trainable)

    # The loop state holds tuples: `tf.data` would stack a list into one
    # tensor.
    def initial_state():
      return (
        tuple(initial_trainable),
        bound_optimizer.init(initial_trainable, hparams),
        tuple(converted.initial_metric_states()),
      )

    def reduce_fn(state, batch):
      trainable, optimizer_state, metric_states = state
      grads, metric_states = converted.gradients_and_metrics(
        trainable, non_trainable, metric_states, batch['x'], batch['y']
      )
      optimizer_state, trainable = bound_optimizer.step(
        optimizer_state, trainable, grads
      )
      return tuple(trainable), optimizer_state, tuple(metric_states)

    final_trainable, _, metric_states = run_loop(
      reduce_fn, dataset, initial_state
    )
    update, weight, metric_states = converted.finish(
      initial_trainable, final_trainable, metric_states
    )
    return (
      tff.learning.templates.ClientResult(update=update, update_weight=weight),
      converted.unfinalized(metric_states),
    )

  return client_update


def build(
  parts: tff_process.ClientWorkParts,
) -> tff.learning.templates.ClientWorkProcess:
  """The `ClientWorkProcess` of `backend='tensorflow'`.

  Raises:
    ValueError: `parts.padded_shape` is given (only `backend='jax'` pads).
    TypeError: the optimizer is of no kind `optimizer_adapters` takes.
    NotImplementedError: jax2tf cannot convert the model's JAX code to plain
      TF ops (`converted_model.to_tf`).
  """
  if parts.padded_shape is not None:
    raise ValueError(
      "padded_shape: only backend='jax' takes padded client "
      f'data; found padded_shape={parts.padded_shape!r} with '
      "backend='tensorflow'."
    )
  converted = parts.converted
  adapter = optimizer_adapters.adapter_for(
    parts.optimizer, parts.model, converted.weights
  )

  def client_update_at_clients(state_type):
    @tff.tensorflow.computation(
      state_type, converted.weights.tff_type(), parts.data_type
    )
    def client_update(hparams, weights, dataset):
      bound_optimizer = adapter.build()
      return _client_update_fn(converted, bound_optimizer, parts.loop)(
        hparams, weights, dataset
      )

    return lambda *args: tff.federated_map(client_update, args)

  return tff_process.build_process(
    adapter.initial_hparams, client_update_at_clients, parts
  )
