"""Our client work inside TFF's `compose_learning_process` (FedAvg), rounds
on TFF's runtime, against the same composition with TFF's own client work."""

import numpy as np
import pytest
import tensorflow_federated as tff

import twins

NUM_ROUNDS = 4


def _fed_avg(client_work, twin):
  weights_type = tff.learning.models.weights_type_from_model(
      twin.keras_model_fn)
  initial_weights = twin.initial_weights

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights(
        [np.asarray(w) for w in initial_weights.trainable], [])

  update_type = weights_type.trainable
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn,
      tff.learning.templates.build_broadcast_process(weights_type),
      client_work,
      tff.aggregators.MeanFactory().create(update_type,
                                           tff.TensorType(np.float32)),
      tff.learning.templates.build_apply_optimizer_finalizer(
          tff.learning.optimizers.build_sgdm(1.0), weights_type))


# The MLP's labels are random: only the linear model's loss must fall.
@pytest.mark.parametrize('twin_name,optimizer_name,loss_must_fall', [
    ('linear', 'sgd', True), ('mlp', 'adam', False)])
def test_fed_avg_rounds_equal_tffs_and_the_loss_falls(
    twin_name, optimizer_name, loss_must_fall):
  twin = twins.TWINS[twin_name]()
  ours = _fed_avg(twins.our_process(twin_name, optimizer_name), twin)
  theirs = _fed_avg(twins.tff_process(twin_name, optimizer_name), twin)
  assert ours.next.type_signature.parameter == (
      theirs.next.type_signature.parameter)
  our_state, their_state = ours.initialize(), theirs.initialize()
  losses, largest = [], 0.0
  for round_number in range(NUM_ROUNDS):
    data = twins.as_datasets(twin.make_data(seed=100 + round_number))
    our_out = ours.next(our_state, data)
    their_out = theirs.next(their_state, data)
    our_state, their_state = our_out.state, their_out.state
    our_train = our_out.metrics['client_work']['train']
    their_train = their_out.metrics['client_work']['train']
    largest = max([largest, abs(our_train['loss'] - their_train['loss'])] + [
        float(np.max(np.abs(a - b))) for a, b in zip(
            ours.get_model_weights(our_state).trainable,
            theirs.get_model_weights(their_state).trainable)])
    assert largest <= 1e-5, (round_number, largest)
    assert our_train['num_non_finite_clients'] == 0
    losses.append(float(our_train['loss']))
  print(f'\nPARITY FedAvg {twin_name}/{optimizer_name}, {NUM_ROUNDS} rounds: '
        f'max |diff| = {largest:.3g}; losses {losses}')
  if loss_must_fall:
    assert losses[-1] < 0.5 * losses[0], losses
