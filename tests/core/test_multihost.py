"""Two processes on localhost under `jax.distributed` (CPU collectives)
compute the same FedAvg rounds as one process on one device."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.core import test_sharding
# The one-device reference run, a fixture shared with test_sharding.
from tests.core.test_sharding import one_device_run  # pylint: disable=unused-import

# jax 0.4.30's Gloo collectives time out ("Gloo context initialization
# failed: DEADLINE_EXCEEDED") when a process has more than one CPU device.
SEVERAL_LOCAL_DEVICES_WORK = tuple(
    int(p) for p in jax.__version__.split('.')[:2]) >= (0, 5)


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.parametrize('local_devices,chunk', [
    (1, None),
    pytest.param(2, 3, marks=pytest.mark.skipif(
        not SEVERAL_LOCAL_DEVICES_WORK,
        reason=f'jax {jax.__version__}: Gloo CPU collectives time out with '
        'several local devices per process (fixed in later jax)')),
])
def test_two_processes_equal_one(tmp_path, one_device_run, local_devices,
                                 chunk):
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  flags = ['--local-devices', str(local_devices), '--num-processes', '2',
           '--port', str(port)]
  if chunk:
    flags += ['--clients-per-chunk', str(chunk)]
  out = tmp_path / 'out.npz'
  workers = [subprocess.Popen(
      [sys.executable, '-m', 'tests.core.fedavg_worker', str(out), *flags,
       '--process-id', str(i)], cwd=test_sharding.REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
  try:
    logs = [w.communicate(timeout=120)[0] for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
        w.wait()
  for w, log in zip(workers, logs):
    assert w.returncode == 0, log[-3000:]
  for i in range(2):
    with np.load(f'{out}.{i}.npz') as result:
      result = dict(result)
    assert int(result['process_count']) == 2
    assert int(result['mesh_size']) == 2 * local_devices
    assert int(result['local_shard_devices']) == local_devices
    test_sharding.assert_same_run(result, *one_device_run)
