"""TFF's `ClientWorkProcess` around a client update, as TFF 0.87 builds its
own in `build_model_delta_client_work`; shared by both backends.

`initialize` places the optimizer's hparams at the server; `next(state,
weights@CLIENTS, data@CLIENTS)` broadcasts them, runs the client update at
the clients, aggregates the unfinalized metrics with the metrics aggregator
and returns `MeasuredProcessOutput(state, ClientResult@CLIENTS,
<train=...>@SERVER)`; `get_hparams` / `set_hparams` are the identity on the
state (the state IS the hparams).
"""

import collections

import tensorflow_federated as tff


def build(initial_hparams, client_update_at_clients, weights_type, data_type,
          metrics_aggregation_fn) -> tff.learning.templates.ClientWorkProcess:
  """TFF's process around a client update (shared by the backends).

  `client_update_at_clients(state_type)` returns a function, called in the
  federated context, of `(hparams, weights, data)` placed at clients that
  returns `(ClientResult, unfinalized metrics)` placed at clients.
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
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    state_at_clients = tff.federated_broadcast(state)
    client_result, model_outputs = client_update_at_clients(state_type)(
        state_at_clients, weights, client_data)
    train_metrics = metrics_aggregation_fn(model_outputs)
    measurements = tff.federated_zip(
        collections.OrderedDict(train=train_metrics))
    return tff.templates.MeasuredProcessOutput(state, client_result,
                                               measurements)

  return tff.learning.templates.ClientWorkProcess(
      init_fn, next_fn, get_hparams_fn=get_hparams_fn,
      set_hparams_fn=set_hparams_fn)
