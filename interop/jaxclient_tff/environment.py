"""The environment jaxclient_tff runs in, and the error outside it.

jaxclient_tff ships with jaxclient (the project's wheel holds both), so it
is importable wherever jaxclient is installed; it runs only in the TFF env.
Importing it where a module of that env is missing is an `ImportError`
(`missing_tff_env_error`) that names the env and how the README creates it,
instead of TensorFlow's bare `No module named 'tensorflow'`. This module
imports nothing outside the standard library.
"""

from __future__ import annotations

import platform
import sys

__all__ = ['TFF_ENV', 'TFF_ENV_MODULES', 'missing_tff_env_error']

TFF_ENV = 'TensorFlow Federated 0.87, TensorFlow 2.14, Python 3.11'
# The top-level modules of the TFF env that jaxclient_tff imports and the
# core env lacks.
TFF_ENV_MODULES = ('tensorflow', 'tensorflow_federated', 'psutil')


def missing_tff_env_error(error: ModuleNotFoundError) -> ImportError | None:
  """The `ImportError` to raise for `error`, or None when the missing
  module is not one of `TFF_ENV_MODULES` (a broken env, not the wrong one:
  its error is clearer as it is)."""
  if error.name not in TFF_ENV_MODULES:
    return None
  return ImportError(
    f'jaxclient_tff needs the TFF environment ({TFF_ENV}), and this '
    f'Python ({sys.executable}, Python {platform.python_version()}) is not '
    f'it: {error}. jaxclient itself needs neither TensorFlow nor TFF. '
    'Create the TFF environment as the README says, `bash scripts/setup.sh '
    'tff` (the env `.venv-tff`, from `envs/tff/uv.lock`), and run '
    '`.venv-tff/bin/python`.',
    name=error.name,
  )
