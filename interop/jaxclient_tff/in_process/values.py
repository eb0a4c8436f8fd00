"""The in-process runtime's values, and their way in and out.

Inside the runtime a tensor is a numpy array, a struct a `tff.structure.
Struct`, a sequence a `tf.data.Dataset` or a Python list of batches (kept as
given until a TensorFlow computation needs a dataset), a function a Python
callable, and a federated value a `Federated`: one member per client at
CLIENTS, one at SERVER. An all-equal CLIENTS value (a broadcast) holds the
SAME object once per client; the cohort path of `federated_map` relies on
that identity to pass it once instead of stacking copies.

`ingest` turns the Python arguments of a call into these values, driven by
the parameter type; `client_counts` and `expand_all_equal` settle the number
of clients; `to_python` turns the result back (before TFF's
`type_to_py_container` restores the Python containers). `stack_members` and
`unstack_members` are the cohort path's view of a federated value: leaves
stacked over clients (or shared) and back.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

__all__ = [
  'CLIENTS',
  'SERVER',
  'CardinalityError',
  'Federated',
  'as_dataset',
  'check_members',
  'client_counts',
  'expand_all_equal',
  'flatten',
  'ingest',
  'leaf_types',
  'pack',
  'stack_members',
  'tensor_specs',
  'to_python',
  'tree_map',
  'unstack_members',
  'zeros',
]

CLIENTS = tff.CLIENTS.uri
SERVER = tff.SERVER.uri
Struct = tff.structure.Struct


class CardinalityError(ValueError):
  """Federated values disagree on the number of members of a placement."""


@dataclasses.dataclass
class Federated:
  """A federated value: `members` has one entry per participant of
  `placement` (one at SERVER); `all_equal` as in `tff.FederatedType`."""

  placement: str
  all_equal: bool
  members: list


def tree_map(fn: Callable, *values):
  """`fn` over the leaves of equally-structured Structs."""
  if isinstance(values[0], Struct):
    columns = [tff.structure.to_elements(v) for v in values]
    return Struct(
      [
        (name, tree_map(fn, *[c[i][1] for c in columns]))
        for i, (name, _) in enumerate(columns[0])
      ]
    )
  return fn(*values)


def flatten(value) -> list:
  """The leaves of `value` in TFF's leaf order."""
  return tff.structure.flatten(value) if isinstance(value, Struct) else [value]


def pack(type_spec, leaves: Iterator):
  """A value of `type_spec` from its leaves in TFF's leaf order."""
  if isinstance(type_spec, tff.StructType):
    return Struct(
      [
        (name, pack(t, leaves))
        for name, t in tff.structure.to_elements(type_spec)
      ]
    )
  return next(leaves)


def zeros(type_spec):
  """The zero of a tensor or struct type (the sum of no clients)."""
  if isinstance(type_spec, tff.StructType):
    return Struct(
      [(name, zeros(t)) for name, t in tff.structure.to_elements(type_spec)]
    )
  if isinstance(type_spec, tff.TensorType):
    return np.zeros(type_spec.shape, type_spec.dtype)
  raise NotImplementedError(
    f'jaxclient_tff in-process runtime: no zero of type {type_spec}.'
  )


def check_members(value, placement: str, count: int, where: str) -> None:
  """`value` is a `Federated` at `placement` with `count` members."""
  if not isinstance(value, Federated):
    raise TypeError(
      f'{where}: expected a value placed at {placement}, found '
      f'{type(value).__name__}.'
    )
  if value.placement != placement:
    raise TypeError(
      f'{where}: expected a value placed at {placement}, found one at '
      f'{value.placement}.'
    )
  if len(value.members) != count:
    raise CardinalityError(
      f'{where}: the {placement} value has {len(value.members)} members, '
      f'but {placement} has {count}.'
    )


def _batch_runs(batches: list) -> list[list]:
  """Consecutive batches of the same shapes, grouped."""
  runs: list[list] = []
  for batch in batches:
    shapes = [np.shape(leaf) for leaf in tf.nest.flatten(batch)]
    if runs and runs[-1][0] == shapes:
      runs[-1][1].append(batch)
    else:
      runs.append([shapes, [batch]])
  return [run for _, run in runs]


