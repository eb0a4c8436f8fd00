"""The client axis split over several CPU devices equals one device.

XLA_FLAGS must be set before JAX starts, so each sharded run is its own
process (tests/core/fedavg_worker.py); this process computes the one-device
reference. 7 clients over 3 or 4 devices also exercises padding clients.
"""

import os
import sys

import jax
import numpy as np
import pytest

import jaxclient as jc
from tests.core import children
from tests.core import fedavg_scenario as scenario

REPO = children.REPO
SHARDED = [(4, None), (3, 2)]


def worker_command(out, *flags):
  """The worker (tests/core/fedavg_worker.py) writing `out`."""
  return [sys.executable, '-m', 'tests.core.fedavg_worker', str(out), *flags]


def worker_env():
  return {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}


def _sharded_flags(devices, chunk):
  flags = ['--local-devices', str(devices)]
  if chunk:
    flags += ['--clients-per-chunk', str(chunk)]
  return flags


for _devices, _chunk in SHARDED:
  _name = f'sharded {_devices} {_chunk}'
  children.ahead(_name, [worker_command(children.scratch(f'{_name}.npz'),
                                        *_sharded_flags(_devices, _chunk))],
                 env=worker_env())


def load_worker_output(name):
  """The npz that the worker `name` wrote, as a dict."""
  (done,) = children.result(name)
  assert done.returncode == 0, done.stderr[-3000:]
  with np.load(children.scratch(f'{name}.npz')) as result:
    return dict(result)


def assert_same_run(result, trainable, metrics):
  for k, v in trainable.items():
    np.testing.assert_allclose(result[f'w/{k}'], v, rtol=1e-6, atol=1e-7)
  for i, round_metrics in enumerate(metrics):
    for k, v in round_metrics.items():
      np.testing.assert_allclose(result[f'm{i}/{k}'], v, rtol=1e-6)


@pytest.fixture(scope='module')
def one_device_run():
  mesh = jc.sharding.client_mesh(jax.devices()[:1])
  return scenario.run(scenario.build(mesh=mesh))


@pytest.mark.parametrize('devices,chunk', SHARDED)
def test_sharded_equals_one_device(one_device_run, devices, chunk):
  result = load_worker_output(f'sharded {devices} {chunk}')
  assert int(result['num_devices']) == devices
  assert int(result['mesh_size']) == devices
  # The cohort really is split: every device holds a shard of it.
  assert int(result['local_shard_devices']) == devices
  assert_same_run(result, *one_device_run)


def test_client_mesh_and_placement():
  mesh = jc.sharding.client_mesh()
  assert mesh.axis_names == ('clients',)
  assert mesh.devices.size == len(jax.devices())
  data = np.arange(2 * mesh.devices.size * 3.0).reshape(-1, 3)
  placed = jc.sharding.put_clients({'a': data}, mesh)['a']
  assert placed.sharding == jc.sharding.clients_sharding(mesh)
  np.testing.assert_array_equal(placed, data)
  assert jc.sharding.put_clients({'a': placed}, mesh)['a'] is placed
  assert jc.sharding.padded_size(5, mesh) % mesh.devices.size == 0
  padded = jc.sharding.pad_clients({'m': np.ones((2, 3), bool)}, 4)['m']
  np.testing.assert_array_equal(padded.sum(axis=1), [3, 3, 0, 0])
  with pytest.raises(ValueError, match='client_mesh: devices is empty'):
    jc.sharding.client_mesh([])


def test_put_clients_rejects_an_uneven_client_axis():
  mesh = jc.sharding.client_mesh(jax.devices()[:1])
  with pytest.raises(ValueError, match=r'put_clients: the leading \(client\) '
                     r'axis must be a multiple of the 1 devices of the mesh, '
                     r'found shape \(\)'):
    jc.sharding.put_clients({'a': np.float32(1.0)}, mesh)
  with pytest.raises(ValueError, match='pad_clients: leading axis 3 exceeds'):
    jc.sharding.pad_clients(np.zeros(3), 2)


_NEXT_ON_CORES = '''
import jax, numpy as np, flax.linen as nn, jaxclient as jc
assert jc.sharding.set_cpu_device_count(2) == 2
class Net(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dropout(0.3, deterministic=not train)(nn.relu(nn.Dense(5)(x)))
    return nn.Dense(3)(x)
rng = np.random.default_rng(0)
clients = [{'x': rng.normal(size=(n, 4)).astype(np.float32),
            'y': rng.integers(0, 3, n).astype(np.int32)} for n in (5, 0, 7, 3)]
model = jc.models.from_flax(Net(), clients[0]['x'][:1],
                            jc.losses.sparse_categorical_crossentropy,
                            sample_y=clients[0]['y'][:1], train_kwarg='train')
process, one_device = (jc.build_model_delta_client_work(
    model, jc.optimizers.build_sgdm(0.1, momentum=0.9),
    jc.ClientWeighting.NUM_EXAMPLES, strategy=strategy)
    for strategy in (None, jc.cohort.AllAtOnce()))
data, key = jc.data.pack(clients, batch_size=2), jax.random.PRNGKey(3)
per_client = jax.tree.map(lambda w: np.stack([w * (1 + i) for i in range(4)]),
                          model.initial_weights)
mesh = jc.sharding.client_mesh()
one = one_device.next(one_device.initialize(), per_client, data, rng=key)
two = process.next(process.initialize(), jc.sharding.put_clients(per_client, mesh),
                   jc.sharding.put_clients(data, mesh), rng=key)
assert len(jax.devices()) == 2
assert len(one.result.update_weight.sharding.device_set) == 1
assert len(two.result.update_weight.sharding.device_set) == 2
# The plan says so: placed on the mesh, each device trains its own clients;
# host data is split over every device the same way.
placed, host = process.plan(jc.sharding.put_clients(data, mesh)), process.plan(data)
assert placed.strategy == host.strategy == jc.cohort.ShardedOverClients(
    mesh, jc.cohort.AllAtOnce())
assert "split over a 'clients' mesh of 2 devices" in placed.reason
assert host.reason.startswith('JAX shows 2 cpu devices')
for a, b in zip(jax.tree.leaves((one.result, one.measurements)),
                jax.tree.leaves((two.result, two.measurements))):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                             atol=1e-7)
print('ok')
'''


children.ahead(
    'next on cores', [[sys.executable, '-c', _NEXT_ON_CORES]],
    env={k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', jc.sharding.CPU_DEVICES_ENV)})


def test_next_on_a_client_sharded_cohort_equals_one_device():
  # Each of the 2 CPU devices trains its own 2 clients (shard_map); dropout
  # keys and per-client weights follow the clients to their device.
  (done,) = children.result('next on cores')
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip() == 'ok'


def test_set_cpu_device_count_rejects_a_started_backend_and_bad_counts():
  jax.devices()
  with pytest.raises(RuntimeError, match='set_cpu_device_count: JAX has '
                     'already started its backends'):
    jc.sharding.set_cpu_device_count(2)
  with pytest.raises(ValueError, match='set_cpu_device_count: count: '
                     'expected None or a positive int, found 0.'):
    jc.sharding.set_cpu_device_count(0)
