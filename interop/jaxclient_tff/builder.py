"""`build_model_delta_client_work`: a TFF `ClientWorkProcess` over a
`jaxclient.FunctionalModel`, built as TFF 0.87 builds its own.

The builder checks and resolves the arguments (the model from `model_fn`,
the client weighting, the dataset loop, the metrics aggregation), converts
the model's JAX functions for TF (`converted_model`) and hands the resolved
`tff_process.ClientWorkParts` to the backend that `BACKENDS` names:
`tf_backend` (`'tensorflow'`, jax2tf on TFF's C++ runtime) or `jax_backend`
(`'jax'`, a `tff.jax.computation`).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow_federated as tff

import jaxclient as jc
from jaxclient import client as jc_client
from jaxclient_tff import (
  conversion,
  converted_model,
  jax_backend,
  optimizer_adapters,
  tf_backend,
  tff_process,
)

__all__ = [
  'BACKENDS',
  'build_model_delta_client_work',
  'resolve_client_weighting',
  'resolve_loop',
  'resolve_model_fn',
]

# Backend name -> `(ClientWorkParts) -> tff.learning.templates.
# ClientWorkProcess`.
BACKENDS = {'tensorflow': tf_backend.build, 'jax': jax_backend.build}


def resolve_model_fn(model_fn) -> jc.FunctionalModel:
  """Calls `model_fn` (twice, as the core does, to reject a shared model)."""
  if isinstance(model_fn, jc.FunctionalModel):
    raise TypeError(
      'model_fn: expected a no-arg callable returning a new '
      'jaxclient.FunctionalModel on every call, found a FunctionalModel '
      'instance; pass `lambda: model` only if it builds a new one.'
    )
  return jc_client.resolve_model(model_fn)


def resolve_client_weighting(client_weighting):
  """`tff.learning.ClientWeighting` -> `jc.ClientWeighting`; jaxclient's
  enum and callables (on the unfinalized metrics) pass through."""
  if isinstance(client_weighting, tff.learning.ClientWeighting):
    return jc.ClientWeighting[client_weighting.name]
  if isinstance(client_weighting, jc.ClientWeighting) or callable(
    client_weighting
  ):
    return client_weighting
  raise TypeError(
    'client_weighting: expected a tff.learning.ClientWeighting, a '
    'jaxclient.ClientWeighting or a callable on the client metrics, found '
    f'{client_weighting!r}.'
  )


def resolve_loop(
  use_experimental_simulation_loop: bool, loop_implementation
) -> tff.learning.LoopImplementation:
  """TFF's loop choice from either the pre-0.84 flag or the 0.84+ enum."""
  if loop_implementation is None:
    return (
      tff.learning.LoopImplementation.DATASET_ITERATOR
      if use_experimental_simulation_loop
      else tff.learning.LoopImplementation.DATASET_REDUCE
    )
  if not isinstance(loop_implementation, tff.learning.LoopImplementation):
    raise TypeError(
      'loop_implementation: expected a '
      'tff.learning.LoopImplementation, found '
      f'{loop_implementation!r}.'
    )
  if use_experimental_simulation_loop and (
    loop_implementation is not tff.learning.LoopImplementation.DATASET_ITERATOR
  ):
    raise ValueError(
      'use_experimental_simulation_loop=True asks for DATASET_ITERATOR but '
      f'loop_implementation is {loop_implementation}; give one of them.'
    )
  return loop_implementation


def _backend_build(backend: str) -> Callable:
  if backend not in BACKENDS:
    raise ValueError(
      f'backend: expected one of {tuple(BACKENDS)}, found {backend!r}.'
    )
  return BACKENDS[backend]


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
      Keras fallback: no hparams, weights updated by `apply_gradients`). An
      optimizer builder passed uncalled (`optax.sgd`, a
      `jc.optimizers.build_*`, a `tff.learning.optimizers.build_*`) is a
      `TypeError`, not a Keras fallback.
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

  Raises:
    TypeError, ValueError: a bad argument, named in the message.
    NotImplementedError: jax2tf cannot convert the model's JAX code to plain
      TF ops (see `converted_model`).
  """
  backend_build = _backend_build(backend)
  optimizer_adapters.reject_uncalled_builder(optimizer)
  model = resolve_model_fn(model_fn)
  data_type = tff.SequenceType(conversion.element_type(model))
  weighting = resolve_client_weighting(client_weighting)
  loop = resolve_loop(use_experimental_simulation_loop, loop_implementation)
  converted = converted_model.ConvertedModel(model, weighting)
  aggregator = (
    tff.learning.metrics.sum_then_finalize
    if metrics_aggregator is None
    else metrics_aggregator
  )
  with converted_model.surface_unconvertible():
    return backend_build(
      tff_process.ClientWorkParts(
        model=model,
        optimizer=optimizer,
        client_weighting=weighting,
        loop=loop,
        padded_shape=padded_shape,
        converted=converted,
        data_type=data_type,
        metrics_aggregation_fn=aggregator(converted.metric_finalizers()),
      )
    )
