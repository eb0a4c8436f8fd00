"""Input checks shared by the client work and the algorithms built on it.

Every error names the field, the expected and the found shape or dtype;
nothing is broadcast or truncated silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, overload

import jax
import jax.numpy as jnp
import numpy as np

from jaxclient.models import ModelWeights

DATA_KEYS = ('x', 'y', 'mask')


def is_int(value) -> bool:
  """A Python or numpy integer, not a bool (so `np.int64(4)` counts)."""
  return isinstance(value, (int, np.integer)) and not isinstance(
    value, (bool, np.bool_)
  )


@overload
def check_int(
  field: str, value: Any, *, minimum: int = ..., optional: Literal[False] = ...
) -> int: ...


@overload
def check_int(
  field: str, value: Any, *, minimum: int = ..., optional: bool
) -> int | None: ...


def check_int(
  field: str, value: Any, *, minimum: int = 1, optional: bool = False
) -> int | None:
  """`value` as a Python int when it is an int >= `minimum` (None passes
  when `optional`); else a ValueError naming `field`, e.g.
  "batch_size: expected a positive int, found 0."."""
  if optional and value is None:
    return None
  if not is_int(value) or value < minimum:
    kind = {0: 'a non-negative int', 1: 'a positive int'}.get(
      minimum, f'an int >= {minimum}'
    )
    raise ValueError(
      f'{field}: expected {"None or " if optional else ""}'
      f'{kind}, found {value!r}.'
    )
  return int(value)


def _dtype(leaf) -> np.dtype:
  """The dtype JAX computes `leaf` in; a non-numeric one (strings, objects)
  as it is, without asking JAX (whose error would print every value)."""
  dtype = getattr(leaf, 'dtype', None)
  dtype = np.asarray(leaf).dtype if dtype is None else np.dtype(dtype)
  return dtype if dtype.kind in 'OSUVMm' else np.dtype(jnp.result_type(leaf))


def _describe(leaf) -> str:
  return f'shape {tuple(np.shape(leaf))} {_dtype(leaf)}'


def check_weights(
  reference, weights, num_clients: int | None, field: str = 'weights'
) -> bool:
  """Checks `weights` against the model's `reference` `ModelWeights`.

  Args:
    reference: the model's initial `ModelWeights`.
    weights: one `ModelWeights` (shared by every client) or one per client
      stacked on a leading axis of length `num_clients`.
    num_clients: the cohort size, or None when only one client is trained.
    field: the name used in error messages.

  Returns:
    True when `weights` carry a leading client axis.

  Raises:
    TypeError / ValueError naming the leaf, the expected and found shape.
  """
  if not isinstance(weights, ModelWeights):
    raise TypeError(
      f'{field}: expected a jaxclient.ModelWeights, found '
      f'{type(weights).__name__}.'
    )
  ref_leaves, ref_tree = jax.tree_util.tree_flatten_with_path(reference)
  leaves, tree = jax.tree_util.tree_flatten(weights)
  if tree != ref_tree:  # type: ignore[operator]  # PyTreeDef's stub
    raise ValueError(
      f"{field}: structure does not match the model's weights;"
      f' expected {ref_tree}, found {tree}.'
    )
  per_client = set()
  for (path, ref), leaf in zip(ref_leaves, leaves, strict=True):
    name = field + jax.tree_util.keystr(path)
    ref_shape, shape = tuple(np.shape(ref)), tuple(np.shape(leaf))
    if _dtype(leaf) != _dtype(ref):
      raise ValueError(
        f'{name}: expected dtype {_dtype(ref)}, found {_describe(leaf)}.'
      )
    if shape == ref_shape:
      per_client.add(False)
    elif num_clients is not None and shape == (num_clients,) + ref_shape:
      per_client.add(True)
    else:
      expected = f'{ref_shape}' + (
        f' or, one per client, {(num_clients,) + ref_shape}'
        if num_clients is not None
        else ''
      )
      raise ValueError(
        f'{name}: expected shape {expected}, found {_describe(leaf)}.'
      )
  if len(per_client) > 1:
    raise ValueError(
      f'{field}: some leaves have a leading client axis and '
      'some do not; give one ModelWeights for all clients or '
      'stack every leaf per client.'
    )
  return per_client == {True}


def check_client_data(
  input_spec: Mapping[str, jax.ShapeDtypeStruct],
  data: Any,
  leading: tuple[str, ...],
  field: str = 'client_data',
) -> None:
  """Checks padded client data: `{'x', 'y', 'mask'}` with `leading` axes.

  Args:
    input_spec: the model's spec of one example (`'x'`, optionally `'y'`).
    data: the mapping to check.
    leading: names of the leading axes, e.g. `('clients', 'batches',
      'batch_size')`; `mask` has exactly these axes.
    field: the name used in error messages.
  """
  if not isinstance(data, Mapping):
    raise TypeError(
      f'{field}: expected a mapping with keys {list(DATA_KEYS)},'
      f' found {type(data).__name__}.'
    )
  missing = [k for k in DATA_KEYS if k not in data]
  extra = sorted(set(data) - set(DATA_KEYS))
  if missing or extra:
    raise ValueError(
      f'{field}: expected exactly keys {list(DATA_KEYS)}; '
      f'missing {missing}, unexpected {extra}.'
    )
  mask = data['mask']
  axes = '[' + ', '.join(leading) + ']'
  if np.ndim(mask) != len(leading) or _dtype(mask) != np.bool_:
    raise ValueError(
      f"{field}['mask']: expected a bool array of shape "
      f'{axes}, found {_describe(mask)}.'
    )
  lead = tuple(np.shape(mask))
  if leading[0] == 'clients' and lead[0] == 0:
    raise ValueError(
      f"{field}['mask']: expected at least one client, found shape {lead}."
    )
  if 0 in lead:
    raise ValueError(
      f"{field}['mask']: expected every axis of {axes} to be at least 1, "
      f'found shape {lead}.'
    )
  for key in ('x', 'y'):
    value = data[key]
    spec = input_spec.get(key)
    if spec is None:
      if tuple(np.shape(value))[: len(lead)] != lead:
        raise ValueError(
          f"{field}['{key}']: expected leading shape {lead} "
          f"(as 'mask'), found {_describe(value)}."
        )
      continue
    expected_shape = lead + tuple(spec.shape)
    expected_dtype = jax.dtypes.canonicalize_dtype(spec.dtype)
    if (
      tuple(np.shape(value)) != expected_shape
      or _dtype(value) != expected_dtype
    ):
      raise ValueError(
        f"{field}['{key}']: expected shape {expected_shape} {expected_dtype}"
        f" ({axes} + input_spec['{key}']), found {_describe(value)}."
      )
