"""The default plan: every core without asking, and never more clients at
once than fit in memory, with the numbers of a plain one-device run.

Device counts are fixed when JAX starts, so what `import jaxclient` does to
them runs in child processes."""

import os
import sys

import jax
import numpy as np
import pytest

import jaxclient as jc
from tests.core import children
from tests.core import toy_models

CPU_ONLY = pytest.mark.skipif(
  jax.default_backend() != 'cpu', reason='CPU devices'
)


def python_ahead(name, code, **env):
  """Registers `code` to run in a fresh interpreter without the caller's JAX
  settings, plus `env` (tests/core/children.py)."""
  clean = {
    k: v
    for k, v in os.environ.items()
    if k
    not in ('XLA_FLAGS', 'JAX_NUM_CPU_DEVICES', jc.sharding.CPU_DEVICES_ENV)
  }
  children.ahead(name, [[sys.executable, '-c', code]], env={**clean, **env})


def output(name):
  """(stdout, stderr) of the finished process `name`, which succeeded."""
  (done,) = children.result(name)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout.strip(), done.stderr


_COUNT = (
  'import jaxclient, jax; '
  'print(jax.device_count(), jax.devices()[0] == jax.devices("cpu")[0])'
)
_COUNTS = [
  ({}, len(os.sched_getaffinity(0))),
  ({'JAXCLIENT_CPU_DEVICES': '3'}, 3),
  ({'JAXCLIENT_CPU_DEVICES': '1'}, 1),
  # A count the user gave JAX wins.
  (
    {
      'JAXCLIENT_CPU_DEVICES': '3',
      'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
    },
    2,
  ),
]
for _env, _ in _COUNTS:
  python_ahead(f'device count {_env}', _COUNT, **_env)


@CPU_ONLY
@pytest.mark.parametrize('env, expected', _COUNTS)
def test_import_makes_one_cpu_device_per_core_unless_told(env, expected):
  out, err = output(f'device count {env}')
  # The user's own computations still go to the first device.
  assert out == f'{expected} True'
  assert 'jaxclient: JAX started before' not in err


_STARTED = (
  'import jax; jax.devices(); import jaxclient; print(jax.device_count())'
)
for _count in ('2', '1'):
  python_ahead(f'started {_count}', _STARTED, JAXCLIENT_CPU_DEVICES=_count)


def test_a_started_backend_gets_one_warning_saying_how():
  out, err = output('started 2')
  assert out == '1'
  assert (
    err.count(
      'jaxclient: JAX started before jaxclient was imported, '
      'with 1 CPU device(s)'
    )
    == 1
  )
  assert 'JAXCLIENT_CPU_DEVICES=1' in err
  assert 'jaxclient: JAX started' not in output('started 1')[1]


