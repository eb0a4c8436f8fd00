"""Runs the XLA inside a `tff.jax.computation` with jaxlib (test-only).

TFF 0.87's runtime cannot execute XLA computations, so the tests of
`backend='jax'` compile the serialized XLA themselves. What this relies on,
all public names, in the versions of the TFF env:

* TFF 0.87: `tff.framework.ConcreteComputation.get_proto`; the computation
  proto's `xla` field (`hlo_module`, an `Any` holding an HloModuleProto, and
  the `parameter` / `result` bindings);
* jaxlib 0.4.30: `jaxlib.xla_client.XlaComputation`,
  `jaxlib.xla_extension.mlir.xla_computation_to_mlir_module` and a CPU
  device's `client.compile` / `execute`.
"""

import jax
import numpy as np
import tensorflow_federated as tff
from jaxlib import xla_client
from jaxlib import xla_extension

__all__ = ['run_xla_payload']


def run_xla_payload(computation, flat_args) -> list[np.ndarray]:
  """Compiles the XLA inside a `tff.jax.computation` with jaxlib and runs it.

  The parameter and result bindings that TFF serialized with the XLA map
  TFF's leaf order to XLA's, as TFF's own XLA executor did.

  Args:
    computation: a `tff.jax.computation`.
    flat_args: the leaves of its argument, in the order of its parameter type
      (e.g. `[*hparams, *trainable, *non_trainable, x, y, mask]`).

  Returns:
    The leaves of the result as numpy arrays, in the order of the result
    type.
  """
  proto = tff.framework.ConcreteComputation.get_proto(computation)
  if proto.WhichOneof('computation') != 'xla':
    raise TypeError('computation: expected a tff.jax.computation (XLA), '
                    f"found a {proto.WhichOneof('computation')} computation.")
  xla_computation = xla_client.XlaComputation(proto.xla.hlo_module.value)
  device = jax.devices('cpu')[0]
  executable = device.client.compile(
      xla_extension.mlir.xla_computation_to_mlir_module(xla_computation))
  parameter_positions = _binding_indices(proto.xla.parameter)
  if len(flat_args) != len(parameter_positions):
    raise ValueError(f'flat_args: expected {len(parameter_positions)} leaves '
                     f'for {computation.type_signature.parameter}, found '
                     f'{len(flat_args)}.')
  ordered = [None] * len(flat_args)
  for value, position in zip(flat_args, parameter_positions):
    ordered[position] = np.asarray(value)
  outputs = executable.execute([jax.device_put(a, device) for a in ordered])
  return [np.asarray(outputs[i]) for i in _binding_indices(proto.xla.result)]


def _binding_indices(binding) -> list[int]:
  """XLA parameter index of each TFF leaf, in TFF order."""
  kind = binding.WhichOneof('binding')
  if kind == 'tensor':
    return [binding.tensor.index]
  if kind == 'struct':
    return [i for element in binding.struct.element
            for i in _binding_indices(element)]
  return []
