"""Peak memory and time of one FedAvg round as the cohort grows.

    python benchmarks/scale.py                      # 1k, 10k, 50k clients
    python benchmarks/scale.py --clients 1000 10000 --chunk 1000 2000

Each configuration runs in a fresh process (so peak memory is its own):
FedProx Synthetic(1, 1)-shaped data, 16 examples per client in one batch,
an MLP 60 -> 32 -> 10 (2,282 parameters), SGD clients, FedAvg server. The
process times a warm-up round (compilation included) and then a second
round, and reports its resident memory before the first round (data,
model and runtime loaded) and its peak (`ru_maxrss`); on the CPU backend
device memory is host memory, so "peak - before" is what the round itself
needs. "round data" is the size of the round's host arrays. Prints a
Markdown table.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

EXAMPLES_PER_CLIENT, NUM_FEATURES, NUM_CLASSES, HIDDEN = 16, 60, 10, 32


def _current_rss_mib():
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  return float('nan')


def measure(num_clients, clients_per_chunk):
  """One configuration, in this process; returns a dict of numbers."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import jaxclient as jc  # pylint: disable=g-import-not-at-top

  class Mlp(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.Dense(NUM_CLASSES)(nn.relu(nn.Dense(HIDDEN)(x)))

  rng = np.random.default_rng(0)
  shape = (num_clients, 1, EXAMPLES_PER_CLIENT)
  data = {'x': rng.standard_normal(shape + (NUM_FEATURES,), np.float32),
          'y': rng.integers(0, NUM_CLASSES, shape).astype(np.int32),
          'mask': np.ones(shape, bool)}
  model = jc.models.from_flax(
      Mlp(), data['x'][0, 0], jc.losses.sparse_categorical_crossentropy,
      metrics={'accuracy': jc.metrics.sparse_categorical_accuracy()},
      sample_y=data['y'][0, 0])
  process = jc.algorithms.build_weighted_fed_avg(
      model, jc.optimizers.build_sgdm(0.1),
      clients_per_chunk=clients_per_chunk)
  state = process.initialize()
  rss_before_mib = _current_rss_mib()
  times = []
  for _ in range(2):
    start = time.perf_counter()
    state, metrics = process.next(state, data)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return {
      'clients': num_clients,
      'chunk': clients_per_chunk,
      'first_round_s': times[0],
      'round_s': times[1],
      'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      'rss_before_mib': rss_before_mib,
      'data_mib': sum(a.nbytes for a in data.values()) / 2**20,
      'num_examples': int(metrics['client_work']['train']['num_examples']),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--clients', type=int, nargs='+',
                      default=[1000, 10000, 50000])
  parser.add_argument('--chunk', type=int, nargs='+', default=[1000],
                      help='clients per chunk (0: the whole cohort at once)')
  parser.add_argument('--one', nargs=2, type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    print(json.dumps(measure(args.one[0], args.one[1] or None)))
    return
  print('| clients | clients per chunk | round data (MiB) | RSS before '
        '(MiB) | peak RSS (MiB) | peak - before (MiB) | first round (s) | '
        'round (s) | s per 1k clients |')
  print('|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
  for chunk in args.chunk:
    for clients in args.clients:
      done = subprocess.run(
          [sys.executable, __file__, '--one', str(clients), str(chunk)],
          capture_output=True, text=True, check=False,
          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
      if done.returncode:
        print(f'| {clients} | {chunk or "all"} | failed: '
              f'{done.stderr.strip().splitlines()[-1]} |||||||')
        continue
      r = json.loads(done.stdout.strip().splitlines()[-1])
      print(f"| {clients} | {chunk or 'all'} | {r['data_mib']:.0f} | "
            f"{r['rss_before_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['peak_rss_mib'] - r['rss_before_mib']:.0f} | "
            f"{r['first_round_s']:.2f} | "
            f"{r['round_s']:.2f} | {1000 * r['round_s'] / clients:.3f} |",
            flush=True)


if __name__ == '__main__':
  main()
