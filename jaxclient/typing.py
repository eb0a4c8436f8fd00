"""Type aliases shared by jaxclient's modules.

They document intent; JAX pytrees are not checked statically.

* `PyTree`: any pytree of arrays (weights, optimizer state, metric states);
* `Hparams`: the client work's state, optimizer hyperparameter name -> scalar;
* `ClientData`: padded data `{'x', 'y', 'mask'}`, the layout `jaxclient.data.
  pack` returns (`[C, B, N, ...]` for a cohort, `[B, N, ...]` for one client).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

__all__ = ['ClientData', 'Hparams', 'PyTree']

PyTree = Any
Hparams = Mapping[str, jax.Array]
ClientData = Mapping[str, jax.Array]
