"""The federated intrinsics of the in-process runtime, on `values.Federated`.

`INTRINSICS` maps each supported URI to `factory(intrinsic, runtime) ->
implementation`, where `runtime` gives `cardinality(placement)` and
`map_members(fn, members, where)` (member by member, or one cohort program:
`cohort_programs`). Every implementation checks the placement and number
of members of what it receives and names both when they do not match.

Sums, means and weighted means are computed in numpy (float32 stays
float32), in client order. `federated_secure_sum_bitwidth` and
`federated_secure_sum` are PLAIN sums: a simulation has no adversary, so
the bitwidth/bound is not applied (no modular wrap-around). A
`federated_aggregate` accumulates the clients in order and never merges
(one aggregation group). Not supported (rejected before anything runs):
`federated_select`, `federated_secure_select`, the `sequence_*` intrinsics
and every other URI not listed here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxclient_tff.in_process import values
from jaxclient_tff.in_process.values import CLIENTS, SERVER, Federated

__all__ = ['INTRINSICS']


def _sum(members: list, member_type):
  if not members:
    return values.zeros(member_type)
  total = members[0]
  for member in members[1:]:
    total = values.tree_map(
      lambda a, b: np.asarray(a + b, np.asarray(a).dtype), total, member
    )
  return total


def _clients(runtime, value, where: str) -> list:
  values.check_members(value, CLIENTS, runtime.cardinality(CLIENTS), where)
  return value.members


def _at_server(member) -> Federated:
  return Federated(SERVER, True, [member])


def _map(placement: str | None, all_equal: bool, where: str):
  """federated_map (placement of the argument), _map_all_equal, _apply."""

  def factory(intrinsic, runtime):
    def impl(arg):
      fn, value = arg[0], arg[1]
      where_placed = placement or value.placement
      values.check_members(
        value, where_placed, runtime.cardinality(where_placed), where
      )
      if all_equal and value.members:
        return Federated(
          where_placed, True, [fn(value.members[0])] * len(value.members)
        )
      return Federated(
        where_placed,
        where_placed == SERVER,
        runtime.map_members(fn, value.members, where),
      )

    return impl

  return factory


def _broadcast(intrinsic, runtime):
  def impl(value):
    values.check_members(value, SERVER, 1, 'federated_broadcast')
    return Federated(
      CLIENTS, True, value.members * runtime.cardinality(CLIENTS)
    )

  return impl


def _value_at(placement: str):
  def factory(intrinsic, runtime):
    return lambda value: Federated(
      placement, True, [value] * runtime.cardinality(placement)
    )

  return factory


def _eval_at(placement: str):
  def factory(intrinsic, runtime):
    return lambda fn: Federated(
      placement,
      placement == SERVER,
      [fn() for _ in range(runtime.cardinality(placement))],
    )

  return factory


def _zip_at(placement: str):
  """A struct of federated values -> a federated value of structs."""

  def factory(intrinsic, runtime):
    def impl(struct):
      count = runtime.cardinality(placement)
      leaves = values.flatten(struct)
      for i, leaf in enumerate(leaves):
        values.check_members(
          leaf, placement, count, f'federated_zip_at_{placement} element {i}'
        )
      members = [
        values.tree_map(lambda leaf, k=k: leaf.members[k], struct)
        for k in range(count)
      ]
      all_equal = placement == SERVER or all(leaf.all_equal for leaf in leaves)
      return Federated(placement, all_equal, members)

    return impl

  return factory


def _sum_intrinsic(name: str, value_of: Callable):
  """federated_sum and the secure sums (plain sums, module docstring)."""

  def factory(intrinsic, runtime):
    member_type = intrinsic.type_signature.result.member
    return lambda arg: _at_server(
      _sum(_clients(runtime, value_of(arg), name), member_type)
    )

  return factory


def _mean(intrinsic, runtime):
  member_type = intrinsic.type_signature.result.member

  def impl(value):
    members = _clients(runtime, value, 'federated_mean')
    if not members:
      raise values.CardinalityError(
        'federated_mean: CLIENTS has 0 members; the mean of no clients is '
        'undefined.'
      )
    total = _sum(members, member_type)
    return _at_server(
      values.tree_map(lambda x: np.asarray(x / len(members), x.dtype), total)
    )

  return impl


def _weighted_mean(intrinsic, runtime):
  member_type = intrinsic.type_signature.result.member
  weight_type = intrinsic.type_signature.parameter[1].member

  def impl(arg):
    members = _clients(runtime, arg[0], 'federated_weighted_mean value')
    weights = _clients(runtime, arg[1], 'federated_weighted_mean weight')
    weighted = [
      values.tree_map(
        lambda x, w=w: np.asarray(x * np.asarray(w, x.dtype), x.dtype), m
      )
      for m, w in zip(members, weights, strict=True)
    ]
    total = _sum(weighted, member_type)
    denominator = _sum(weights, weight_type)
    return _at_server(
      values.tree_map(
        lambda x: np.asarray(x / np.asarray(denominator, x.dtype), x.dtype),
        total,
      )
    )

  return impl


def _extremum(name: str, op: Callable):
  def factory(intrinsic, runtime):
    def impl(value):
      members = _clients(runtime, value, name)
      if not members:
        raise values.CardinalityError(f'{name}: CLIENTS has 0 members.')
      result = members[0]
      for member in members[1:]:
        result = values.tree_map(op, result, member)
      return _at_server(result)

    return impl

  return factory


def _aggregate(intrinsic, runtime):
  def impl(arg):
    value, zero, accumulate, merge, report = (arg[i] for i in range(5))
    del merge  # One aggregation group: nothing to merge.
    accumulator = zero
    for member in _clients(runtime, value, 'federated_aggregate'):
      accumulator = accumulate(
        values.Struct([(None, accumulator), (None, member)])
      )
    return _at_server(report(accumulator))

  return impl


def _generic(op: Callable):
  def factory(intrinsic, runtime):
    return lambda arg: values.tree_map(
      lambda a, b: np.asarray(op(a, b)), arg[0], arg[1]
    )

  return factory


INTRINSICS: dict[str, Callable] = {
  'federated_map': _map(None, False, 'federated_map'),
  'federated_map_all_equal': _map(CLIENTS, True, 'federated_map_all_equal'),
  'federated_apply': _map(SERVER, True, 'federated_apply'),
  'federated_broadcast': _broadcast,
  'federated_value_at_clients': _value_at(CLIENTS),
  'federated_value_at_server': _value_at(SERVER),
  'federated_eval_at_clients': _eval_at(CLIENTS),
  'federated_eval_at_server': _eval_at(SERVER),
  'federated_zip_at_clients': _zip_at(CLIENTS),
  'federated_zip_at_server': _zip_at(SERVER),
  'federated_sum': _sum_intrinsic('federated_sum', lambda arg: arg),
  'federated_secure_sum_bitwidth': _sum_intrinsic(
    'federated_secure_sum_bitwidth', lambda arg: arg[0]
  ),
  'federated_secure_sum': _sum_intrinsic(
    'federated_secure_sum', lambda arg: arg[0]
  ),
  'federated_mean': _mean,
  'federated_weighted_mean': _weighted_mean,
  'federated_min': _extremum('federated_min', np.minimum),
  'federated_max': _extremum('federated_max', np.maximum),
  'federated_aggregate': _aggregate,
  'generic_plus': _generic(np.add),
  'generic_multiply': _generic(np.multiply),
  'generic_divide': _generic(np.divide),
}
