"""The plain loop: what a JAX user writes by hand. One jitted client update
(a `lax.scan` of SGD steps over the client's batches), called once per
client from Python."""

import jax
import numpy as np

from benchmarks import workloads
from benchmarks.peers import Peer


def build(workload, data, learning_rate) -> Peer:
  params = jax.device_put(workload.init())
  client_update = jax.jit(workloads.sgd_client_update(workload,
                                                      learning_rate))
  clients = [jax.device_put((data['x'][c], data['y'][c]))
             for c in range(data['x'].shape[0])]

  def run():
    return jax.block_until_ready(
        [client_update(params, x, y) for x, y in clients])

  def mean_update(outputs):
    updates = jax.tree.map(lambda *u: np.stack(u),
                           *[update for update, _, _ in outputs])
    return workloads.weighted_mean_update(
        updates, [weight for _, weight, _ in outputs])

  return Peer(run, mean_update)