def tensor_specs(type_spec):
  """The `tf.TensorSpec` structure of a tensor or struct type: named
  structs as `OrderedDict`s, unnamed ones as tuples."""
  if isinstance(type_spec, tff.TensorType):
    return tf.TensorSpec(type_spec.shape, type_spec.dtype)
  elements = tff.structure.to_elements(type_spec)
  if all(name is not None for name, _ in elements):
    return collections.OrderedDict(
      (name, tensor_specs(t)) for name, t in elements
    )
  return tuple(tensor_specs(t) for _, t in elements)


def as_dataset(value, element_type) -> tf.data.Dataset:
  """A sequence as a `tf.data.Dataset` of `element_type`: a dataset as is,
  a Python list of batches as one dataset of the same batches (batches of
  equal shapes stacked, so no Python generator runs inside TensorFlow)."""
  if isinstance(value, tf.data.Dataset):
    return value
  if not isinstance(value, (list, tuple)):
    raise TypeError(
      'a sequence: expected a tf.data.Dataset or a list of batches, found '
      f'{type(value).__name__}.'
    )
  specs = tensor_specs(element_type)
  if not value:
    empty = tf.nest.map_structure(
      lambda s: np.zeros(
        [0] + [d or 0 for d in s.shape], s.dtype.as_numpy_dtype
      ),
      specs,
    )
    return tf.data.Dataset.from_tensor_slices(empty)
  dataset = None
  for run in _batch_runs(list(value)):
    stacked = tf.nest.map_structure(
      lambda s, *leaves: np.stack(leaves).astype(s.dtype.as_numpy_dtype),
      specs,
      *[tf.nest.pack_sequence_as(specs, tf.nest.flatten(b)) for b in run],
    )
    part = tf.data.Dataset.from_tensor_slices(stacked)
    dataset = part if dataset is None else dataset.concatenate(part)
  return dataset


def _ingest_struct(value, type_spec, compile_fn, path):
  if not isinstance(value, Struct):
    value = tff.structure.from_container(value)
  elements = tff.structure.to_elements(value)
  types = tff.structure.to_elements(type_spec)
  if len(elements) != len(types):
    raise TypeError(
      f'{path}: expected {len(types)} elements for {type_spec}, found '
      f'{len(elements)}.'
    )
  return Struct(
    [
      (name, ingest(v, t, compile_fn, f'{path}.{name or i}'))
      for i, ((_, v), (name, t)) in enumerate(zip(elements, types, strict=True))
    ]
  )


def ingest(value, type_spec, compile_fn: Callable, path: str = 'arg'):
  """A Python argument as a runtime value of `type_spec`. CLIENTS values
  that are not all-equal are lists (one element per client); an all-equal
  value holds one member until `expand_all_equal`. `compile_fn` turns a
  `ConcreteComputation` passed for a function type into a callable."""
  if isinstance(type_spec, tff.FederatedType):
    placement = type_spec.placement.uri
    if placement == CLIENTS and not type_spec.all_equal:
      if not isinstance(value, (list, tuple)):
        raise TypeError(
          f'{path}: a {type_spec} value is a list with one element per '
          f'client, found {type(value).__name__}.'
        )
      return Federated(
        CLIENTS,
        False,
        [
          ingest(v, type_spec.member, compile_fn, f'{path}[{i}]')
          for i, v in enumerate(value)
        ],
      )
    member = ingest(value, type_spec.member, compile_fn, path)
    return Federated(placement, True, [member])
  if isinstance(type_spec, tff.StructType):
    return _ingest_struct(value, type_spec, compile_fn, path)
  if isinstance(type_spec, tff.TensorType):
    if isinstance(value, (tf.Tensor, tf.Variable)):
      value = value.numpy()
    return np.asarray(value, dtype=type_spec.dtype)
  if isinstance(type_spec, tff.SequenceType):
    return value
  if isinstance(type_spec, tff.FunctionType) and isinstance(
    value, tff.framework.ConcreteComputation
  ):
    return compile_fn(value)
  raise NotImplementedError(
    f'jaxclient_tff in-process runtime: {path}: cannot take a value of '
    f'type {type_spec}.'
  )


