"""The optimizers the interop accepts, in the form each backend runs them.

For `backend='tensorflow'` (`adapter_for`), the three kinds behind one API.
An adapter has `initial_hparams` (the process state, an `OrderedDict`) and
`build()` (called once inside the `tff.tensorflow.computation`, outside any
`tf.function`, where TF variables may be created) returning a
`BoundOptimizer` with `init(trainable, hparams) -> state` and
`step(state, trainable, grads) -> (state, trainable)` over flat lists of TF
tensors:

* `TffOptimizer`: a `tff.learning.optimizers.Optimizer`, run as TFF runs it
  (same state, hparams and numbers, by construction);
* `OptaxOptimizer`: an `optax.GradientTransformation`; `init` and `update`
  converted with jax2tf; its hparams are those of `optax.inject_hyperparams`;
* `keras_fallback.KerasOptimizer`: a no-arg callable returning a `tf.keras`
  optimizer.

For `backend='jax'` (`as_optax`): an optax transformation as itself, and a
TFF optimizer as its `jaxclient.optimizers` twin (same rule, same hparams).
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import optax
import tensorflow as tf
import tensorflow_federated as tff

import jaxclient as jc
from jaxclient import client as jc_client
from jaxclient_tff import conversion, converted_model, keras_fallback

__all__ = [
  'BoundOptimizer',
  'OptaxOptimizer',
  'TffOptimizer',
  'adapter_for',
  'as_optax',
]


class BoundOptimizer(Protocol):
  """An optimizer ready to run inside one client update."""

  def init(self, trainable: list[tf.Tensor], hparams: Any) -> Any: ...

  def step(
    self, state: Any, trainable: list[tf.Tensor], grads: list[tf.Tensor]
  ) -> tuple[Any, list[tf.Tensor]]: ...


def _whimsy_state(optimizer: tff.learning.optimizers.Optimizer):
  """TFF's trick for the hparams: a state initialized for a scalar spec."""
  return optimizer.initialize(tf.TensorSpec((), tf.float32))


class TffOptimizer:
  """A `tff.learning.optimizers.Optimizer`, exactly as TFF's client work."""

  def __init__(self, optimizer: tff.learning.optimizers.Optimizer):
    self.optimizer = optimizer
    self.initial_hparams = optimizer.get_hparams(_whimsy_state(optimizer))

  def build(self) -> TffOptimizer:
    return self

  def init(self, trainable, hparams):
    specs = tuple(tf.TensorSpec.from_tensor(t) for t in trainable)
    state = self.optimizer.initialize(specs)
    return self.optimizer.set_hparams(state, hparams) if hparams else state

  def step(self, state, trainable, grads):
    state, trainable = self.optimizer.next(
      state, tuple(trainable), tuple(grads)
    )
    return state, list(trainable)


class OptaxOptimizer:
  """An `optax.GradientTransformation`, stepped by jax2tf-converted JAX."""

  def __init__(
    self,
    optimizer: optax.GradientTransformation,
    trainable_layout: conversion.PytreeLayout,
    initial_trainable,
  ):
    self.optimizer = optimizer
    self.trainable = trainable_layout
    opt_state = optimizer.init(initial_trainable)
    self.initial_hparams = collections.OrderedDict(
      (k, np.asarray(v))
      for k, v in getattr(opt_state, 'hyperparams', {}).items()
    )
    self.state = conversion.PytreeLayout(opt_state)
    self._init = converted_model.to_tf(self._jax_init)
    self._step = converted_model.to_tf(self._jax_step)

  def _jax_init(self, trainable, hparams):
    return self.state.flatten(
      jc_client.initial_optimizer_state(
        self.optimizer, self.trainable.unflatten(trainable), hparams
      )
    )

  def _jax_step(self, opt_state, trainable, grads):
    params = self.trainable.unflatten(trainable)
    updates, opt_state = self.optimizer.update(
      self.trainable.unflatten(grads), self.state.unflatten(opt_state), params
    )
    return (
      self.state.flatten(opt_state),
      self.trainable.flatten(optax.apply_updates(params, updates)),
    )

  def build(self) -> OptaxOptimizer:
    return self

  def init(self, trainable, hparams):
    return tuple(self._init(list(trainable), dict(hparams)))

  def step(self, state, trainable, grads):
    state, trainable = self._step(list(state), list(trainable), list(grads))
    return tuple(state), list(trainable)


