"""Where jaxclient's step spends time beyond the bare SGD math.

    python -m benchmarks.ablation [--workload 2nn] [--clients 1000 100]

Times `ClientWorkProcess.next` on the benchmark workload as shipped, then
with one part of the step changed at a time (in this process only), beside
the bare SGD steps of the same clients scheduled as jaxclient schedules
them: on an accelerator a `jit(vmap(client_update))` (what the DrJAX peer
compiles); on a CPU one client at a time (`lax.map`) on every device
(`shard_map` over the client mesh), with the data placed there first. Prints
one line per variant: median round time over interleaved repeats and the
ratio to the bare steps. Run it on the machine in question (the device
machine for the GPU rows); it checks nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import jax
import numpy as np
import optax

import jaxclient as jc
from jaxclient import client
from jaxclient import cohort
from benchmarks import workloads
from benchmarks.peers.jaxclient_client_work import functional_model


@contextlib.contextmanager
def _patched(module, name, value):
  original = getattr(module, name)
  setattr(module, name, value)
  try:
    yield
  finally:
    setattr(module, name, original)


BARE = 'the bare SGD steps'


def _variants(learning_rate):
  """name -> (context manager factory, optimizer factory)."""
  tff_sgd = lambda: jc.optimizers.build_sgdm(learning_rate)
  every_step_guarded = lambda: _patched(
      cohort, '_full_batch_step',
      lambda every_client_has_data: client._guarded_batch_step)  # pylint: disable=protected-access
  return {
      'jaxclient as shipped': (contextlib.nullcontext, tff_sgd),
      'every step behind the all-padding select': (every_step_guarded,
                                                   tff_sgd),
      'without zeroing padded rows': (
          lambda: _patched(client, '_zero_padding', lambda b: b), tff_sgd),
      'with optax.sgd (no injected hparams)': (
          contextlib.nullcontext, lambda: optax.sgd(learning_rate)),
  }


def bare_steps(workload, data):
  """The bare SGD steps (`workloads.sgd_client_update`, no metrics, no
  masks) as jaxclient schedules them, and `data` placed for them: `() ->
  outputs` and the placed data (see the module docstring)."""
  update = workloads.sgd_client_update(workload, workloads.LEARNING_RATE)
  params = workload.init()
  if jax.devices()[0].platform != 'cpu':
    data = jax.device_put(data)
    train = jax.jit(jax.vmap(update, in_axes=(None, 0, 0)))
    return lambda: train(params, data['x'], data['y']), data
  mesh = jc.sharding.client_mesh()
  clients = jc.sharding.clients_sharding(mesh).spec
  train = jax.jit(jc.sharding.map_client_shards(
      lambda p, x, y: jax.lax.map(lambda xy: update(p, *xy), (x, y)), mesh,
      in_specs=(jax.sharding.PartitionSpec(), clients, clients),
      out_specs=clients))
  data = jc.sharding.put_clients(data, mesh)
  params = jc.sharding.put_replicated(params, mesh)
  return lambda: train(params, data['x'], data['y']), data


def _seconds(fn):
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m benchmarks.ablation')
  parser.add_argument('--workload', default='2nn',
                      choices=list(workloads.WORKLOADS))
  parser.add_argument('--clients', nargs='+', type=int, default=[1000, 100])
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args(argv)
  workload = workloads.WORKLOADS[args.workload]
  rows = []
  for num_clients in args.clients:
    data = workloads.client_data(workload, num_clients)
    bare, device_data = bare_steps(
        workload, {**data, 'mask': np.ones(data['y'].shape, bool)})
    model = functional_model(workload)
    runs = {BARE: bare}
    for name, (context, optimizer) in _variants(
        workloads.LEARNING_RATE).items():
      with context():
        process = jc.build_model_delta_client_work(
            model, optimizer(), jc.ClientWeighting.NUM_EXAMPLES)
        state = process.initialize()
        jax.block_until_ready(process.next(state, model.initial_weights,
                                           device_data))  # compile patched
      runs[name] = (lambda p=process, s=state: p.next(
          s, model.initial_weights, device_data))
    samples = {name: [] for name in runs}
    for run in runs.values():
      _seconds(run)  # compiles the bare steps; warms the others
    for _ in range(args.repeats):  # interleaved: drift hits all alike
      for name, run in runs.items():
        samples[name].append(_seconds(run))
    base = np.median(samples[BARE])
    for name, times in samples.items():
      rows.append({'clients': num_clients, 'variant': name,
                   'median_s': float(np.median(times)),
                   'vs_bare': float(np.median(times) / base)})
      print(f'{num_clients:5d}  {name:45s} {np.median(times) * 1e3:9.2f} ms'
            f'  {np.median(times) / base:5.2f}x bare', flush=True)
  print(json.dumps({'device': str(jax.devices()[0].device_kind),
                    'rows': rows}))


if __name__ == '__main__':
  main()
