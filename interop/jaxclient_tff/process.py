"""`build_model_delta_client_work`: a TFF `ClientWorkProcess` over a
`jaxclient.FunctionalModel`, built as TFF 0.87 builds its own (the process
around the client update is in `client_work_process`).

With `backend='tensorflow'` the client update is a
`tff.tensorflow.computation` over a `tff.SequenceType` of batches: a loop over
the dataset (`Dataset.reduce`, or a Python iterator loop in a `tf.function`
for the experimental simulation loop, as TFF's `LoopImplementation`) whose
body is the jax2tf-converted JAX gradient step followed by the optimizer's
step. It runs on TFF's stock C++ runtime. `backend='jax'` is in `jax_backend`.
"""

from __future__ import annotations

from collections.abc import Callable

import optax
import tensorflow as tf
import tensorflow_federated as tff

import jaxclient as jc
from jaxclient import client_work as jc_client_work
from jaxclient_tff import client_work_process
from jaxclient_tff import conversion
from jaxclient_tff import jax2tf_step
from jaxclient_tff import jax_backend
from jaxclient_tff import keras_fallback
from jaxclient_tff import optimizers

_BACKENDS = ('tensorflow', 'jax')


def resolve_model_fn(model_fn) -> jc.FunctionalModel:
  """Calls `model_fn` (twice, as the core does, to reject a shared model)."""
  if isinstance(model_fn, jc.FunctionalModel):
    raise TypeError(
        'model_fn: expected a no-arg callable returning a new '
        'jaxclient.FunctionalModel on every call, found a FunctionalModel '
        'instance; pass `lambda: model` only if it builds a new one.')
  return jc_client_work.resolve_model(model_fn)


def resolve_client_weighting(client_weighting):
  """`tff.learning.ClientWeighting` -> `jc.ClientWeighting`; jaxclient's
  enum and callables (on the unfinalized metrics) pass through."""
  if isinstance(client_weighting, tff.learning.ClientWeighting):
    return jc.ClientWeighting[client_weighting.name]
  if isinstance(client_weighting, jc.ClientWeighting) or callable(
      client_weighting):
    return client_weighting
  raise TypeError(
      'client_weighting: expected a tff.learning.ClientWeighting, a '
      'jaxclient.ClientWeighting or a callable on the client metrics, found '
      f'{client_weighting!r}.')


def resolve_loop(use_experimental_simulation_loop: bool,
                 loop_implementation) -> tff.learning.LoopImplementation:
  """TFF's loop choice from either the pre-0.84 flag or the 0.84+ enum."""
  if loop_implementation is None:
    return (tff.learning.LoopImplementation.DATASET_ITERATOR
            if use_experimental_simulation_loop else
            tff.learning.LoopImplementation.DATASET_REDUCE)
  if not isinstance(loop_implementation, tff.learning.LoopImplementation):
    raise TypeError('loop_implementation: expected a '
                    'tff.learning.LoopImplementation, found '
                    f'{loop_implementation!r}.')
  if use_experimental_simulation_loop and (
      loop_implementation is not
      tff.learning.LoopImplementation.DATASET_ITERATOR):
    raise ValueError(
        'use_experimental_simulation_loop=True asks for DATASET_ITERATOR but '
        f'loop_implementation is {loop_implementation}; give one of them.')
  return loop_implementation


def _training_loop(loop: tff.learning.LoopImplementation):
  """`(reduce_fn, dataset, initial_state_fn) -> final state`, as TFF's."""
  if loop is tff.learning.LoopImplementation.DATASET_REDUCE:
    return lambda reduce_fn, dataset, initial_state_fn: dataset.reduce(
        initial_state_fn(), reduce_fn)

  def iterate(reduce_fn, dataset, initial_state_fn):
    state = initial_state_fn()
    for batch in iter(dataset):
      state = reduce_fn(state, batch)
    return state
  return iterate


def optimizer_adapter(optimizer, model: jc.FunctionalModel,
                      layout: conversion.WeightsLayout):
  """The adapter (see `optimizers`) for any of the three kinds."""
  if isinstance(optimizer, tff.learning.optimizers.Optimizer):
    return optimizers.TffOptimizer(optimizer)
  if isinstance(optimizer, optax.GradientTransformation):
    return optimizers.OptaxOptimizer(optimizer, layout.trainable,
                                     model.initial_weights.trainable)
  if callable(optimizer) or optimizers.is_keras_optimizer(optimizer):
    return keras_fallback.KerasOptimizer(optimizer, layout.trainable)
  raise TypeError(
      'optimizer: expected a tff.learning.optimizers.Optimizer, an '
      'optax.GradientTransformation or a no-arg callable returning a '
      f'tf.keras optimizer, found {type(optimizer).__name__}.')


