"""Importing jaxclient_tff outside the TFF env is an ImportError that says
which env it needs and how to create it.

The package ships with jaxclient (the wheel holds both), so it is importable
in the core env (`<repo>/.venv`), which has no TensorFlow or TFF. This test
runs that env's Python in a subprocess; it is skipped when the core env is
absent or has TensorFlow after all.
"""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
CORE_PYTHON = REPO / '.venv' / 'bin' / 'python'


def _core_python_has(module: str) -> bool:
  check = subprocess.run(
      [str(CORE_PYTHON), '-c',
       f'import importlib.util, sys; sys.exit(importlib.util.find_spec('
       f'{module!r}) is None)'],
      capture_output=True, timeout=60, check=False)
  return check.returncode == 0


def test_import_in_the_core_env_says_which_env_it_needs(tmp_path):
  if not CORE_PYTHON.exists():
    pytest.skip(f'no core env at {CORE_PYTHON}')
  if _core_python_has('tensorflow'):
    pytest.skip('the core env has TensorFlow')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['PYTHONPATH'] = str(REPO / 'interop')
  result = subprocess.run(
      [str(CORE_PYTHON), '-c', 'import jaxclient_tff'], cwd=tmp_path,
      env=env, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1, result.stderr
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith('ImportError: jaxclient_tff needs the TFF '
                              'environment'), result.stderr
  for needed in ('TensorFlow Federated 0.87', 'TensorFlow 2.14',
                 'Python 3.11', "No module named 'tensorflow'",
                 'bash scripts/setup.sh tff', '.venv-tff'):
    assert needed in last_line, (needed, result.stderr)
