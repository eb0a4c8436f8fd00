"""The private JAX name behind `jaxclient._jax_internals` still exists and
means what jaxclient relies on: it turns True when JAX starts its backends."""

import sys

from tests.core import children

_CODE = ('import jax; from jaxclient import _jax_internals as j; '
         'before = j.backends_started(); jax.devices(); '
         'print(before, j.backends_started())')
children.ahead('backends started', [[sys.executable, '-c', _CODE]],
               cwd=None)


def test_backends_started_turns_true_when_jax_starts():
  (out,) = children.result('backends started')
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ['False', 'True'], out.stderr
