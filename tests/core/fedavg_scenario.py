"""A small FedAvg scenario shared by the in-process tests and the worker
processes of the sharding and multi-host tests (tests/core/fedavg_worker.py).

Seven ragged clients (one empty) of softmax regression: an odd cohort that
neither 2, 3 nor 4 devices divide, so padding clients are exercised.
"""

import numpy as np

import jaxclient as jc
from tests.core import toy_models

CLIENT_SIZES = (5, 3, 7, 0, 2, 4, 6)
NUM_FEATURES, NUM_CLASSES = 3, 4
BATCH_SIZE, NUM_EPOCHS = 2, 2
CLIENT_LR, SERVER_LR, SERVER_MOMENTUM = 0.1, 0.5, 0.9


def client_datasets(seed=0):
  rng = np.random.default_rng(seed)
  return [{'x': rng.normal(size=(n, NUM_FEATURES)).astype(np.float32),
           'y': rng.integers(0, NUM_CLASSES, n).astype(np.int32)}
          for n in CLIENT_SIZES]


def initial_params():
  return toy_models.linear_params(NUM_FEATURES, NUM_CLASSES, seed=1)


def model():
  return toy_models.softmax_regression(NUM_FEATURES, NUM_CLASSES,
                                       initial_params())


def build(**kwargs):
  """FedAvg with SGD clients and a momentum server; kwargs go to
  `build_weighted_fed_avg` (clients_per_chunk, mesh, client_weighting)."""
  return jc.algorithms.build_weighted_fed_avg(
      model(), jc.optimizers.build_sgdm(CLIENT_LR),
      jc.optimizers.build_sgdm(SERVER_LR, momentum=SERVER_MOMENTUM), **kwargs)


def cohort(round_num):
  """Round `round_num`'s padded data: the clients, reshuffled per round."""
  return jc.data.pack(client_datasets(), BATCH_SIZE, NUM_EPOCHS,
                      shuffle=True, seed=round_num)


def run(process, num_rounds=2):
  """Runs `num_rounds` rounds; returns the final trainable weights and each
  round's `client_work/train` metrics, as numpy."""
  state = process.initialize()
  train_metrics = []
  for round_num in range(num_rounds):
    state, metrics = process.next(state, cohort(round_num))
    train_metrics.append(
        {k: np.asarray(v) for k, v in metrics['client_work']['train'].items()})
  trainable = {k: np.asarray(v) for k, v in
               process.get_model_weights(state).trainable.items()}
  return trainable, train_metrics
