"""TFF's `ClientWorkProcess` around a client update, and what a backend
builds one from.

`ClientWorkParts` is what the builder resolved and checked, the input of
every backend. `build_process` is the process as TFF 0.87 builds its own in
`build_model_delta_client_work`, shared by both backends: `initialize`
places the optimizer's hparams at the server; `next(state, weights@CLIENTS,
data@CLIENTS)` broadcasts them, runs the client update at the clients,
aggregates the unfinalized metrics with the metrics aggregator and returns
`MeasuredProcessOutput(state, ClientResult@CLIENTS, <train=...>@SERVER)`;
`get_hparams` / `set_hparams` are the identity on the state (the state IS
the hparams).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, NamedTuple

import tensorflow_federated as tff

import jaxclient as jc
from jaxclient_tff import converted_model

__all__ = ['ClientWorkParts', 'build_process']


class ClientWorkParts(NamedTuple):
  """What a backend builds the process from, resolved by the builder.

  Attributes:
    model: the `jc.FunctionalModel` (`model_fn()`).
    optimizer: the optimizer as given (any of the kinds the builder takes).
    client_weighting: a `jc.ClientWeighting` or a callable on a client's
      unfinalized metrics.
    loop: TFF's `LoopImplementation` for the dataset loop.
    padded_shape: `(num_batches, batch_size)` or None, as given.
    converted: the model's JAX functions as TF functions; its `weights`
      layout gives the TFF weights type.
    data_type: the client data type, a `tff.SequenceType` of batches.
    metrics_aggregation_fn: the metrics aggregator applied to the model's
      metric finalizers: a federated computation of the clients'
      unfinalized metrics.
  """

  model: jc.FunctionalModel
  optimizer: Any
  client_weighting: Any
  loop: tff.learning.LoopImplementation
  padded_shape: tuple[int, int] | None
  converted: converted_model.ConvertedModel
  data_type: tff.SequenceType
  metrics_aggregation_fn: Callable[..., Any]


def build_process(
  initial_hparams, client_update_at_clients: Callable, parts: ClientWorkParts
) -> tff.learning.templates.ClientWorkProcess:
  """TFF's process around a client update (shared by the backends).

  Args:
    initial_hparams: the process state, an `OrderedDict` of scalars.
    client_update_at_clients: `(state_type) -> fn`, where `fn`, called in
      the federated context on `(hparams, weights, data)` placed at clients,
      returns `(ClientResult, unfinalized metrics)` placed at clients.
    parts: from the builder (the weights and data types and the metrics
      aggregation).
  """

  @tff.federated_computation
  def init_fn():
    return tff.federated_value(initial_hparams, tff.SERVER)

  state_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(state_type)
  def get_hparams_fn(state):
    return state

  @tff.tensorflow.computation(state_type, state_type)
  def set_hparams_fn(state, hparams):
    del state
    return hparams

  @tff.federated_computation(
    init_fn.type_signature.result,
    tff.FederatedType(parts.converted.weights.tff_type(), tff.CLIENTS),
    tff.FederatedType(parts.data_type, tff.CLIENTS),
  )
  def next_fn(state, weights, client_data):
    state_at_clients = tff.federated_broadcast(state)
    client_result, model_outputs = client_update_at_clients(state_type)(
      state_at_clients, weights, client_data
    )
    train_metrics = parts.metrics_aggregation_fn(model_outputs)
    measurements = tff.federated_zip(
      collections.OrderedDict(train=train_metrics)
    )
    return tff.templates.MeasuredProcessOutput(
      state, client_result, measurements
    )

  return tff.learning.templates.ClientWorkProcess(
    init_fn,
    next_fn,
    get_hparams_fn=get_hparams_fn,
    set_hparams_fn=set_hparams_fn,
  )
