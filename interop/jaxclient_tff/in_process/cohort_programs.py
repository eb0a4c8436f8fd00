"""Cohort programs: one call for a whole `federated_map` over the clients.

TFF maps a computation over the clients member by member. A cohort program,
registered for one `tff.jax` or `tff.tensorflow` computation, replaces those
N calls with one: `program(members) -> results` receives every client's
argument (runtime values, `values`) and returns every client's result, or
None to decline (the runtime then runs the computation client by client).
`values.stack_members` / `unstack_members` give the stacked view.

`jaxclient_tff.jax_backend` registers two for each `backend='jax'` process:
the client update (jaxclient's vmapped cohort update, one XLA program for
the cohort) and the padding (numpy padding of the batches the runtime
holds, instead of one TF graph run per client).

Registration is by `computation_key` (a hash of the serialized computation),
which TFF's compiler leaves unchanged, so it survives `to_call_dominant`;
entries are kept for the life of the process.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow_federated as tff

from jaxclient_tff.in_process.tensorflow_computations import computation_key

__all__ = ['CohortProgram', 'lookup', 'register']

# `(members: list) -> list | None`: see the module docstring.
CohortProgram = Callable[[list], list | None]

_PROGRAMS: dict[str, CohortProgram] = {}


def register(
  computation: tff.framework.ConcreteComputation, program: CohortProgram
) -> None:
  """Runs `program` for every `federated_map` of `computation` (a `tff.jax`
  or `tff.tensorflow` computation) in the in-process runtime."""
  proto = tff.framework.ConcreteComputation.get_proto(computation)
  if proto.WhichOneof('computation') not in ('xla', 'tensorflow'):
    raise TypeError(
      'computation: expected a tff.jax or tff.tensorflow computation, found '
      f'one of kind {proto.WhichOneof("computation")!r}.'
    )
  _PROGRAMS[computation_key(proto)] = program


def lookup(key: str | None) -> CohortProgram | None:
  """The program registered for `computation_key` `key`, if any."""
  return _PROGRAMS.get(key) if key is not None else None
