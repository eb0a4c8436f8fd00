"""jaxclient_tff on the same `tf.data` client datasets, initial weights and
TFF SGD as TFF's own peer.

`backend='tensorflow'` (peer `jaxclient_tff`): jaxclient's client step
converted with jax2tf, run on TFF's stock C++ runtime.

`backend='jax'` (peer `jaxclient_tff_jax`): the client update is a
`tff.jax.computation` over `padded_shape = (num_batches, batch_size)` (the
workload's, so nothing is padded), run in `jaxclient_tff.
execution_context()`: the runtime pads the clients' batches in numpy and
trains the cohort as one call of jaxclient's vmapped cohort program. The
context is entered once, at build, and left when the worker exits.
"""

import contextlib

import jaxclient_tff
import tensorflow_federated as tff

from benchmarks.peers import Peer
from benchmarks.peers import jaxclient_client_work
from benchmarks.peers import tff_client_work

# backend='jax' keeps its context installed for the worker's life.
_CONTEXTS = contextlib.ExitStack()


def build(workload, data, learning_rate, backend='tensorflow') -> Peer:
  num_batches, batch_size = data['y'].shape[1:3]
  process = jaxclient_tff.build_model_delta_client_work(
      lambda: jaxclient_client_work.functional_model(workload),
      tff.learning.optimizers.build_sgdm(learning_rate=learning_rate),
      tff.learning.ClientWeighting.NUM_EXAMPLES, backend=backend,
      padded_shape=(num_batches, batch_size) if backend == 'jax' else None)
  if backend == 'jax':
    _CONTEXTS.enter_context(jaxclient_tff.execution_context())
  return tff_client_work.federated_peer(process, workload, data)