def client_counts(value, path: str = 'arg', found=None) -> dict[str, int]:
  """`{path: number of clients}` of every CLIENTS value that is not
  all-equal in `value`."""
  found = {} if found is None else found
  if isinstance(value, Federated):
    if value.placement == CLIENTS and not value.all_equal:
      found[path] = len(value.members)
  elif isinstance(value, Struct):
    for i, (name, v) in enumerate(tff.structure.to_elements(value)):
      client_counts(v, f'{path}.{name or i}', found)
  return found


def expand_all_equal(value, num_clients: int) -> None:
  """Gives every all-equal CLIENTS value in `value` one member (the same
  object) per client."""
  if isinstance(value, Federated):
    if value.placement == CLIENTS and value.all_equal:
      value.members = value.members[:1] * num_clients
  elif isinstance(value, Struct):
    for _, v in tff.structure.to_elements(value):
      expand_all_equal(v, num_clients)


def to_python(value, type_spec) -> Any:
  """A runtime value as TFF returns it: federated values as their member
  (all-equal) or a list of members; structs stay `Struct`s."""
  if isinstance(value, Federated):
    if type_spec.all_equal:
      return to_python(value.members[0], type_spec.member)
    return [to_python(m, type_spec.member) for m in value.members]
  if isinstance(value, Struct):
    return Struct(
      [
        (name, to_python(v, t))
        for (name, v), (_, t) in zip(
          tff.structure.to_elements(value),
          tff.structure.to_elements(type_spec),
          strict=True,
        )
      ]
    )
  if callable(value):
    raise NotImplementedError(
      'jaxclient_tff in-process runtime: returning a function value is not '
      'supported.'
    )
  return value


def _pack_like(template, leaves: Iterator):
  """A value of `template`'s structure from leaves in TFF's leaf order."""
  if isinstance(template, Struct):
    return Struct(
      [
        (name, _pack_like(v, leaves))
        for name, v in tff.structure.to_elements(template)
      ]
    )
  return next(leaves)


def stack_members(members: list) -> tuple[Any, Any]:
  """The members of a CLIENTS value as one value: `(stacked, axes)`, where
  each leaf of `stacked` is the leaf shared by every client (the same
  object, e.g. a broadcast; axis None) or the clients' leaves stacked on a
  new leading axis (axis 0); `axes` has `stacked`'s structure."""
  leaves: list = []
  axes: list[int | None] = []
  for column in zip(*[flatten(m) for m in members], strict=True):
    if all(leaf is column[0] for leaf in column):
      leaves.append(column[0])
      axes.append(None)
    else:
      leaves.append(np.stack([np.asarray(leaf) for leaf in column]))
      axes.append(0)
  return (
    _pack_like(members[0], iter(leaves)),
    _pack_like(members[0], iter(axes)),
  )


def unstack_members(type_spec, leaves: list, num_clients: int) -> list:
  """`num_clients` members of `type_spec` from its leaves stacked over
  clients (TFF's leaf order), each leaf cast to its type's dtype and checked
  against its shape."""
  types = leaf_types(type_spec)
  arrays = []
  for leaf, t in zip(leaves, types, strict=True):
    array = np.asarray(leaf, dtype=t.dtype)
    if array.shape[1:] != tuple(t.shape) or array.shape[0] != num_clients:
      raise ValueError(
        f'cohort program: expected a leaf of shape '
        f'{(num_clients, *t.shape)}, found {array.shape}.'
      )
    arrays.append(array)
  return [
    pack(type_spec, iter([a[i] for a in arrays])) for i in range(num_clients)
  ]


def leaf_types(type_spec) -> list:
  """The tensor and sequence types of `type_spec`'s leaves, in order."""
  if isinstance(type_spec, tff.StructType):
    return [
      leaf
      for _, t in tff.structure.to_elements(type_spec)
      for leaf in leaf_types(t)
    ]
  return [type_spec]
