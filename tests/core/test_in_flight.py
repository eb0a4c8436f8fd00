"""Loops that never wait for a result finish, on several CPU devices.

XLA:CPU (jaxlib 0.10.2) deadlocks and aborts the process once more than 32
programs communicating between the CPU devices of one process are in
flight; jaxclient keeps its own below that (`jaxclient._in_flight`). Each
case runs in a fresh process with two CPU devices, under a deadline.
"""

import os
import subprocess
import sys
import textwrap

import pytest

CALLS = 100  # Well past the 32 programs in flight that deadlock.
ROUNDS = 40  # FedAvg launches two programs a round.

SCRIPT = textwrap.dedent(f"""
    import numpy as np
    import optax
    import jax
    import jaxclient as jc
    from tests.core import toy_models

    assert jax.device_count() == 2, jax.devices()
    # Each call trains for longer than it takes to launch the next one (the
    # data already on the devices), so a loop that never waits fills the
    # queue.
    model = toy_models.softmax_regression(784, 10)
    rng = np.random.default_rng(0)
    data = {{'x': rng.normal(size=(8, 10, 50, 784)).astype(np.float32),
            'y': rng.integers(0, 10, size=(8, 10, 50)).astype(np.int32),
            'mask': np.ones((8, 10, 50), bool)}}
    work = jc.build_model_delta_client_work(
        model, optax.sgd(0.01), jc.ClientWeighting.NUM_EXAMPLES)
    fedavg = jc.algorithms.build_weighted_fed_avg(model, optax.sgd(0.01))

    on_devices = jc.sharding.put_clients(data, jc.sharding.client_mesh())
    outputs = [work.next(work.initialize(), model.initial_weights, on_devices)
               for _ in range({CALLS})]

    def train(wait):
      state = fedavg.initialize()
      for _ in range({ROUNDS}):
        state = fedavg.next(state, data).state
        if wait:
          jax.block_until_ready(state)
      return fedavg.get_model_weights(state).trainable

    never_waits, waits = train(False), train(True)
    for one, other in ((never_waits, waits), (outputs[0], outputs[-1])):
      for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(other)):
        np.testing.assert_array_equal(a, b)
    print('finished', float(outputs[-1].result.update_weight.sum()))
""")


def test_loops_that_never_wait_finish_and_equal_loops_that_wait():
  root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
  env = {
    **os.environ,
    'JAXCLIENT_CPU_DEVICES': '2',
    'JAX_PLATFORMS': 'cpu',
    'PYTHONPATH': root,
  }
  try:
    run = subprocess.run(
      [sys.executable, '-c', SCRIPT],
      env=env,
      cwd=root,
      capture_output=True,
      text=True,
      timeout=150,
    )
  except subprocess.TimeoutExpired as error:
    pytest.fail(f'the loops did not finish in 150 s: {error.stderr!r:.2000}')
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'finished 4000.0' in run.stdout, run.stdout
