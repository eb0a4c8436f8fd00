"""`tff.jax` computations, compiled once with XLA and run on JAX's default
device.

A `tff.jax` computation's proto holds a serialized `HloModuleProto`
(`xla.hlo_module`) and parameter/result bindings that map TFF's leaf order
to XLA's parameter and (untupled) result indices. `XlaRunner` compiles the
module once (`_private_apis.compile_hlo_module`: jax 0.4.30 has no public
way) and then each call puts the leaves on the device in XLA's order,
executes, and packs the results back in TFF's order as numpy arrays.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxclient_tff import _private_apis
from jaxclient_tff.in_process import values
from jaxclient_tff.in_process.tensorflow_computations import computation_key

__all__ = ['XlaRunner']


def _binding_indices(binding) -> list[int]:
  """XLA's index of each TFF leaf of a binding, in TFF's leaf order."""
  kind = binding.WhichOneof('binding')
  if kind == 'tensor':
    return [binding.tensor.index]
  if kind == 'struct':
    return [
      index
      for element in binding.struct.element
      for index in _binding_indices(element)
    ]
  return []


class XlaRunner:
  """Runs one `tff.jax` computation, compiled once on `jax.devices()[0]`.

  Attributes:
    type_signature: the computation's `tff.FunctionType`.
    key: `computation_key` of its proto.
  """

  def __init__(self, proto, type_signature):
    self.type_signature = type_signature
    self.key = computation_key(proto)
    self._device = jax.devices()[0]
    self._executable = _private_apis.compile_hlo_module(
      proto.xla.hlo_module.value, self._device
    )
    self._params = (
      _binding_indices(proto.xla.parameter)
      if proto.xla.HasField('parameter')
      else []
    )
    self._param_types = (
      values.leaf_types(type_signature.parameter) if self._params else []
    )
    self._results = _binding_indices(proto.xla.result)

  def __call__(self, arg=None):
    leaves = values.flatten(arg) if self._params else []
    ordered = [None] * len(self._params)
    for leaf, index, t in zip(
      leaves, self._params, self._param_types, strict=True
    ):
      ordered[index] = jax.device_put(np.asarray(leaf, t.dtype), self._device)
    outputs = self._executable.execute(ordered)
    return values.pack(
      self.type_signature.result,
      iter([np.asarray(outputs[i]) for i in self._results]),
    )
