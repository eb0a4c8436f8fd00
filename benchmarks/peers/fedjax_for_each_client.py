"""FedJAX: `fedjax.for_each_client` with its default backend (one jitted
`client_init`, `client_step` per batch and `client_final`, looped over
clients and batches from Python), each step the hand-written SGD step."""

import fedjax
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import workloads
from benchmarks.peers import Peer


def build(workload, data, learning_rate) -> Peer:
  grad_fn = jax.value_and_grad(
      lambda p, x, y: workloads.mean_loss(workload, p, x, y))

  def client_init(shared_input, client_input):
    del client_input
    return {'params': shared_input, 'num_examples': jnp.float32(0.0),
            'loss_sum': jnp.float32(0.0)}

  def client_step(state, batch):
    loss, grads = grad_fn(state['params'], batch['x'], batch['y'])
    n = jnp.float32(batch['y'].shape[0])
    return {'params': jax.tree.map(lambda p, g: p - learning_rate * g,
                                   state['params'], grads),
            'num_examples': state['num_examples'] + n,
            'loss_sum': state['loss_sum'] + loss * n}

  def client_final(shared_input, state):
    return (jax.tree.map(jnp.subtract, shared_input, state['params']),
            state['num_examples'], state['loss_sum'])

  for_each_client = fedjax.for_each_client(client_init, client_step,
                                           client_final)
  params = jax.device_put(workload.init())
  num_clients, num_batches = data['y'].shape[:2]
  clients = [(c, [jax.device_put({'x': data['x'][c, b], 'y': data['y'][c, b]})
                  for b in range(num_batches)], None)
             for c in range(num_clients)]

  def run():
    return jax.block_until_ready(
        [out for _, out in for_each_client(params, clients)])

  def mean_update(outputs):
    updates = jax.tree.map(lambda *u: np.stack(u),
                           *[update for update, _, _ in outputs])
    return workloads.weighted_mean_update(
        updates, [weight for _, weight, _ in outputs])

  return Peer(run, mean_update)
