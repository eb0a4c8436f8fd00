"""`local_cpp_execution_context` stops the worker it started, and only it;
a worker started by TFF's default context is stopped at interpreter exit."""

import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import tensorflow_federated as tff

import jaxclient_tff
from jaxclient_tff import runtime

HERE = pathlib.Path(__file__).resolve().parent
# Generous: the child imports TF and TFF and builds a process, on 2 shared
# cores.
CHILD_TIMEOUT_S = 300
WORKER_EXIT_TIMEOUT_S = 30


@tff.tensorflow.computation(tff.TensorType(np.float32))
def _add_one(x):
  return x + 1.0


def test_nested_context_stops_its_worker_and_keeps_the_outer_one():
  assert _add_one(1.0) == 2.0  # The session context's worker is running.
  outer = {p.pid for p in runtime.worker_processes()}
  assert len(outer) == 1
  with jaxclient_tff.local_cpp_execution_context():
    assert _add_one(2.0) == 3.0
    inner = {p.pid for p in runtime.worker_processes()} - outer
    assert len(inner) == 1
  assert {p.pid for p in runtime.worker_processes()} == outer
  assert _add_one(3.0) == 4.0  # The outer context still works.


# Builds a process and initializes it on TFF's default context (no
# `local_cpp_execution_context`), which starts a worker; prints the workers'
# pids and exits.
_DEFAULT_CONTEXT_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import jaxclient_tff
    from jaxclient_tff import runtime
    import tensorflow_federated as tff
    import twins

    process = jaxclient_tff.build_model_delta_client_work(
        twins.linear_twin().jax_model_fn,
        tff.learning.optimizers.build_sgdm(0.1), twins.NUM_EXAMPLES)
    process.initialize()
    print('WORKERS', *[p.pid for p in runtime.worker_processes()],
          flush=True)
""")


def _alive(pid: int) -> bool:
  """Whether `pid` is a running (not zombie) worker."""
  try:
    process = psutil.Process(pid)
    return (process.name() == runtime.WORKER_NAME and
            process.status() != psutil.STATUS_ZOMBIE)
  except psutil.NoSuchProcess:
    return False


def test_worker_of_the_default_context_is_stopped_at_exit(tmp_path):
  output = tmp_path / 'child.log'
  # The worker inherits the child's stdout: a file, not a pipe, so that a
  # surviving worker cannot keep this test waiting for end-of-file.
  with output.open('w') as log:
    child = subprocess.run(
        [sys.executable, '-c', _DEFAULT_CONTEXT_CHILD, str(HERE)],
        stdout=log, stderr=subprocess.STDOUT, timeout=CHILD_TIMEOUT_S,
        check=False)
  text = output.read_text()
  # What this test guards is the worker, not the child's exit status: once
  # in a loaded clean-clone run, TF's own teardown crashed the child
  # (SIGSEGV, after it printed its workers); never seen when run alone.
  assert child.returncode in (0, -signal.SIGSEGV), text
  lines = [line for line in text.splitlines() if line.startswith('WORKERS')]
  assert len(lines) == 1, text
  pids = [int(pid) for pid in lines[0].split()[1:]]
  assert pids, f'initialize() started no worker: {text}'
  deadline = time.monotonic() + WORKER_EXIT_TIMEOUT_S
  while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
    time.sleep(0.2)
  survivors = [pid for pid in pids if _alive(pid)]
  for pid in survivors:  # Leave no worker behind, even when failing.
    psutil.Process(pid).kill()
  assert not survivors, f'workers outlived their Python process: {survivors}'
