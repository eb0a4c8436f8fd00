"""Small CPU measurements behind benchmarks/README.md ("Where the time goes").

    python -m benchmarks.probes ceiling     # the 2NN's matmuls alone
    python -m benchmarks.probes blocks 1000 1 2 5 20   # clients, block sizes
    python -m benchmarks.probes overhead    # Python work in `next` per call
    python -m benchmarks.probes bare 100    # the bare SGD step, one client
                                            # at a time on each device
    python -m benchmarks.probes default 100 # `next` as a newcomer runs it
    python -m benchmarks.probes widths 100 8 32 64 200  # one client at a
                                            # time against vmapped blocks

Each prints one line per measurement (medians); none asserts anything.
`bare` and `default` use every device JAX shows (`import jaxclient` makes
one per core; `JAXCLIENT_CPU_DEVICES=1` one in all); pin them with
`taskset -c 0` for one core, or run two pinned at once
(`taskset -c 0 ... & taskset -c 1 ...`) for two independent processes.
They also print the process's CPU time over wall time: how many cores the
round kept busy.
"""

from __future__ import annotations

import functools
import sys
import time

import jaxclient as jc  # First: one CPU device per core, before JAX starts.

import jax
import numpy as np
from jax import lax

from jaxclient import client_work
from benchmarks import ablation, workloads
from benchmarks.peers.jaxclient_client_work import functional_model

TWO_NN = workloads.WORKLOADS['2nn']


def _median_seconds(fn, repeats=5):
  jax.block_until_ready(fn())
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    samples.append(time.perf_counter() - start)
  return float(np.median(samples))


def ceiling(num_clients=10, num_batches=10, batch_size=20):
  """The 2NN step's matmuls only (forward, weight and input gradients, no
  element-wise work), per client at `batch_size` rows, vmapped over clients
  in a scan over batches: the most the full step could reach."""
  rng = np.random.default_rng(0)
  dims = [(784, 200), (200, 200), (200, 10)]
  weights = [rng.normal(size=(num_clients,) + d).astype(np.float32)
             for d in dims]
  x = rng.normal(size=(num_clients, num_batches, batch_size, 784)).astype(
      np.float32)

  def client(ws, xs):
    def step(ws, x):
      acts = [x]
      for w in ws:
        acts.append(acts[-1] @ w)
      dy, new = acts[-1], []
      for i in reversed(range(len(ws))):
        new.append(ws[i] - 1e-3 * (acts[i].T @ dy))
        if i:
          dy = dy @ ws[i].T
      return new[::-1], None
    return lax.scan(step, ws, xs)[0]

  train = jax.jit(jax.vmap(client))
  seconds = _median_seconds(lambda: train(weights, x))
  flops = num_clients * num_batches * TWO_NN.train_flops_per_example() * (
      batch_size)
  print(f'2NN matmuls only, {num_clients} clients: {seconds * 1e3:.1f} ms, '
        f'{flops / seconds / 1e9:.1f} GFLOP/s')


def blocks(num_clients, *block_sizes):
  """jaxclient's `next` on the 2NN with each client block size."""
  data = workloads.client_data(TWO_NN, num_clients)
  data = jax.device_put({**data, 'mask': np.ones(data['y'].shape, bool)})
  model = functional_model(TWO_NN)
  for block in block_sizes:
    process = jc.build_model_delta_client_work(
        model, jc.optimizers.build_sgdm(workloads.LEARNING_RATE),
        jc.ClientWeighting.NUM_EXAMPLES, strategy=jc.cohort.Blocked(block))
    state = process.initialize()
    seconds = _median_seconds(
        lambda p=process, s=state: p.next(s, model.initial_weights, data), 3)
    print(f'2NN, {num_clients} clients, blocks of {block}: '
          f'{data["y"].size / seconds:,.0f} examples/s')


