"""Fresh Python processes, run ahead of the tests that check them.

Many core tests check a fresh interpreter: device counts are fixed when JAX
starts, a multi-host run needs several processes, `python -m jaxclient` is
a process. Each takes seconds of one core while the suite's own process
would wait for it. Instead, a test module names the processes its tests
will check when it is imported (`ahead`); once the suite is collected
(conftest.py) they run one group at a time on a background thread, on the
core that the in-process tests leave idle, and a test waits for its own
(`result`), running it at once if it has not started yet. What a test
asserts does not depend on when its processes ran.
"""

import dataclasses
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable

REPO = os.path.dirname(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


@dataclasses.dataclass(eq=False)
class _Group:
  """Processes started side by side (e.g. the hosts of one multi-host run)."""

  commands: list[list[str]] | Callable[[], list[list[str]]]
  env: dict[str, str] | None
  cwd: str | None
  timeout: float
  claimed: bool = False
  running: list[subprocess.Popen] = dataclasses.field(default_factory=list)
  done: threading.Event = dataclasses.field(default_factory=threading.Event)
  outcome: list[subprocess.CompletedProcess] | BaseException | None = None


_GROUPS: dict[str, _Group] = {}
_LOCK = threading.Lock()
_STOPPED = threading.Event()
_SCRATCH: list[str] = []


def ahead(name, commands, *, env=None, cwd=REPO, timeout=120):
  """Registers the processes that `result(name)` returns.

  Args:
    name: the key a test passes to `result`.
    commands: `[argv, ...]`, or `() -> [argv, ...]` called when the group
      starts (so that a free port is still free then); the processes run
      side by side.
    env: their environment (default: this process's).
    cwd: their working directory (default: the repository root).
    timeout: seconds from the group's start until its processes are killed
      and `result` raises `subprocess.TimeoutExpired`.
  """
  assert name not in _GROUPS, f'{name} is registered twice'
  _GROUPS[name] = _Group(commands, env, cwd, timeout)


def result(name) -> list[subprocess.CompletedProcess]:
  """The finished processes of `name` (stdout and stderr as text), in the
  order of its commands; runs them now if they have not started."""
  group = _GROUPS[name]
  if _claim(group):
    _run(group)
  group.done.wait()
  if isinstance(group.outcome, BaseException):
    raise group.outcome
  return group.outcome


def scratch(name) -> str:
  """A path in a directory of this session for a process's output file."""
  with _LOCK:
    if not _SCRATCH:
      _SCRATCH.append(tempfile.mkdtemp(prefix='jaxclient-children-'))
  return os.path.join(_SCRATCH[0], name)


def _claim(group) -> bool:
  with _LOCK:
    claimed, group.claimed = group.claimed, True
  return not claimed


def _run(group):
  try:
    commands = group.commands
    for argv in commands() if callable(commands) else commands:
      group.running.append(subprocess.Popen(
        argv, cwd=group.cwd, env=group.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + group.timeout
    outputs = [p.communicate(timeout=max(0.0, deadline - time.monotonic()))
               for p in group.running]
    group.outcome = [
      subprocess.CompletedProcess(p.args, p.returncode, out, err)
      for p, (out, err) in zip(group.running, outputs)
    ]
  except BaseException as e:  # noqa: BLE001 - raised again by `result`.
    group.outcome = e
  finally:
    _kill(group)
    group.done.set()


def _kill(group):
  for p in group.running:
    if p.poll() is None:
      p.kill()
      p.wait()


def start():
  """Runs every registered group, one at a time, on a background thread."""

  def run_all():
    for group in list(_GROUPS.values()):
      if _STOPPED.is_set():
        return
      if _claim(group):
        _run(group)

  threading.Thread(target=run_all, name='children.ahead', daemon=True).start()


def stop():
  """Starts no more groups, kills the running ones' processes and removes
  the scratch directory (at the end of the session)."""
  _STOPPED.set()
  for group in list(_GROUPS.values()):
    _kill(group)
  for directory in _SCRATCH:
    shutil.rmtree(directory, ignore_errors=True)
