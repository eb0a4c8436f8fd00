"""The interop suite's TFF runtime: one local C++ execution context for the
session, and no `worker_binary` left behind (it would outlive pytest and hold
stdout open, so `pytest ... | cat` would hang).

The suite needs the TFF env (`.venv-tff`); in an env without TFF (the core
env) its tests are not collected.
"""

import importlib.util

import pytest

if importlib.util.find_spec('tensorflow_federated') is None:
  collect_ignore_glob = ['test_*.py']


@pytest.fixture(scope='session', autouse=True)
def tff_runtime():
  """One local C++ execution context for the whole suite."""
  import jaxclient_tff  # pylint: disable=g-import-not-at-top
  with jaxclient_tff.local_cpp_execution_context():
    yield


def pytest_sessionfinish(session, exitstatus):
  """Safety net: kills any worker still alive (e.g. after an interrupted
  session fixture), so that piping pytest's output never hangs."""
  del session, exitstatus
  if importlib.util.find_spec('tensorflow_federated') is not None:
    from jaxclient_tff import runtime  # pylint: disable=g-import-not-at-top
    runtime.shutdown_workers()
