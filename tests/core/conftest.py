"""Fresh Python processes for the core tests: started early, and without
recompiling Python.

Processes that tests check run ahead of those tests, on a background thread
from the end of collection (tests/core/children.py); any still running at
the end of the session are killed.

Where bytecode writing is off (PYTHONDONTWRITEBYTECODE, and the
environments hold no `__pycache__`), every fresh interpreter would compile
the sources of jax, flax, scikit-learn and matplotlib again: seconds per
process. For this session, this process and every child write and read
bytecode under one temporary directory instead (PYTHONPYCACHEPREFIX),
removed at the end; no `.pyc` lands next to any source. Nothing a test
asserts depends on either.
"""

import atexit
import os
import shutil
import sys
import tempfile

from tests.core import children

if sys.flags.dont_write_bytecode or os.environ.get('PYTHONDONTWRITEBYTECODE'):
  _PREFIX = tempfile.mkdtemp(prefix='jaxclient-tests-pycache-')
  atexit.register(shutil.rmtree, _PREFIX, ignore_errors=True)
  os.environ['PYTHONPYCACHEPREFIX'] = _PREFIX
  os.environ.pop('PYTHONDONTWRITEBYTECODE', None)
  sys.pycache_prefix = _PREFIX
  sys.dont_write_bytecode = False


def pytest_collection_finish(session):
  if not session.config.option.collectonly:
    children.start()


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  children.stop()
