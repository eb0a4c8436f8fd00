"""Evaluation of the building blocks TFF's compiler hands a runtime.

`check_supported` walks a compiled computation before anything runs and
raises `NotImplementedError` naming the first construct this runtime does
not execute (an intrinsic, a computation kind, `Data` without a resolver),
so no client trains on a computation that would fail half-way.
`Evaluator` then evaluates the tree for one invocation: references, blocks,
calls, lambdas (Python closures), structs, selections, literals, placements,
`Data` (through the resolver), intrinsics (`intrinsics.INTRINSICS`) and
compiled computations (their runner, built once per computation).

`federated_map` over the clients goes through `Evaluator.map_members`: one
call of the registered cohort program if the mapped computation has one
(`cohort_programs`), else one call per client.
"""

from __future__ import annotations

import logging
import typing
from collections import Counter
from collections.abc import Callable

import numpy as np
import tensorflow_federated as tff

from jaxclient_tff.in_process import cohort_programs, values
from jaxclient_tff.in_process.intrinsics import INTRINSICS
from jaxclient_tff.in_process.values import SERVER

__all__ = ['COMPUTATION_KINDS', 'Evaluator', 'check_supported']

COMPUTATION_KINDS = ('tensorflow', 'xla')
_LOG = logging.getLogger('jaxclient_tff.in_process')


def _unsupported(building_block, has_data_resolver: bool) -> str | None:
  """What this runtime cannot run about one node, or None."""
  if isinstance(building_block, tff.framework.Intrinsic):
    if building_block.uri not in INTRINSICS:
      return (
        f'intrinsic {building_block.uri!r} (type '
        f'{building_block.type_signature})'
      )
  elif isinstance(building_block, tff.framework.CompiledComputation):
    kind = building_block.proto.WhichOneof('computation')
    if kind not in COMPUTATION_KINDS:
      return f'computation kind {kind!r} (only {COMPUTATION_KINDS})'
  elif isinstance(building_block, tff.framework.Data) and not has_data_resolver:
    return f'Data {building_block.uri!r} without a data_resolver'
  return None


def check_supported(building_block, has_data_resolver: bool) -> None:
  """Raises NotImplementedError naming the first unsupported construct."""
  stack = [building_block]
  while stack:
    node = stack.pop()
    problem = _unsupported(node, has_data_resolver)
    if problem is not None:
      raise NotImplementedError(
        f'jaxclient_tff in-process runtime: {problem} is not supported.'
      )
    stack.extend(node.children())


class _Scope:
  """Names bound by lambdas and blocks, innermost first."""

  __slots__ = ('names', 'parent')

  def __init__(self, names: dict, parent: _Scope | None = None):
    self.names, self.parent = names, parent

  def lookup(self, name: str):
    scope: _Scope | None = self
    while scope is not None:
      if name in scope.names:
        return scope.names[name]
      scope = scope.parent
    raise NameError(f'jaxclient_tff in-process runtime: unbound {name!r}.')


class Evaluator:
  """Evaluates building blocks for one invocation.

  Args:
    num_clients: the cardinality of CLIENTS.
    runners: `id(CompiledComputation) -> runner` (callable on its argument).
    data_resolver: `(Data building block) -> value`, or None.
    stats: a `Counter`; counts `cohort_program_calls` and
      `per_client_map_calls`.
    use_cohort_programs: False ignores registered cohort programs.
  """

  def __init__(
    self,
    num_clients: int,
    runners: dict,
    data_resolver: Callable | None,
    stats: Counter,
    use_cohort_programs: bool = True,
  ):
    self._use_cohort_programs = use_cohort_programs
    self._num_clients = num_clients
    self._runners = runners
    self._data_resolver = data_resolver
    self.stats = stats

  def cardinality(self, placement: str) -> int:
    return 1 if placement == SERVER else self._num_clients

  def map_members(self, fn, members: list, where: str) -> list:
    """`[fn(m) for m in members]`, as one cohort program when `fn` has one
    and it accepts these members."""
    program = cohort_programs.lookup(getattr(fn, 'key', None))
    if self._use_cohort_programs and program is not None and members:
      results = program(members)
      if results is not None:
        self.stats['cohort_program_calls'] += 1
        _LOG.info(
          '%s over %d clients ran as one cohort program', where, len(members)
        )
        return results
    self.stats['per_client_map_calls'] += 1
    return [fn(member) for member in members]

  def evaluate(self, building_block, scope: _Scope | None = None):
    """The value of `building_block` in `scope`."""
    scope = scope or _Scope({})
    bb = building_block
    if isinstance(bb, tff.framework.Reference):
      return scope.lookup(bb.name)
    if isinstance(bb, tff.framework.Block):
      for name, local in bb.locals:
        scope = _Scope({name: self.evaluate(local, scope)}, scope)
      return self.evaluate(bb.result, scope)
    if isinstance(bb, tff.framework.Call):
      fn = self.evaluate(bb.function, scope)
      if bb.argument is None:
        return fn()
      return fn(self.evaluate(bb.argument, scope))
    if isinstance(bb, tff.framework.Lambda):
      return self._closure(bb, scope)
    if isinstance(bb, tff.framework.Struct):
      return values.Struct(
        [
          (name, self.evaluate(v, scope))
          for name, v in tff.structure.to_elements(bb)
        ]
      )
    if isinstance(bb, tff.framework.Selection):
      source = self.evaluate(bb.source, scope)
      return source[bb.as_index()]
    return self._leaf(bb)

  def _closure(self, bb, scope: _Scope):
    if bb.parameter_name is None:
      return lambda: self.evaluate(bb.result, scope)
    return lambda arg: self.evaluate(
      bb.result, _Scope({bb.parameter_name: arg}, scope)
    )

  def _leaf(self, bb):
    """Literals, placements, Data, intrinsics and compiled computations."""
    if isinstance(bb, tff.framework.Literal):
      return np.asarray(bb.value, dtype=bb.type_signature.dtype)
    if isinstance(bb, tff.framework.Placement):
      return bb.uri
    if isinstance(bb, tff.framework.Data):
      return typing.cast(Callable, self._data_resolver)(bb)
    if isinstance(bb, tff.framework.Intrinsic):
      return INTRINSICS[bb.uri](bb, self)
    if isinstance(bb, tff.framework.CompiledComputation):
      return self._runners[id(bb)]
    raise NotImplementedError(
      'jaxclient_tff in-process runtime: building block '
      f'{type(bb).__name__} is not supported.'
    )
