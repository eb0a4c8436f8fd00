"""The private JAX name behind `jaxclient._jax_internals` still exists and
means what jaxclient relies on: it turns True when JAX starts its backends."""

import subprocess
import sys


def test_backends_started_turns_true_when_jax_starts():
  code = ('import jax; from jaxclient import _jax_internals as j; '
          'before = j.backends_started(); jax.devices(); '
          'print(before, j.backends_started())')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True, timeout=120)
  assert out.stdout.split() == ['False', 'True'], out.stderr