def adapter_for(
  optimizer, model: jc.FunctionalModel, layout: conversion.WeightsLayout
):
  """The `backend='tensorflow'` adapter for any of the three kinds."""
  if isinstance(optimizer, tff.learning.optimizers.Optimizer):
    return TffOptimizer(optimizer)
  if isinstance(optimizer, optax.GradientTransformation):
    return OptaxOptimizer(
      optimizer, layout.trainable, model.initial_weights.trainable
    )
  if callable(optimizer) or keras_fallback.is_keras_optimizer(optimizer):
    return keras_fallback.KerasOptimizer(optimizer, layout.trainable)
  raise TypeError(
    'optimizer: expected a tff.learning.optimizers.Optimizer, an '
    'optax.GradientTransformation or a no-arg callable returning a '
    f'tf.keras optimizer, found {type(optimizer).__name__}.'
  )


@functools.cache
def _jaxclient_twins() -> dict[type, tuple[Callable, tuple[str, ...]]]:
  """TFF optimizer type -> (its `jaxclient.optimizers` builder, the builder
  arguments read from the optimizer's initial state, not its hparams).

  Each type is that of an optimizer built by TFF's public builder; the
  initial preconditioner is the `'preconditioner'` of the state that
  `optimizer.initialize(spec)` returns.
  """
  tff_builders = tff.learning.optimizers
  return {
    type(tff_builders.build_sgdm()): (jc.optimizers.build_sgdm, ()),
    type(tff_builders.build_adam(0.1)): (jc.optimizers.build_adam, ()),
    type(tff_builders.build_adamw(0.1)): (jc.optimizers.build_adamw, ()),
    type(tff_builders.build_rmsprop(0.1)): (jc.optimizers.build_rmsprop, ()),
    type(tff_builders.build_adagrad(0.1)): (
      jc.optimizers.build_adagrad,
      ('initial_preconditioner_value',),
    ),
    type(tff_builders.build_yogi(0.1)): (
      jc.optimizers.build_yogi,
      ('initial_preconditioner_value',),
    ),
  }


_STATE_KEY = {'initial_preconditioner_value': 'preconditioner'}


def _translate(
  optimizer: tff.learning.optimizers.Optimizer,
) -> optax.GradientTransformation:
  """A TFF optimizer's `jaxclient.optimizers` twin."""
  twins = _jaxclient_twins()
  if type(optimizer) not in twins:
    raise TypeError(
      "optimizer: backend='jax' translates the TFF optimizers of "
      'tff.learning.optimizers.build_{sgdm,adam,adamw,rmsprop,adagrad,yogi} '
      f'to jaxclient.optimizers; found {type(optimizer).__name__}. Pass an '
      'optax.GradientTransformation instead.'
    )
  builder, from_state = twins[type(optimizer)]
  state = _whimsy_state(optimizer)
  hparams = optimizer.get_hparams(state)
  return builder(
    **{k: float(v) for k, v in hparams.items()},
    **{k: float(state[_STATE_KEY[k]]) for k in from_state},
  )


def as_optax(optimizer) -> optax.GradientTransformation:
  """`optimizer` as an optax transformation with TFF's hparam names
  (`backend='jax'`)."""
  if isinstance(optimizer, optax.GradientTransformation):
    return optimizer
  if isinstance(optimizer, tff.learning.optimizers.Optimizer):
    return _translate(optimizer)
  raise TypeError(
    "optimizer: backend='jax' takes an optax.GradientTransformation or a "
    'tff.learning.optimizers.Optimizer (the Keras fallback needs TF '
    f'variables), found {type(optimizer).__name__}.'
  )
