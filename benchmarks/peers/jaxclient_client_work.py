"""jaxclient: `build_model_delta_client_work(...).next`.

Peer `jaxclient` is what a newcomer runs: each client's examples packed by
`jc.data.pack` and the host arrays straight into `next`, nothing set (on a
CPU, `import jaxclient` has made one device per core and `next` splits the
cohort over them). `jaxclient_cores` does by hand
what earlier releases needed: `set_cpu_device_count()`, then the cohort put
on `client_mesh()` (`put_clients`) and the weights on every device. On an
accelerator the two are the same.
"""

import jax
import jax.numpy as jnp
import jaxclient as jc

from benchmarks import workloads
from benchmarks.peers import Peer


def functional_model(workload: workloads.Workload) -> jc.FunctionalModel:
  """The workload as a `jc.FunctionalModel` (no metrics beyond built-ins),
  with the loss every peer uses (`workloads.cross_entropy`)."""
  return jc.FunctionalModel(
      initial_weights=jc.ModelWeights(workload.init(), ()),
      predict_on_batch=lambda w, x, training, rng=None: workload.apply(
          w.trainable, x),
      loss=lambda logits, y, mask: jc.losses.masked_mean(
          workloads.cross_entropy(logits, y), mask),
      input_spec={'x': jax.ShapeDtypeStruct(workload.example_shape,
                                            jnp.float32),
                  'y': jax.ShapeDtypeStruct((), jnp.int32)})


def build(workload, data, learning_rate, one_device_per_core=False) -> Peer:
  if one_device_per_core:
    jc.sharding.set_cpu_device_count()
  model = functional_model(workload)
  process = jc.build_model_delta_client_work(
      model, jc.optimizers.build_sgdm(learning_rate=learning_rate),
      jc.ClientWeighting.NUM_EXAMPLES)
  state = process.initialize()
  num_clients, num_batches, batch_size = data['y'].shape
  client_data = jc.data.pack(
      [{k: data[k][i].reshape((num_batches * batch_size,) + data[k].shape[3:])
        for k in ('x', 'y')} for i in range(num_clients)], batch_size)
  weights = model.initial_weights
  if one_device_per_core:
    mesh = jc.sharding.client_mesh()
    client_data = jc.sharding.put_clients(client_data, mesh)
    weights = jc.sharding.put_replicated(weights, mesh)

  def run():
    return jax.block_until_ready(process.next(state, weights, client_data))

  def mean_update(output):
    return workloads.weighted_mean_update(output.result.update,
                                          output.result.update_weight)

  return Peer(run, mean_update)
