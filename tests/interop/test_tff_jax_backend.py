"""backend='jax': a `tff.jax.computation` client update. It builds and
type-checks as TFF's own process; TFF 0.87's runtime cannot execute XLA, so
its serialized XLA is compiled with jaxlib (`xla_payload`) and run on real
inputs, against jaxclient's core and TFF's own process."""

import jax
import numpy as np
import pytest
import tensorflow_federated as tff

import jaxclient as jc
from jaxclient_tff import conversion
from jaxclient_tff import converted_model
from jaxclient_tff import jax_backend
from jaxclient_tff import optimizer_adapters
import twins
import xla_payload

PADDED_SHAPE = twins.PADDED_SHAPE


@pytest.fixture(scope='module')
def jax_process():
  return twins.our_jax_process('mlp', 'adam')


def test_type_signatures_equal_the_tensorflow_backends(jax_process):
  reference = twins.our_process('mlp', 'adam')
  theirs = twins.tff_process('mlp', 'adam')
  for name in ('initialize', 'next', 'get_hparams', 'set_hparams'):
    assert getattr(jax_process, name).type_signature == getattr(
        reference, name).type_signature
  assert jax_process.next.type_signature.parameter == (
      theirs.next.type_signature.parameter)


def test_tff_runtime_cannot_execute_the_xla_computation(jax_process):
  twin = twins.mlp_twin()
  clients = twin.make_data(0)
  with pytest.raises(Exception, match='computation of type 12'):
    jax_process.next(jax_process.initialize(),
                     [twin.initial_weights] * len(clients),
                     twins.as_datasets(clients))


def test_padding_computation_equals_jaxclient_pack():
  twin = twins.mlp_twin()
  model = twin.jax_model_fn()
  padding = jax_backend.build_padding(
      model, PADDED_SHAPE, tff.SequenceType(conversion.element_type(model)))
  clients = twin.make_data(0)
  packed = jc.data.pack(clients, twins.BATCH_SIZE,
                        num_batches=PADDED_SHAPE[0])
  for i, dataset in enumerate(twins.as_datasets(clients)):
    padded = padding(dataset)
    for key in ('x', 'y', 'mask'):
      np.testing.assert_array_equal(padded[key], packed[key][i])


def test_xla_payload_equals_the_core_and_tffs_process():
  twin = twins.mlp_twin()
  model = twin.jax_model_fn()
  optimizer = twins.OPTIMIZERS['adam']()
  core = jc.build_model_delta_client_work(
      model, optimizer_adapters.as_optax(optimizer),
      jc.ClientWeighting.NUM_EXAMPLES)
  converted = converted_model.ConvertedModel(model,
                                             jc.ClientWeighting.NUM_EXAMPLES)
  state_type = twins.tff_process('mlp', 'adam').initialize.type_signature
  client_update = jax_backend.build_client_update(
      core, converted, state_type.result.member,
      jax_backend.padded_data_type(model, PADDED_SHAPE))

  clients = twin.make_data(0)
  packed = jc.data.pack(clients, twins.BATCH_SIZE,
                        num_batches=PADDED_SHAPE[0])
  hparams = core.initialize()
  core_out = core.next(hparams, model.initial_weights, packed)
  theirs = twins.tff_process('mlp', 'adam')
  their_out = theirs.next(theirs.initialize(),
                          [twin.initial_weights] * len(clients),
                          twins.as_datasets(clients))
  num_trainable = len(twin.initial_weights.trainable)
  largest = 0.0
  for c in range(len(clients)):
    outputs = xla_payload.run_xla_payload(
        client_update,
        [np.asarray(v) for v in hparams.values()] +
        list(twin.initial_weights.trainable) +
        [packed['x'][c], packed['y'][c], packed['mask'][c]])
    update, weight = outputs[:num_trainable], outputs[num_trainable]
    core_update = converted.weights.trainable.flatten(
        jax.tree.map(lambda u: u[c], core_out.result.update))
    for ours, reference, tff_reference in zip(
        update, core_update, their_out.result[c].update):
      np.testing.assert_allclose(ours, reference, atol=1e-6, rtol=0)
      largest = max(largest, float(np.max(np.abs(ours - tff_reference))))
    assert float(weight) == float(core_out.result.update_weight[c]) == float(
        their_out.result[c].update_weight)
    num_examples = outputs[num_trainable + 1 + 2 + 2]  # after acc, loss
    assert int(num_examples) == twins.CLIENT_SIZES[c]
  print(f'\nPARITY jax backend payload vs TFF mlp/adam: max |diff| = '
        f'{largest:.3g}')
  assert largest <= 1e-5
