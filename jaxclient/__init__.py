"""jaxclient: federated-learning client work in JAX.

A port of TFF's `tff.learning.templates.build_model_delta_client_work`:
local steps over an optax optimizer, the model delta, client weighting and
client metrics, `vmap`ped over a cohort of clients in one compiled program.
"""

from jaxclient import algorithms
from jaxclient import checkpoint
from jaxclient import data
from jaxclient import datasets
from jaxclient import losses
from jaxclient import metrics
from jaxclient import models
from jaxclient import optimizers
from jaxclient import sharding
from jaxclient.client_work import build_model_delta_client_work
from jaxclient.client_work import ClientResult
from jaxclient.client_work import ClientWeighting
from jaxclient.client_work import ClientWorkProcess
from jaxclient.client_work import MeasuredProcessOutput
from jaxclient.models import FunctionalModel
from jaxclient.models import ModelWeights

__version__ = '0.1.0'

__all__ = [
    'algorithms', 'build_model_delta_client_work', 'checkpoint', 'datasets',
    'sharding', 'ClientResult', 'ClientWeighting',
    'ClientWorkProcess', 'data', 'FunctionalModel', 'losses',
    'MeasuredProcessOutput', 'metrics', 'models', 'ModelWeights',
    'optimizers',
]