children.ahead(
  'bad device count',
  [[sys.executable, '-c', 'import jaxclient']],
  env={
    **{k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'},
    'JAXCLIENT_CPU_DEVICES': 'all',
  },
)


def test_a_bad_device_count_is_named():
  (done,) = children.result('bad device count')
  assert done.returncode != 0
  assert (
    'ValueError: JAXCLIENT_CPU_DEVICES: expected a positive int (CPU '
    "devices), found 'all'."
  ) in done.stderr


_DEFAULT_NEXT = """
import jax, numpy as np, jaxclient as jc
from tests.core import toy_models
assert jax.device_count() == 3
rng = np.random.default_rng(0)
clients = [{'x': rng.normal(size=(n, 3)).astype(np.float32),
            'y': rng.integers(0, 4, n).astype(np.int32)} for n in (5, 0, 7, 3)]
data = jc.data.pack(clients, batch_size=2)
def build(**kwargs):
  return jc.build_model_delta_client_work(
      lambda: toy_models.softmax_regression(3, 4),
      jc.optimizers.build_sgdm(0.1, momentum=0.9),
      jc.ClientWeighting.NUM_EXAMPLES, **kwargs)
weights = toy_models.softmax_regression(3, 4).initial_weights
per_client = jax.tree.map(lambda w: np.stack([w + 0.1 * i for i in range(4)]),
                          weights)
default, one_device = build(), build(strategy=jc.cohort.AllAtOnce())
plan = default.plan(data)
assert plan.strategy == jc.cohort.ShardedOverClients(
    jc.sharding.client_mesh(), jc.cohort.AllAtOnce()), plan
assert plan.reason.startswith('JAX shows 3 cpu devices (one per core, set up '
                              'by `import jaxclient`'), plan.reason
for w in (weights, per_client):
  a = default.next(default.initialize(), w, data)
  b = one_device.next(one_device.initialize(), w, data)
  assert a.result.update['kernel'].shape == (4, 3, 4)  # Padding dropped.
  assert len(a.result.update_weight.sharding.device_set) == 3
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6,
                               atol=1e-7)
print('ok')
"""


python_ahead('default next', _DEFAULT_NEXT, JAXCLIENT_CPU_DEVICES='3')


@CPU_ONLY
def test_default_next_splits_host_data_over_every_device():
  # 4 clients over 3 devices: two inert padding clients, dropped again.
  assert output('default next')[0] == 'ok'


def _cohort(num_clients, num_features=2, seed=3):
  rng = np.random.default_rng(seed)
  return jc.data.pack(
    [
      {
        'x': rng.normal(size=(n, num_features)).astype(np.float32),
        'y': rng.normal(size=(n, 1)).astype(np.float32),
      }
      for n in rng.integers(0, 9, num_clients)
    ],
    batch_size=2,
  )


def _build(model=toy_models.linear_regression, **kwargs):
  return jc.build_model_delta_client_work(
    model,
    jc.optimizers.build_adam(0.1),
    jc.ClientWeighting.NUM_EXAMPLES,
    **kwargs,
  )


def _per_device(plan):
  strategy = plan.strategy
  return getattr(strategy, 'per_device', strategy)


@CPU_ONLY
def test_cpu_schedule_is_by_model_size():
  data = _cohort(6)
  small = _build().plan(data)
  assert _per_device(small) == jc.cohort.AllAtOnce()
  assert 'a small model trains in vmapped blocks' in small.reason
  wide = lambda: toy_models.linear_regression(
    num_features=jc.cohort.CPU_ONE_CLIENT_BYTES // 4
  )
  large = _build(wide).plan(_cohort(6, jc.cohort.CPU_ONE_CLIENT_BYTES // 4))
  assert _per_device(large) == jc.cohort.Blocked(1)
  assert 'trains one client at a time' in large.reason


def test_a_small_memory_budget_trains_fewer_clients_at_once_same_numbers():
  data = _cohort(8)
  process = _build()
  need = jc.memory.client_bytes(process.training, data)
  share = -(-8 // jax.device_count())
  budget = share * (need.data + need.update) + 2 * need.training
  fitted = _build(strategy=jc.cohort.Auto(memory_bytes=budget))
  plan = fitted.plan(data)
  assert _per_device(plan) == jc.cohort.Blocked(2)
  assert (
    f'but only 2 client(s) per device fit in a budget of '
    f"{budget >> 20} MiB per device ({share} clients' data"
  ) in (plan.reason)
  whole = _build(strategy=jc.cohort.AllAtOnce())
  a = fitted.next(
    fitted.initialize(), whole.training.model.initial_weights, data
  )
  b = whole.next(whole.initialize(), whole.training.model.initial_weights, data)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(
      np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7
    )
  with pytest.raises(
    ValueError,
    match='Auto.memory_bytes: expected None or a positive int, found -1.',
  ):
    jc.cohort.Auto(memory_bytes=-1)


def test_client_bytes_counts_data_weights_and_one_step():
  data = _cohort(3, num_features=5)
  need = jc.memory.client_bytes(
    _build(lambda: toy_models.linear_regression(5)).training, data
  )
  batches, batch_size = data['mask'].shape[1:]
  assert need.data == batches * batch_size * (5 * 4 + 4 + 1)
  assert need.update == (5 + 1) * 4 + 4
  # At least the weights, Adam's two moments and a gradient.
  assert need.training >= 4 * (5 + 1) * 4
  assert jc.memory.available_bytes() > 0
  assert jc.memory.budget_bytes(123) == 123