def overhead(calls=300):
  """`next` against its jitted program called directly, on a tiny cohort."""
  data = workloads.client_data(TWO_NN, 2, num_batches=1, batch_size=2)
  data = jax.device_put({**data, 'mask': np.ones(data['y'].shape, bool)})
  model = functional_model(TWO_NN)
  process = jc.build_model_delta_client_work(
      model, jc.optimizers.build_sgdm(workloads.LEARNING_RATE),
      jc.ClientWeighting.NUM_EXAMPLES)
  state, weights = process.initialize(), model.initial_weights

  def per_call(fn):  # Waits for every call: more than 32 unfinished
    jax.block_until_ready(fn())  # programs over CPU devices can deadlock
    start = time.perf_counter()  # (docs/dependencies.md).
    for _ in range(calls):
      jax.block_until_ready(fn())
    return (time.perf_counter() - start) / calls
  full = per_call(lambda: process.next(state, weights, data))
  program_fn = jax.jit(functools.partial(
      client_work._next_program, process.training,  # pylint: disable=protected-access
      jc.metrics.sum_then_finalize(process.training.metrics)),
                       static_argnames=('strategy', 'num_clients'))
  strategy = process.plan(data).strategy
  placed_weights, placed_data = client_work._placed(  # pylint: disable=protected-access
      strategy, weights, data, False)
  program = per_call(lambda: program_fn(
      state, placed_weights, placed_data, None, strategy=strategy,
      num_clients=2))
  print(f'next {full * 1e6:.0f} us per call, its program alone '
        f'{program * 1e6:.0f} us: checks and dispatch '
        f'{(full - program) * 1e6:.0f} us')


def _rate(fn, examples, repeats=5):
  """Median examples/s of `fn`, and its CPU time over wall time."""
  jax.block_until_ready(fn())
  rates, busy = [], []
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rates.append(examples / wall)
    busy.append(cpu / wall)
  return (f'{np.median(rates):,.0f} examples/s, '
          f'{np.median(busy):.2f} cores busy')


def bare(num_clients):
  """The bare SGD steps as jaxclient schedules them on a CPU
  (`ablation.bare_steps`): one client at a time (`lax.map`), each device
  training its share of the clients (`shard_map`); no metrics, no masks."""
  data = workloads.client_data(TWO_NN, num_clients)
  train, _ = ablation.bare_steps(TWO_NN, data)
  print(f'bare step, {num_clients} clients one at a time on '
        f'{jax.device_count()} device(s): {_rate(train, data["y"].size)}')


def default(num_clients):
  """`next` as a newcomer runs it: host data, nothing set."""
  data = workloads.client_data(TWO_NN, num_clients)
  data = {**data, 'mask': np.ones(data['y'].shape, bool)}
  model = functional_model(TWO_NN)
  process = jc.build_model_delta_client_work(
      model, jc.optimizers.build_sgdm(workloads.LEARNING_RATE),
      jc.ClientWeighting.NUM_EXAMPLES)
  state = process.initialize()
  print(f'plan: {process.plan(data).reason}')
  print(f'next, {num_clients} clients: ' + _rate(
      lambda: process.next(state, model.initial_weights, data),
      data['y'].size))


def _mlp(width):
  return workloads.Workload(
      f'784-{width}-10', 'MLP', (784,), 10,
      (workloads.Layer('dense', width, 'relu'), workloads.Layer('dense', 10)))


def widths(num_clients, *hidden):
  """jaxclient on one device, 784-h-10 MLPs: one client at a time against
  vmapped blocks of 10, interleaved (where `CPU_ONE_CLIENT_BYTES` lies)."""
  for width in hidden:
    workload = _mlp(width)
    data = workloads.client_data(workload, num_clients)
    data = jax.device_put({**data, 'mask': np.ones(data['y'].shape, bool)},
                          jax.devices()[0])
    model = functional_model(workload)
    runs = {}
    for block in (1, 10):
      process = jc.build_model_delta_client_work(
          model, jc.optimizers.build_sgdm(workloads.LEARNING_RATE),
          jc.ClientWeighting.NUM_EXAMPLES, strategy=jc.cohort.Blocked(block))
      runs[block] = functools.partial(process.next, process.initialize(),
                                      model.initial_weights, data)
    samples = {block: [] for block in runs}
    for run in runs.values():
      jax.block_until_ready(run())
    for _ in range(5):  # interleaved: load hits both alike
      for block, run in runs.items():
        start = time.perf_counter()
        jax.block_until_ready(run())
        samples[block].append(time.perf_counter() - start)
    rates = {b: data['y'].size / np.median(t) for b, t in samples.items()}
    kib = 4 * (784 * width + width + width * 10 + 10) / 1024
    print(f'784-{width}-10 ({kib:.0f} KiB): one at a time {rates[1]:,.0f}, '
          f'blocks of 10 {rates[10]:,.0f} examples/s '
          f'({rates[1] / rates[10]:.2f}x)')


if __name__ == '__main__':
  command, *args = sys.argv[1:] or ['ceiling']
  {'ceiling': ceiling, 'blocks': blocks, 'overhead': overhead, 'bare': bare,
   'default': default, 'widths': widths}[command](*map(int, args))
