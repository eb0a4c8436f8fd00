"""jaxclient_tff: jaxclient's client work as a TFF `ClientWorkProcess`.

`build_model_delta_client_work` is a drop-in for TFF's own: it trains a
`jaxclient.FunctionalModel` with a TFF, optax or Keras optimizer, on TFF's
runtime (jax2tf, `backend='tensorflow'`) or as a `tff.jax.computation`
(`backend='jax'`). `execution_context` runs TFF computations in this
process (no worker; the runtime `backend='jax'` needs, and TFF's own
processes run in it too); `local_cpp_execution_context` runs TFF's C++
runtime and stops its worker process on exit; `conversion` converts
weights between jaxclient's pytrees and TFF's lists.

Modules: `builder` (the builder and its backend table), `tf_backend`,
`jax_backend`, `tff_process` (the process around a client update, shared by
the backends), `converted_model` (jax2tf), `conversion`,
`optimizer_adapters` and `keras_fallback`, `runtime`, `in_process` (the
in-process runtime, a subpackage), `environment` (the
TFF env it needs: importing jaxclient_tff elsewhere is an `ImportError`
saying so) and `_private_apis` (the one place that uses other projects'
private names). Importing it registers `shutdown_workers` to run at exit.
"""

from jaxclient_tff import environment

try:
  from jaxclient_tff import conversion
  from jaxclient_tff.builder import build_model_delta_client_work
  from jaxclient_tff.in_process import execution_context
  from jaxclient_tff.runtime import (
    local_cpp_execution_context,
    shutdown_workers,
  )
except ModuleNotFoundError as _error:
  _env_error = environment.missing_tff_env_error(_error)
  if _env_error is None:
    raise
  raise _env_error from _error

__all__ = [
  'build_model_delta_client_work',
  'conversion',
  'execution_context',
  'local_cpp_execution_context',
  'shutdown_workers',
]
