"""jaxclient: federated-learning client work in JAX.

A port of TFF's `tff.learning.templates.build_model_delta_client_work`:
local steps over an optax optimizer, the model delta, client weighting and
client metrics, `vmap`ped over a cohort of clients in one compiled program.

What one client computes is `jaxclient.client`; how a cohort of clients
runs (one vmap, blocks, a shard per device) is `jaxclient.cohort`; the
process that puts them together is `build_model_delta_client_work`, and
federated averaging over it is `jaxclient.algorithms`.
"""

from jaxclient import (
  algorithms,
  checkpoint,
  client,
  client_work,
  cohort,
  data,
  datasets,
  flax_models,
  losses,
  metrics,
  models,
  optimizers,
  rounds,
  sharding,
  typing,
)
from jaxclient.client import ClientResult, ClientWeighting
from jaxclient.client_work import (
  ClientWorkProcess,
  MeasuredProcessOutput,
  build_model_delta_client_work,
)
from jaxclient.models import FunctionalModel, ModelWeights

__version__ = '0.1.0'

__all__ = [
  'ClientResult',
  'ClientWeighting',
  'ClientWorkProcess',
  'FunctionalModel',
  'MeasuredProcessOutput',
  'ModelWeights',
  'algorithms',
  'build_model_delta_client_work',
  'checkpoint',
  'client',
  'client_work',
  'cohort',
  'data',
  'datasets',
  'flax_models',
  'losses',
  'metrics',
  'models',
  'optimizers',
  'rounds',
  'sharding',
  'typing',
]
