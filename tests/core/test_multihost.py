"""Two processes on localhost under `jax.distributed` (CPU collectives)
compute the same FedAvg rounds as one process on one device."""

import functools
import socket

import jax
import numpy as np
import pytest

from tests.core import children
from tests.core import test_sharding
# The one-device reference run, a fixture shared with test_sharding.
from tests.core.test_sharding import one_device_run  # pylint: disable=unused-import

# jax 0.4.30's Gloo collectives time out ("Gloo context initialization
# failed: DEADLINE_EXCEEDED") when a process has more than one CPU device.
SEVERAL_LOCAL_DEVICES_WORK = tuple(
    int(p) for p in jax.__version__.split('.')[:2]) >= (0, 5)
RUNS = [(1, None), (2, 3)]


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _hosts(out, local_devices, chunk):
  """The two workers of one run, on a port free when they start."""
  flags = ['--local-devices', str(local_devices), '--num-processes', '2',
           '--port', str(_free_port())]
  if chunk:
    flags += ['--clients-per-chunk', str(chunk)]
  return [test_sharding.worker_command(out, *flags, '--process-id', str(i))
          for i in range(2)]


def _name(local_devices, chunk):
  return f'two hosts {local_devices} {chunk}'


for _local_devices, _chunk in RUNS:
  if _local_devices == 1 or SEVERAL_LOCAL_DEVICES_WORK:
    children.ahead(_name(_local_devices, _chunk), functools.partial(
        _hosts, children.scratch(_name(_local_devices, _chunk)),
        _local_devices, _chunk), env=test_sharding.worker_env())


@pytest.mark.parametrize('local_devices,chunk', [
    RUNS[0],
    pytest.param(*RUNS[1], marks=pytest.mark.skipif(
        not SEVERAL_LOCAL_DEVICES_WORK,
        reason=f'jax {jax.__version__}: Gloo CPU collectives time out with '
        'several local devices per process (fixed in later jax)')),
])
def test_two_processes_equal_one(one_device_run, local_devices, chunk):
  name = _name(local_devices, chunk)
  for worker in children.result(name):
    assert worker.returncode == 0, (worker.stdout + worker.stderr)[-3000:]
  for i in range(2):
    with np.load(f'{children.scratch(name)}.{i}.npz') as result:
      result = dict(result)
    assert int(result['process_count']) == 2
    assert int(result['mesh_size']) == 2 * local_devices
    assert int(result['local_shard_devices']) == local_devices
    test_sharding.assert_same_run(result, *one_device_run)
