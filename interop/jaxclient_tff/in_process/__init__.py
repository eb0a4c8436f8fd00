"""An in-process TFF execution context: `tff.tensorflow` and `tff.jax`
computations and TFF's federated intrinsics, run in this Python process.

TFF 0.87's shipped runtime (a C++ `worker_binary`) cannot execute XLA, so
`backend='jax'` processes run here. Modules, one concept each: `context`
(`InProcessContext`, `execution_context`), `interpreter` (the building
blocks), `intrinsics`, `values` (runtime values, in and out),
`tensorflow_computations`, `xla_computations` and `cohort_programs` (one
program for a whole `federated_map`). docs/in_process_runtime.md is the
design.
"""

from jaxclient_tff.in_process import cohort_programs
from jaxclient_tff.in_process.context import (
  InProcessContext,
  compile_call_dominant,
  execution_context,
)
from jaxclient_tff.in_process.values import CardinalityError

__all__ = [
  'CardinalityError',
  'InProcessContext',
  'cohort_programs',
  'compile_call_dominant',
  'execution_context',
]
