"""One peer in its own process, driven by the runner over a pipe.

    python -m benchmarks.worker PEER

The runner starts one worker per (peer, workload, cohort size), in the
peer's environment, and sends JSON lines on stdin; the worker answers one
JSON line per command on its original stdout (everything else printed,
TensorFlow's logs and TFF's `worker_binary` included, goes to stderr):

* `{"cmd": "setup", "workload", "clients", "batches", "batch_size",
  "learning_rate", "update_path"}`: makes the data, builds the peer, runs
  the first round (compilation included), saves the mean update to
  `update_path` (.npy) and answers `build_s` and `first_s`;
* `{"cmd": "run"}`: one timed round, answers `seconds`;
* `{"cmd": "peak"}`: one trial of `peak.measure_matmul_peak` (JAX peers);
* `{"cmd": "stats"}`: peak memory, answers `peak_rss_mib` (the process's
  high-water resident set: interpreter, libraries, data and computation),
  `import_rss_mib` (the same, measured before the data was made) and, for a
  JAX peer on an accelerator, `peak_device_mib`;
* `{"cmd": "exit"}`: stops TFF's `worker_binary` children, then exits.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import time
import traceback

from benchmarks import workloads
from benchmarks.peers import PEERS


def _max_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_device_mib() -> float | None:
  if 'jax' not in sys.modules:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return None
  stats = device.memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else peak / 2**20


def stop_worker_binaries() -> list[int]:
  """SIGINTs and reaps this process's `worker_binary` children (TFF's C++
  executor service, which would otherwise outlive us); returns their pids."""
  stopped = []
  for entry in os.listdir('/proc'):
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/stat') as f:
        stat = f.read()
    except OSError:
      continue
    comm = stat[stat.index('(') + 1:stat.rindex(')')]
    ppid = int(stat[stat.rindex(')') + 2:].split()[1])
    if ppid == os.getpid() and comm.startswith('worker_binary'):
      _stop(int(entry))
      stopped.append(int(entry))
  return stopped


def _stop(pid: int) -> None:
  """SIGINT (what TFF itself sends), then SIGTERM, then SIGKILL; reaps."""
  for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
    os.kill(pid, sig)
    for _ in range(50):
      if os.waitpid(pid, os.WNOHANG)[0]:
        return
      time.sleep(0.1)


def _on_sigterm(signum, frame):
  del signum, frame
  stop_worker_binaries()
  os._exit(1)  # pylint: disable=protected-access


class _Worker:

  def __init__(self, peer_name: str):
    self.peer_name = peer_name
    self.module = importlib.import_module(
        'benchmarks.peers.' + PEERS[peer_name][0])
    self.import_rss_mib = _max_rss_mib()
    self.peer = None

  def setup(self, workload, clients, batches, batch_size, learning_rate,
            update_path):
    workload = workloads.WORKLOADS[workload]
    data = workloads.client_data(workload, clients, batches, batch_size)
    options = PEERS[self.peer_name][2]
    start = time.perf_counter()
    self.peer = self.module.build(workload, data, learning_rate, **options)
    built = time.perf_counter()
    output = self.peer.run()
    first = time.perf_counter()
    import numpy as np  # pylint: disable=g-import-not-at-top
    np.save(update_path, self.peer.mean_update(output))
    return {'build_s': built - start, 'first_s': first - built}

  def run(self):
    start = time.perf_counter()
    self.peer.run()
    return {'seconds': time.perf_counter() - start}

  def peak(self):
    from benchmarks import peak  # pylint: disable=g-import-not-at-top
    return peak.measure_matmul_peak(trials=1)

  def stats(self):
    return {'peak_rss_mib': _max_rss_mib(),
            'import_rss_mib': self.import_rss_mib,
            'peak_device_mib': _peak_device_mib()}


def main(argv):
  # Answers go to the original stdout; fd 1 becomes stderr, so that nothing
  # else (TF logs, TFF's worker_binary, which inherits fd 1) can reach it.
  answers = os.fdopen(os.dup(1), 'w', buffering=1)
  os.dup2(2, 1)
  sys.stdout = sys.stderr

  signal.signal(signal.SIGTERM, _on_sigterm)

  def answer(message):
    answers.write(json.dumps(message) + '\n')

  try:
    worker = _Worker(argv[1])
  except Exception:  # pylint: disable=broad-except
    answer({'ok': False, 'error': traceback.format_exc()})
    return 1
  answer({'ok': True})
  for line in sys.stdin:
    request = json.loads(line)
    cmd = request.pop('cmd')
    if cmd == 'exit':
      break
    try:
      answer({'ok': True, **getattr(worker, cmd)(**request)})
    except Exception:  # pylint: disable=broad-except
      answer({'ok': False, 'error': traceback.format_exc()})
  answer({'ok': True, 'stopped_worker_binaries': stop_worker_binaries()})
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
