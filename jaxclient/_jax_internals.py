"""The one private JAX name jaxclient uses, isolated here.

`backends_started()` tells whether JAX has created its backends (after which
the CPU device count is fixed). JAX has no public query for it in 0.4.30 or
0.10: `jax.extend.backend` offers `backends()`, which would START them.
It reads `jax._src.xla_bridge.backends_are_initialized`, present in every
jax from 0.4.14 to 0.10.2; `tests/core/test_jax_internals.py` fails loudly
if a jax release removes it.
"""

from __future__ import annotations

__all__: list[str] = []


def backends_started() -> bool:
  """True once JAX has initialized its backends (devices are fixed)."""
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  return xla_bridge.backends_are_initialized()
