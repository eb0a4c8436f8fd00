"""jaxclient: `build_model_delta_client_work(...).next`, all clients in one
jitted, vmapped program."""

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


def build(workload, data, learning_rate) -> Peer:
  model = functional_model(workload)
  process = jc.build_model_delta_client_work(
      model, jc.optimizers.build_sgdm(learning_rate=learning_rate),
      jc.ClientWeighting.NUM_EXAMPLES)
  state = process.initialize()
  client_data = jax.device_put({**data, 'mask': jnp.ones(data['y'].shape,
                                                         bool)})

  def run():
    return jax.block_until_ready(
        process.next(state, model.initial_weights, client_data))

  def mean_update(output):
    return workloads.weighted_mean_update(output.result.update,
                                          output.result.update_weight)

  return Peer(run, mean_update)
