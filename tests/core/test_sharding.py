"""The client axis split over several CPU devices equals one device.

XLA_FLAGS must be set before JAX starts, so each sharded run is its own
process (tests/core/fedavg_worker.py); this process computes the one-device
reference. 7 clients over 3 or 4 devices also exercises padding clients.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxclient as jc
from tests.core import fedavg_scenario as scenario

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def run_worker(out, *flags, timeout=120):
  """Runs the worker; returns its npz as a dict."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  done = subprocess.run(
      [sys.executable, '-m', 'tests.core.fedavg_worker', str(out), *flags],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  assert done.returncode == 0, done.stderr[-3000:]
  with np.load(out) as result:
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


@pytest.mark.parametrize('devices,chunk', [(4, None), (3, 2)])
def test_sharded_equals_one_device(tmp_path, one_device_run, devices, chunk):
  flags = ['--local-devices', str(devices)]
  if chunk:
    flags += ['--clients-per-chunk', str(chunk)]
  result = run_worker(tmp_path / 'out.npz', *flags)
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
