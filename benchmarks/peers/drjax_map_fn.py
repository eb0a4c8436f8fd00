"""DrJAX: the hand-written client update mapped over the clients with
`drjax.map_fn` inside a `drjax.program`, model broadcast with
`drjax.broadcast`, the whole round jitted."""

import drjax
import jax

from benchmarks import workloads
from benchmarks.peers import Peer


def build(workload, data, learning_rate) -> Peer:
  num_clients = data['x'].shape[0]
  client_update = workloads.sgd_client_update(workload, learning_rate)

  @jax.jit
  @drjax.program(placements={'clients': num_clients})
  def round_fn(params, x, y):
    return drjax.map_fn(client_update, (drjax.broadcast(params), x, y))

  params = jax.device_put(workload.init())
  x, y = jax.device_put((data['x'], data['y']))

  def run():
    return jax.block_until_ready(round_fn(params, x, y))

  def mean_update(output):
    update, weight, _ = output
    return workloads.weighted_mean_update(update, weight)

  return Peer(run, mean_update)
