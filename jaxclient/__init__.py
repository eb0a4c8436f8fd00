"""jaxclient: federated-learning client work in JAX.

A port of TFF's `tff.learning.templates.build_model_delta_client_work`:
local steps over an optax optimizer, the model delta, client weighting and
client metrics, `vmap`ped over a cohort of clients in one compiled program.

What one client computes is `jaxclient.client`; how a cohort of clients
runs (one vmap, blocks, a shard per device) is `jaxclient.cohort`; the
process that puts them together is `build_model_delta_client_work`, and
federated averaging over it is `jaxclient.algorithms`.

On a CPU, importing jaxclient splits the CPU into one JAX device per core
(before JAX starts; `JAXCLIENT_CPU_DEVICES=1` keeps one), so that a cohort
trains on every core: see `jaxclient.sharding`.
"""

from jaxclient import sharding

sharding.use_every_core()  # Before anything starts JAX: one device per core.

from jaxclient import (  # noqa: E402
  algorithms,
  checkpoint,
  client,
  client_work,
  cohort,
  data,
  datasets,
  flax_models,
  losses,
  memory,
  metrics,
  models,
  optimizers,
  rounds,
  sharding,
  typing,
)
from jaxclient.client import ClientResult, ClientWeighting  # noqa: E402
from jaxclient.client_work import (  # noqa: E402
  ClientWorkProcess,
  MeasuredProcessOutput,
  build_model_delta_client_work,
)
from jaxclient.models import FunctionalModel, ModelWeights  # noqa: E402

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
  'memory',
  'metrics',
  'models',
  'optimizers',
  'rounds',
  'sharding',
  'typing',
]
