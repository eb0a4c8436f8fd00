"""The Keras-optimizer fallback: TFF's original `tf.keras` optimizer path.

`build_model_delta_client_work` before TFF 0.84 accepted a no-arg callable
returning a `tf.keras` optimizer: the process state and hparams are empty, the
client's trainable weights live in TF variables, and each batch's gradients
(here from the jax2tf-converted JAX model) are applied with the optimizer's
own `apply_gradients`, so Keras options (momentum, nesterov, clipnorm,
clipvalue, ...) take effect. The optimizer and its slots are created anew for
every client update (TFF initializes a computation's variables per call).
`KerasOptimizer` has the adapter API of `optimizer_adapters`. A callable
that returns something else is a `TypeError` at build time; one returning an
optax or TFF optimizer says to pass that optimizer itself.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import optax
import tensorflow as tf
import tensorflow_federated as tff

from jaxclient_tff import _private_apis, conversion

__all__ = ['KerasOptimizer', 'is_keras_optimizer']


def is_keras_optimizer(value) -> bool:
  """Whether `value` is a built `tf.keras` optimizer, new or legacy."""
  return isinstance(
    value, (tf.keras.optimizers.Optimizer, tf.keras.optimizers.legacy.Optimizer)
  )


def _not_keras_message(returned) -> str:
  """The error for a fallback callable that returned `returned`, not a
  `tf.keras` optimizer; says to pass an optax or TFF optimizer itself."""
  for kind, article, name in (
    (optax.GradientTransformation, 'an', 'optax.GradientTransformation'),
    (
      tff.learning.optimizers.Optimizer,
      'a',
      'tff.learning.optimizers.Optimizer',
    ),
  ):
    if isinstance(returned, kind):
      return (
        f'optimizer: the callable returned {article} {name}; pass the {name} '
        'itself, not a callable returning it (a callable is taken as the '
        'Keras fallback, which must return a tf.keras optimizer).'
      )
  return (
    'optimizer: the callable must return a tf.keras optimizer, found '
    f'{type(returned).__name__}.'
  )


class KerasOptimizer:
  """Adapter for a no-arg callable returning a `tf.keras` optimizer."""

  def __init__(
    self,
    optimizer_fn: Callable[[], tf.keras.optimizers.Optimizer],
    trainable_layout: conversion.PytreeLayout,
  ):
    if is_keras_optimizer(optimizer_fn):
      raise TypeError(
        'optimizer: expected a no-arg callable returning a tf.keras '
        'optimizer (e.g. `lambda: tf.keras.optimizers.SGD(0.1)`), found an '
        f'already-built {type(optimizer_fn).__name__}; the optimizer and '
        'its slot variables must be created inside the TFF computation.'
      )
    self.optimizer_fn = optimizer_fn
    self.trainable = trainable_layout
    self.initial_hparams: collections.OrderedDict = collections.OrderedDict()

  def build(self) -> _BoundKerasOptimizer:
    """Creates the variables and the optimizer (inside the computation)."""
    variables = [
      tf.Variable(tf.zeros(s.shape, s.dtype), name=f'trainable_{i}')
      for i, s in enumerate(self.trainable.specs)
    ]
    optimizer = self.optimizer_fn()
    if not is_keras_optimizer(optimizer):
      raise TypeError(_not_keras_message(optimizer))
    if isinstance(optimizer, tf.keras.optimizers.legacy.Optimizer):
      _private_apis.create_legacy_keras_optimizer_weights(optimizer, variables)
    else:
      optimizer.build(variables)
    return _BoundKerasOptimizer(optimizer, variables)


class _BoundKerasOptimizer:
  """Trains TF variables with `apply_gradients`; the carried state is `()`."""

  def __init__(self, optimizer, variables):
    self.optimizer = optimizer
    self.variables = variables

  def init(self, trainable, hparams):
    del hparams  # Always empty: Keras optimizers keep theirs in Python.
    for variable, value in zip(self.variables, trainable, strict=True):
      variable.assign(value)
    return ()

  def step(self, state, trainable, grads):
    del trainable  # Equal to the variables, which the gradients were taken at.
    self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
    return state, [v.read_value() for v in self.variables]
