"""The private names of other projects that jaxclient_tff cannot avoid.

Every use of another project's private (`_`-prefixed) name in jaxclient_tff
is a function here, documenting the name, why no public way serves, and the
versions it is known in. `tests/interop/test_private_apis.py` checks each one
against the installed versions and fails naming it when it changes; the
interop's code-shape test checks that no other module uses a private name.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

__all__ = ['create_legacy_keras_optimizer_weights']


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
