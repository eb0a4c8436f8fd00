"""The private names of other projects that jaxclient_tff cannot avoid.

Every use of another project's private (`_`-prefixed) name, or of an
internal module where no public API exists (jaxlib's HLO compilation), in
jaxclient_tff is a function here, documenting the name, why no public way
serves, and the versions it is known in. `tests/interop/test_private_apis.py`
checks each one against the installed versions and fails naming it when it
changes; the interop's code-shape test checks that no other module uses a
private name.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from jaxlib import (  # type: ignore[attr-defined]  # jaxlib 0.4.30's names
  xla_client,
  xla_extension,
)

__all__ = ['compile_hlo_module', 'create_legacy_keras_optimizer_weights']


def create_legacy_keras_optimizer_weights(
  optimizer: tf.keras.optimizers.legacy.Optimizer,
  variables: Sequence[tf.Variable],
) -> None:
  """Creates a legacy Keras optimizer's iterations, hyperparameters and
  slots for `variables`, now.

  Uses `OptimizerV2._create_all_weights(var_list)` (Keras 2.x's legacy
  optimizers, `tf.keras.optimizers.legacy.*`; present in TF/Keras 2.3 to
  2.15 and in `tf_keras`; checked with Keras 2.14).

  Why: inside a TFF computation the variables must exist before the client
  update's `tf.function` and its `Dataset.reduce` loop run, which cannot
  create variables. New Keras optimizers have the public `build(var_list)`;
  legacy ones create their slots lazily in `apply_gradients` and have no
  public method that creates them without applying a step.
  """
  optimizer._create_all_weights(variables)  # pylint: disable=protected-access


def compile_hlo_module(hlo_module: bytes, device):
  """Compiles a serialized `HloModuleProto` (a `tff.jax` computation's
  `xla.hlo_module` payload) for `device`, a `jax.Device`; returns jaxlib's
  `LoadedExecutable` (`execute([device arrays in parameter order]) ->
  [arrays]`).

  Uses jaxlib's `xla_client.XlaComputation(bytes)`,
  `xla_extension.mlir.xla_computation_to_mlir_module` and
  `device.client.compile(mlir_module)` (the PJRT client of JAX's device):
  jaxlib internals, without underscores but not JAX API (checked with
  jax/jaxlib 0.4.30; `device.client` and the HLO-to-MLIR conversion exist
  from jaxlib 0.4.14 on).

  Why: jax 0.4.30 has no public way to compile an HLO module: `jax.jit`
  needs a Python function, `jax.extend.backend` only has `clear_backends`,
  and `jax.extend.mlir` is empty. TFF's own `xla_serialization` is
  `tensorflow_federated.python` internal and only unpacks the proto.
  """
  computation = xla_client.XlaComputation(hlo_module)
  mlir_module = xla_extension.mlir.xla_computation_to_mlir_module(computation)
  return device.client.compile(mlir_module)
