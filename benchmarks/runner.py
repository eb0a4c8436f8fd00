"""Runs the peers side by side: one worker process per (peer, cell), peers
interleaved round-robin (the order rotated every repeat) so that drift and
other load on the machine hit all alike; the matmul peak is measured in the
same rotation, in the jaxclient worker.

A cell is (workload, number of clients). Its rows report, per peer, the
median of the timed rounds, examples/s, how many times faster jaxclient is,
compile time (`build + first round - median round`: tracing, graph building
and compilation), peak memory, the achieved FLOP/s and its fraction of the
cell's measured matmul peak, and whether the peer's mean update agrees with
jaxclient's.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import workloads
from benchmarks.peers import PEERS

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_ENVS = {'core': REPO / '.venv/bin/python',
                'bench': REPO / '.venv-bench/bin/python',
                'tff': REPO / '.venv-tff/bin/python'}
# A peer agrees with jaxclient when the largest difference of their mean
# updates is at most this fraction of the largest value: float32 on a CPU;
# on a GPU, float32 matmuls run at XLA's default TF32 precision.
AGREEMENT_RTOL = {'cpu': 1e-4, 'gpu': 5e-2}


class WorkerError(RuntimeError):
  pass


class Worker:
  """A `benchmarks.worker` process for one peer."""

  def __init__(self, peer: str, python: str, log):
    path = [str(REPO), str(REPO / 'interop')] + [
        p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    # Several workers share an accelerator: none may grab most of its memory.
    env = {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false', **os.environ,
           'PYTHONPATH': os.pathsep.join(path), 'PYTHONUNBUFFERED': '1',
           'TF_CPP_MIN_LOG_LEVEL': '2'}
    self.peer = peer
    self.process = subprocess.Popen(
        [python, '-m', 'benchmarks.worker', peer], cwd=REPO, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    self._answer()

  def _answer(self) -> dict:
    line = self.process.stdout.readline()
    if not line:
      raise WorkerError(f'{self.peer}: worker exited (see the log).')
    answer = json.loads(line)
    if not answer.pop('ok'):
      raise WorkerError(answer['error'])
    return answer

  def call(self, cmd: str, **kwargs) -> dict:
    self.process.stdin.write(json.dumps({'cmd': cmd, **kwargs}) + '\n')
    self.process.stdin.flush()
    return self._answer()

  def close(self) -> list[int]:
    """Asks the worker to exit (it stops TFF's worker_binary children);
    terminates it (SIGTERM, which does the same) if it does not answer."""
    try:
      stopped = self.call('exit').get('stopped_worker_binaries', [])
      self.process.wait(timeout=60)
    except (WorkerError, OSError, ValueError, subprocess.TimeoutExpired):
      stopped = []
      self.process.terminate()
      self.process.wait(timeout=60)
    return stopped


def _error_summary(error: str) -> str:
  """The last `SomethingError: message` line of a traceback, shortened."""
  lines = [l.strip() for l in error.strip().splitlines() if l.strip()]
  errors = [l for l in lines if re.match(r'[\w.]*(Error|Exception)\b', l)]
  return (errors or lines or ['unknown error'])[-1][:300]


def run_cell(workload: workloads.Workload, num_clients: int, peers, envs,
             repeats: int, num_batches: int, batch_size: int, skip: dict,
             max_round_s: float, log, tmpdir: str
             ) -> tuple[list[dict], list[dict]]:
  """Benchmarks every peer on one (workload, clients) cell; returns its rows
  and the matmul peak samples taken among them."""
  rows, workers, updates = {}, {}, {}
  try:
    for peer in peers:
      rows[peer] = {'workload': workload.name, 'clients': num_clients,
                    'peer': peer, 'env': PEERS[peer][1]}
      if peer in skip:
        rows[peer]['status'] = skip[peer]
        continue
      update_path = os.path.join(tmpdir, f'{peer}.npy')
      try:
        worker = Worker(peer, str(envs[PEERS[peer][1]]), log)
      except (WorkerError, OSError) as e:
        rows[peer]['status'] = 'unavailable: ' + _error_summary(str(e))
        continue
      workers[peer] = worker
      try:
        rows[peer].update(worker.call(
            'setup', workload=workload.name, clients=num_clients,
            batches=num_batches, batch_size=batch_size,
            learning_rate=workloads.LEARNING_RATE, update_path=update_path))
        updates[peer] = np.load(update_path)
        rows[peer]['runs_s'] = []
      except WorkerError as e:
        rows[peer]['status'] = 'error: ' + _error_summary(str(e))
        workers.pop(peer).close()
    # The matmul peak runs in a worker of its own (in the core environment),
    # so that its buffers count in no peer's memory.
    if 'jaxclient' in workers:
      workers['matmul_peak'] = Worker('jaxclient', str(envs['core']), log)
    return _time_cell(workload, num_clients, rows, workers, updates, repeats,
                      num_batches, batch_size, max_round_s)
  finally:
    stopped = [pid for worker in workers.values() for pid in worker.close()]
    if stopped:
      print(f'  stopped TFF worker_binary pids {stopped}', file=sys.stderr)


def _time_cell(workload, num_clients, rows, workers, updates, repeats,
               num_batches, batch_size, max_round_s):
  """The timed, interleaved rounds of a cell whose workers are set up.

  A peer whose first round (compilation included) took over `max_round_s`
  gets one timed round, not `repeats`.
  """
  peak_worker = workers.pop('matmul_peak', None)
  wanted = {peer: 1 if rows[peer]['first_s'] > max_round_s else repeats
            for peer in workers}
  peaks = []
  rotation = list(workers) + (['matmul_peak'] if peak_worker else [])
  for r in range(repeats if workers else 0):
    order = rotation[r % len(rotation):] + rotation[:r % len(rotation)]
    for name in order:
      if name == 'matmul_peak':
        peaks.append(peak_worker.call('peak'))
      elif len(rows[name]['runs_s']) < wanted[name]:
        rows[name]['runs_s'].append(workers[name].call('run')['seconds'])
  if peak_worker:
    workers['matmul_peak'] = peak_worker  # closed with the others

  peers = [peer for peer in workers if peer != 'matmul_peak']
  for peer in peers:
    rows[peer].update(workers[peer].call('stats'))
  reference = updates.get('jaxclient')
  platform_name = peaks[0]['platform'] if peaks else 'cpu'
  for peer in peers:
    row = rows[peer]
    row['status'] = 'ok'
    row['median_s'] = statistics.median(row['runs_s'])
    row['examples_per_s'] = (num_clients * num_batches * batch_size /
                             row['median_s'])
    row['compile_s'] = max(row['build_s'] + row['first_s'] - row['median_s'],
                           0.0)
    row['flops_per_s'] = (row['examples_per_s'] *
                          workload.train_flops_per_example())
    if reference is not None:
      diff = np.max(np.abs(updates[peer] - reference))
      row['max_abs_diff_vs_jaxclient'] = float(diff)
      row['rel_diff_vs_jaxclient'] = float(diff / np.max(np.abs(reference)))
      row['agrees'] = row['rel_diff_vs_jaxclient'] <= AGREEMENT_RTOL.get(
          platform_name, AGREEMENT_RTOL['gpu'])
  return list(rows.values()), peaks


def _projected_s(history: dict, peer: str, num_clients: int) -> float | None:
  if peer not in history:
    return None
  clients, seconds = history[peer]
  return seconds * num_clients / clients


def run(workload_names, client_counts, peers, repeats: int = 5,
        num_batches: int = 10, batch_size: int = 20,
        max_round_s: float = 60.0, max_clients: dict | None = None,
        envs: dict | None = None, log_path: str | None = None,
        on_cell=None) -> dict:
  """Runs every cell, smallest cohort first; a peer whose projected round
  (linear in clients from its last cell) exceeds `max_round_s`, or beyond
  its `max_clients`, is skipped, and the row says why. `on_cell(results)`
  is called with the results so far after every cell."""
  envs = {**DEFAULT_ENVS, **(envs or {})}
  max_clients = max_clients or {}
  started = time.time()
  version_info = versions(envs)
  rows, peaks = [], []
  with open(log_path or os.devnull, 'a') as log, \
      tempfile.TemporaryDirectory() as tmpdir:
    for name in workload_names:
      workload = workloads.WORKLOADS[name]
      history = {}
      for num_clients in sorted(client_counts):
        skip = {}
        for peer in peers:
          projected = _projected_s(history, peer, num_clients)
          if peer in max_clients and num_clients > max_clients[peer]:
            skip[peer] = (f'skipped: over --max-clients {peer}='
                          f'{max_clients[peer]}')
          elif projected is not None and projected > max_round_s:
            skip[peer] = (f'skipped: projected {projected:.0f} s/round > '
                          f'--max-round-s {max_round_s:g}')
        print(f'{name} x {num_clients} clients ...', file=sys.stderr,
              flush=True)
        cell_rows, cell_peaks = run_cell(workload, num_clients, peers, envs,
                                         repeats, num_batches, batch_size,
                                         skip, max_round_s, log, tmpdir)
        peak = statistics.median(p['flops_per_s'] for p in cell_peaks) \
            if cell_peaks else None
        datasheet = cell_peaks[0]['datasheet_peak'] if cell_peaks else None
        peaks += [p['flops_per_s'] for p in cell_peaks]
        for row in cell_rows:
          if row['status'] == 'ok':
            history[row['peer']] = (num_clients, row['median_s'])
            if peak:
              row['peak_fraction'] = row['flops_per_s'] / peak
              row['cell_matmul_peak_flops_per_s'] = peak
            if datasheet:
              row['datasheet_tf32_fraction'] = (row['flops_per_s'] /
                                                datasheet['tf32'])
              row['datasheet_bf16_fraction'] = (row['flops_per_s'] /
                                                datasheet['bf16'])
          print(f"  {row['peer']:14s} " + (
              f"{row['examples_per_s']:10.0f} ex/s  compile "
              f"{row['compile_s']:.1f} s" if row['status'] == 'ok'
              else row['status']), file=sys.stderr, flush=True)
        rows += cell_rows
        if on_cell:
          on_cell(_results(started, workload_names, client_counts, peers,
                           repeats, num_batches, batch_size, max_round_s,
                           max_clients, envs, peaks, rows, version_info))
  return _results(started, workload_names, client_counts, peers, repeats,
                  num_batches, batch_size, max_round_s, max_clients, envs,
                  peaks, rows, version_info)


def _results(started, workload_names, client_counts, peers, repeats,
             num_batches, batch_size, max_round_s, max_clients, envs, peaks,
             rows, version_info) -> dict:
  return {
      'date_utc': time.strftime('%Y-%m-%d %H:%M', time.gmtime(started)),
      'wall_s': time.time() - started,
      'machine': machine_description(),
      'command': ' '.join(['python -m benchmarks'] + sys.argv[1:]),
      'settings': {'workloads': list(workload_names),
                   'clients': sorted(client_counts), 'peers': list(peers),
                   'repeats': repeats, 'num_batches': num_batches,
                   'batch_size': batch_size,
                   'learning_rate': workloads.LEARNING_RATE,
                   'max_round_s': max_round_s,
                   'max_clients': max_clients},
      'versions': version_info,
      'matmul_peak_flops_per_s': {'median': statistics.median(peaks) if peaks
                                  else None, 'max': max(peaks, default=None),
                                  'samples': len(peaks)},
      'workloads': {name: {
          'description': workloads.WORKLOADS[name].description,
          'parameters': workloads.WORKLOADS[name].num_parameters(),
          'train_flops_per_example':
              workloads.WORKLOADS[name].train_flops_per_example()}
                    for name in workload_names},
      'rows': rows,
  }


def machine_description() -> dict:
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(l.split(':', 1)[1].strip() for l in f
                 if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return {'cpu': cpu, 'cores': os.cpu_count(),
          'memory_gib': round(os.sysconf('SC_PAGE_SIZE') *
                              os.sysconf('SC_PHYS_PAGES') / 2**30, 1),
          'loadavg_at_start': os.getloadavg()}


_VERSION_SCRIPT = '''
import importlib.metadata as m, json, sys
out = {'python': sys.version.split()[0]}
for p in ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'drjax', 'fedjax',
          'tensorflow', 'tensorflow-federated'):
  try: out[p] = m.version(p)
  except m.PackageNotFoundError: pass
try:
  import jax; out['device'] = jax.devices()[0].device_kind
except Exception: pass
print(json.dumps(out))
'''


def versions(envs) -> dict:
  out = {}
  for name, python in envs.items():
    try:
      result = subprocess.run([str(python), '-c', _VERSION_SCRIPT],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
      out[name] = json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, IndexError, ValueError, subprocess.TimeoutExpired):
      out[name] = 'unavailable'
  return out
