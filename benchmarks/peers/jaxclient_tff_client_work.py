"""jaxclient_tff with `backend='tensorflow'`: jaxclient's client step
converted with jax2tf, run on TFF's stock C++ runtime over the same
`tf.data` client datasets, initial weights and TFF SGD as TFF's own peer."""

import jaxclient_tff
import tensorflow_federated as tff

from benchmarks.peers import Peer
from benchmarks.peers import jaxclient_client_work
from benchmarks.peers import tff_client_work


def build(workload, data, learning_rate) -> Peer:
  process = jaxclient_tff.build_model_delta_client_work(
      lambda: jaxclient_client_work.functional_model(workload),
      tff.learning.optimizers.build_sgdm(learning_rate=learning_rate),
      tff.learning.ClientWeighting.NUM_EXAMPLES, backend='tensorflow')
  return tff_client_work.federated_peer(process, workload, data)