def _client_update_fn(converted: jax2tf_step.ConvertedModel, bound_optimizer,
                      loop: tff.learning.LoopImplementation) -> Callable:
  """The `tf.function` training one client on its dataset."""
  training_loop = _training_loop(loop)

  @tf.function
  def client_update(hparams, weights, dataset):
    initial_trainable = list(weights.trainable)
    non_trainable = list(weights.non_trainable)

    # The loop state holds tuples: `tf.data` would stack a list into one
    # tensor.
    def initial_state():
      return (tuple(initial_trainable),
              bound_optimizer.init(initial_trainable, hparams),
              tuple(converted.initial_metric_states()))

    def reduce_fn(state, batch):
      trainable, optimizer_state, metric_states = state
      grads, metric_states = converted.gradients_and_metrics(
          trainable, non_trainable, metric_states, batch['x'], batch['y'])
      optimizer_state, trainable = bound_optimizer.step(
          optimizer_state, trainable, grads)
      return tuple(trainable), optimizer_state, tuple(metric_states)

    final_trainable, _, metric_states = training_loop(reduce_fn, dataset,
                                                      initial_state)
    update, weight, metric_states = converted.finish(
        initial_trainable, final_trainable, metric_states)
    return (tff.learning.templates.ClientResult(update=update,
                                                update_weight=weight),
            converted.unfinalized(metric_states))

  return client_update


def build_model_delta_client_work(
    model_fn: Callable[[], jc.FunctionalModel],
    optimizer,
    client_weighting,
    metrics_aggregator=None,
    *,
    use_experimental_simulation_loop: bool = False,
    loop_implementation: tff.learning.LoopImplementation | None = None,
    backend: str = 'tensorflow',
    padded_shape: tuple[int, int] | None = None,
) -> tff.learning.templates.ClientWorkProcess:
  """Builds TFF's model-delta client work over a `jaxclient` model.

  A drop-in for `tff.learning.templates.build_model_delta_client_work`: the
  same type signatures as TFF's own process for a Keras twin of the model
  (weights are flat lists in creation order, see `conversion`), the same
  numbers, plus `num_non_finite_clients` in the train measurements.

  Args:
    model_fn: a no-arg callable returning a new `jc.FunctionalModel` on every
      call; its `input_spec` must have `'x'` and `'y'`.
    optimizer: a `tff.learning.optimizers.Optimizer`; an
      `optax.GradientTransformation` (hparams from `optax.inject_hyperparams`,
      else none); or a no-arg callable returning a `tf.keras` optimizer (the
      Keras fallback: no hparams, weights updated by `apply_gradients`).
    client_weighting: a `tff.learning.ClientWeighting` or
      `jc.ClientWeighting` (or a callable on a client's unfinalized metrics).
    metrics_aggregator: TFF's contract, `(metric_finalizers) -> federated
      computation` of the clients' unfinalized metrics; default
      `tff.learning.metrics.sum_then_finalize`.
    use_experimental_simulation_loop: iterate the dataset in a Python loop
      (TFF's `DATASET_ITERATOR`) instead of `Dataset.reduce`.
    loop_implementation: the same choice as a `tff.learning.LoopImplementation`
      (TFF 0.84+ name).
    backend: `'tensorflow'` (jax2tf, runs on TFF's C++ runtime) or `'jax'`
      (a `tff.jax.computation` over padded tensors; see `jax_backend`).
    padded_shape: `(num_batches, batch_size)` of the padded client data;
      required by, and only by, `backend='jax'`.

  Returns:
    A `tff.learning.templates.ClientWorkProcess`.
  """
  if backend not in _BACKENDS:
    raise ValueError(f'backend: expected one of {_BACKENDS}, found '
                     f'{backend!r}.')
  model = resolve_model_fn(model_fn)
  data_element_type = conversion.element_type(model)
  weighting = resolve_client_weighting(client_weighting)
  loop = resolve_loop(use_experimental_simulation_loop, loop_implementation)
  if metrics_aggregator is None:
    metrics_aggregator = tff.learning.metrics.sum_then_finalize
  converted = jax2tf_step.ConvertedModel(model, weighting)
  metrics_aggregation_fn = metrics_aggregator(converted.metric_finalizers())
  weights_type = converted.weights.tff_type()

  data_type = tff.SequenceType(data_element_type)
  if backend == 'jax':
    return jax_backend.build(model, optimizer, weighting, converted,
                             metrics_aggregation_fn, padded_shape, data_type)
  if padded_shape is not None:
    raise ValueError("padded_shape: only backend='jax' takes padded client "
                     f'data; found padded_shape={padded_shape!r} with '
                     "backend='tensorflow'.")

  adapter = optimizer_adapter(optimizer, model, converted.weights)

  def client_update_at_clients(state_type):
    @tff.tensorflow.computation(state_type, weights_type, data_type)
    def client_update(hparams, weights, dataset):
      bound_optimizer = adapter.build()
      return _client_update_fn(converted, bound_optimizer, loop)(
          hparams, weights, dataset)
    return lambda *args: tff.federated_map(client_update, args)

  try:
    return client_work_process.build(adapter.initial_hparams,
                                     client_update_at_clients, weights_type,
                                     data_type, metrics_aggregation_fn)
  except NotImplementedError as e:
    if 'enable_xla=False' not in str(e):
      raise
    raise NotImplementedError(
        "backend='tensorflow': the model's JAX code uses an operation that "
        'jax2tf cannot convert to plain TF ops (enable_xla=False), the only '
        "ops TFF 0.87's runtime executes. A common one is the gather of "
        '`take_along_axis` (e.g. in `optax.softmax_cross_entropy_with_'
        'integer_labels`); write it with `jax.nn.one_hot` instead. jax2tf '
        f'said: {e}') from e
