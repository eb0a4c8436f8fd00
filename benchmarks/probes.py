"""Small CPU measurements behind benchmarks/README.md ("Where the time goes").

    python -m benchmarks.probes ceiling     # the 2NN's matmuls alone
    python -m benchmarks.probes blocks 1000 1 2 5 20   # clients, block sizes
    python -m benchmarks.probes overhead    # Python work in `next` per call

Each prints one line per measurement (medians); none asserts anything.
"""

from __future__ import annotations

import functools
import sys
import time

import jax
import numpy as np
from jax import lax

import jaxclient as jc
from jaxclient import client_work
from benchmarks import workloads
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

  def per_call(fn):
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(calls):
      out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls
  full = per_call(lambda: process.next(state, weights, data))
  program_fn = jax.jit(functools.partial(
      client_work._next_program, process.training,  # pylint: disable=protected-access
      jc.metrics.sum_then_finalize(process.training.metrics)),
                       static_argnames='strategy')
  strategy = process.plan(data).strategy
  program = per_call(lambda: program_fn(state, weights, data, None,
                                        strategy=strategy))
  print(f'next {full * 1e6:.0f} us per call, its program alone '
        f'{program * 1e6:.0f} us: checks and dispatch '
        f'{(full - program) * 1e6:.0f} us')


if __name__ == '__main__':
  command, *args = sys.argv[1:] or ['ceiling']
  {'ceiling': ceiling, 'blocks': blocks, 'overhead': overhead}[command](
      *map(int, args))
