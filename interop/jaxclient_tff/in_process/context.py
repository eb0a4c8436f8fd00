"""`InProcessContext`, a TFF execution context that runs computations in
this process, and `execution_context()`, which installs it.

The context plugs into TFF through its public extension point: a
`tff.framework.SyncContext` subclass installed with
`tff.framework.get_context_stack().install`. `invoke(comp, arg)` does what
TFF's own `SyncExecutionContext` does around its executors, with public
names only:

1. compile `comp` (default: `tff.framework.to_call_dominant`, the first
   pass of TFF's native compiler; sums and means stay intrinsics, computed
   in numpy), check that everything in it is supported
   (`interpreter.check_supported`), and build a runner for every compiled
   computation in it. All three are cached per computation and process:
   compiling, importing a GraphDef and compiling XLA happen once;
2. turn the Python argument into runtime values (`values.ingest`) and
   infer the number of clients from the CLIENTS-placed arguments
   (`CardinalityError` names each argument's count when they disagree);
3. evaluate (`interpreter.Evaluator`);
4. return the result in the Python containers of the result type
   (`tff.types.type_to_py_container`).

No worker process and no thread is started; invocations are serialised by
a lock.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterator

import tensorflow_federated as tff

from jaxclient_tff.in_process import interpreter, values
from jaxclient_tff.in_process.tensorflow_computations import (
  TensorFlowRunner,
  computation_key,
)
from jaxclient_tff.in_process.xla_computations import XlaRunner

__all__ = [
  'InProcessContext',
  'compile_call_dominant',
  'execution_context',
]

_RUNNER_KINDS: dict[str, Callable[..., Callable]] = {
  'tensorflow': TensorFlowRunner,
  'xla': XlaRunner,
}
# computation_key -> runner, for the life of the process.
_RUNNERS: dict[str, Callable] = {}
# (id(computation), compiler_fn) -> (weakref, building block, runners).
_COMPILED: dict[tuple, tuple] = {}


def compile_call_dominant(computation):
  """TFF's `to_call_dominant` of the computation (the default compiler)."""
  return tff.framework.to_call_dominant(computation.to_building_block())


def _runners_of(building_block, stats: Counter) -> dict[int, Callable]:
  """`id(node) -> runner` for every compiled computation in the tree."""
  runners, stack = {}, [building_block]
  while stack:
    node = stack.pop()
    stack.extend(node.children())
    if isinstance(node, tff.framework.CompiledComputation):
      key = computation_key(node.proto)
      if key not in _RUNNERS:
        kind = node.proto.WhichOneof('computation')
        _RUNNERS[key] = _RUNNER_KINDS[kind](node.proto, node.type_signature)
        stats[f'{kind}_builds'] += 1
      runners[id(node)] = _RUNNERS[key]
  return runners


class InProcessContext(tff.framework.SyncContext):
  """A `tff.framework.SyncContext` running `tff.tensorflow` and `tff.jax`
  computations and TFF's federated intrinsics in this process (see the
  module docstring).

  Args:
    default_num_clients: the number of clients when no CLIENTS-placed
      argument says it (e.g. `federated_eval` at clients with no argument).
    compiler_fn: `(ConcreteComputation) -> building block`; default
      `compile_call_dominant`. TFF's `tff.backends.native.
      transform_to_native_form` and `desugar_and_transform_to_native` work
      too.
    data_resolver: `(tff.framework.Data) -> value` for `Data` blocks, or
      None (then a `Data` block is rejected).
    use_cohort_programs: False runs every `federated_map` client by client,
      even where a cohort program is registered (to compare the two).

  Attributes:
    stats: a `Counter` of what this context did: `compiles`,
      `tensorflow_builds` / `xla_builds` (runners it built; later contexts
      reuse them), `cohort_program_calls` and `per_client_map_calls`.
  """

  def __init__(
    self,
    *,
    default_num_clients: int = 0,
    compiler_fn: Callable = compile_call_dominant,
    data_resolver: Callable | None = None,
    use_cohort_programs: bool = True,
  ):
    self._use_cohort_programs = use_cohort_programs
    self._default_num_clients = default_num_clients
    self._compiler_fn = compiler_fn
    self._data_resolver = data_resolver
    self._lock = threading.Lock()
    self.stats: Counter = Counter()

  def _compile(self, computation) -> tuple:
    """`(building block, runners)` of `computation`, cached per process."""
    key = (id(computation), self._compiler_fn)
    entry = _COMPILED.get(key)
    if entry is not None and entry[0]() is computation:
      return entry[1], entry[2]
    building_block = self._compiler_fn(computation)
    if isinstance(building_block, tff.framework.ConcreteComputation):
      building_block = building_block.to_building_block()
    interpreter.check_supported(building_block, self._data_resolver is not None)
    runners = _runners_of(building_block, self.stats)
    self.stats['compiles'] += 1
    _COMPILED[key] = (weakref.ref(computation), building_block, runners)
    weakref.finalize(computation, _COMPILED.pop, key, None)
    return building_block, runners

  def _evaluator(self, runners, num_clients: int):
    return interpreter.Evaluator(
      num_clients,
      runners,
      self._data_resolver,
      self.stats,
      self._use_cohort_programs,
    )

  def _ingest_function(self, computation):
    building_block, runners = self._compile(computation)
    evaluator = self._evaluator(runners, self._default_num_clients)
    return evaluator.evaluate(building_block)

  def _arguments(self, computation, arg) -> tuple:
    """`(value, number of clients)` of the call's argument."""
    if arg is None:
      return None, self._default_num_clients
    value = values.ingest(
      arg, computation.type_signature.parameter, self._ingest_function
    )
    counts = values.client_counts(value)
    if len(set(counts.values())) > 1:
      listing = ', '.join(f'{path} has {n}' for path, n in counts.items())
      raise values.CardinalityError(
        'CLIENTS-placed arguments disagree on the number of clients: '
        f'{listing}.'
      )
    num_clients = next(iter(counts.values()), self._default_num_clients)
    values.expand_all_equal(value, num_clients)
    return value, num_clients

  def invoke(self, comp, arg):
    """Runs `comp` on `arg` (TFF packs a call's arguments into one)."""
    result_type = comp.type_signature.result
    building_block, runners = self._compile(comp)
    with self._lock:
      value, num_clients = self._arguments(comp, arg)
      fn = self._evaluator(runners, num_clients).evaluate(building_block)
      result = fn() if arg is None else fn(value)
    return tff.types.type_to_py_container(
      values.to_python(result, result_type), result_type
    )


@contextlib.contextmanager
def execution_context(
  *,
  default_num_clients: int = 0,
  compiler_fn: Callable = compile_call_dominant,
  data_resolver: Callable | None = None,
  use_cohort_programs: bool = True,
) -> Iterator[InProcessContext]:
  """Runs the body with an `InProcessContext` (arguments as there) as
  TFF's current context; the previous context is back on exit, also when
  the body raises. Compiled computations stay cached for the process, so
  entering it again (e.g. once per round) compiles nothing twice.

  >>> with jaxclient_tff.execution_context():  # doctest: +SKIP
  ...   state = learning_process.initialize()
  ...   state = learning_process.next(state, client_datasets).state
  """
  context = InProcessContext(
    default_num_clients=default_num_clients,
    compiler_fn=compiler_fn,
    data_resolver=data_resolver,
    use_cohort_programs=use_cohort_programs,
  )
  with tff.framework.get_context_stack().install(context):
    yield context
