"""TFF's local C++ runtime, started and stopped cleanly.

TFF's sync local C++ execution context starts a `worker_binary` child process
on first use. It outlives the Python process (TFF only stops it from a
`__del__` that rarely runs at interpreter exit) and inherits stdout, so a
pipeline such as `python script.py | cat` never sees end-of-file and hangs.
`local_cpp_execution_context` installs the context and, on exit, restores
the previous one and stops the worker it started; `shutdown_workers` kills
this process's workers (e.g. one started by TFF's default context).

Importing this module (so importing `jaxclient_tff`) registers
`shutdown_workers` with `atexit`: a worker that TFF's default context
started (e.g. by `initialize()` outside `local_cpp_execution_context`) is
stopped when the interpreter exits normally. Nothing runs at exit on a
signal that kills Python or on `os._exit`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc

import psutil
import tensorflow_federated as tff

__all__ = [
  'WORKER_NAME',
  'local_cpp_execution_context',
  'shutdown_workers',
  'worker_processes',
]

WORKER_NAME = 'worker_binary'


def _is_worker(process: psutil.Process) -> bool:
  try:
    return process.name() == WORKER_NAME
  except psutil.NoSuchProcess:  # Exited since it was listed.
    return False


def worker_processes() -> list[psutil.Process]:
  """TFF C++ workers that are children of this Python process."""
  return [p for p in psutil.Process().children(recursive=True) if _is_worker(p)]


def shutdown_workers(keep=(), timeout: float = 10.0) -> None:
  """Kills this process's TFF workers, except the pids in `keep`, and waits
  for them to exit (reaping them). A context whose worker was killed cannot
  restart it, so kill only workers whose context is no longer used.
  Registered with `atexit` (see the module docstring)."""
  workers = [p for p in worker_processes() if p.pid not in set(keep)]
  for worker in workers:
    with contextlib.suppress(psutil.NoSuchProcess):
      worker.kill()
  psutil.wait_procs(workers, timeout=timeout)


# At exit no context is used any more, so every worker may go. Registered
# once: a module is imported once per interpreter.
atexit.register(shutdown_workers)


@contextlib.contextmanager
def local_cpp_execution_context(**context_kwargs):
  """Runs the body on a fresh sync local C++ execution context.

  On exit the previous context is back and the worker this context started
  is gone: it is killed before the context is dropped (TFF's own stop sends
  SIGINT and then waits without a limit, which hung once under heavy load),
  so that TFF's stop only reaps it. Workers of enclosing contexts keep
  running.

  Args:
    **context_kwargs: for `tff.backends.native.
      create_sync_local_cpp_execution_context` (e.g. `default_num_clients`).
  """
  workers_before = [p.pid for p in worker_processes()]
  context = tff.backends.native.create_sync_local_cpp_execution_context(
    **context_kwargs
  )
  try:
    with tff.framework.get_context_stack().install(context):
      yield
  finally:
    for worker in worker_processes():
      if worker.pid not in workers_before:
        worker.kill()
    del context
    gc.collect()
    shutdown_workers(keep=workers_before)
