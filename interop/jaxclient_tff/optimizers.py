"""The three kinds of optimizer the TF backend trains with, behind one API.

An adapter has `initial_hparams` (the process state, an `OrderedDict`),
`build()` (called once inside the `tff.tensorflow.computation`, outside any
`tf.function`, where TF variables may be created) returning a `BoundOptimizer`
with `init(trainable, hparams) -> state` and `step(state, trainable, grads)
-> (state, trainable)` over flat lists of TF tensors.

* `TffOptimizer`: a `tff.learning.optimizers.Optimizer`, run as TFF runs it
  (same state, hparams and numbers, by construction).
* `OptaxOptimizer`: an `optax.GradientTransformation`; `init` and `update`
  converted with jax2tf; its hparams are those of `optax.inject_hyperparams`.
* the Keras fallback lives in `keras_fallback`.
"""

from __future__ import annotations

import collections
from typing import Any, Protocol

import numpy as np
import optax
import tensorflow as tf
import tensorflow_federated as tff
from jaxclient import client_work as jc_client_work

from jaxclient_tff import conversion
from jaxclient_tff import jax2tf_step


class BoundOptimizer(Protocol):
  """An optimizer ready to run inside one client update."""

  def init(self, trainable: list[tf.Tensor], hparams: Any) -> Any:
    ...

  def step(self, state: Any, trainable: list[tf.Tensor],
           grads: list[tf.Tensor]) -> tuple[Any, list[tf.Tensor]]:
    ...


class TffOptimizer:
  """A `tff.learning.optimizers.Optimizer`, exactly as TFF's client work."""

  def __init__(self, optimizer: tff.learning.optimizers.Optimizer):
    self.optimizer = optimizer
    # As TFF: hparams from a state initialized for a whimsy spec.
    whimsy_state = optimizer.initialize(tf.TensorSpec((), tf.float32))
    self.initial_hparams = optimizer.get_hparams(whimsy_state)

  def build(self) -> 'TffOptimizer':
    return self

  def init(self, trainable, hparams):
    specs = tuple(tf.TensorSpec.from_tensor(t) for t in trainable)
    state = self.optimizer.initialize(specs)
    return self.optimizer.set_hparams(state, hparams) if hparams else state

  def step(self, state, trainable, grads):
    state, trainable = self.optimizer.next(state, tuple(trainable),
                                           tuple(grads))
    return state, list(trainable)


class OptaxOptimizer:
  """An `optax.GradientTransformation`, stepped by jax2tf-converted JAX."""

  def __init__(self, optimizer: optax.GradientTransformation,
               trainable_layout: conversion.PytreeLayout,
               initial_trainable):
    self.optimizer = optimizer
    self.trainable = trainable_layout
    opt_state = optimizer.init(initial_trainable)
    self.initial_hparams = collections.OrderedDict(
        (k, np.asarray(v)) for k, v in getattr(opt_state, 'hyperparams',
                                                {}).items())
    self.state = conversion.PytreeLayout(opt_state)
    self._init = jax2tf_step.to_tf(self._jax_init)
    self._step = jax2tf_step.to_tf(self._jax_step)

  def _jax_init(self, trainable, hparams):
    return self.state.flatten(jc_client_work.initial_optimizer_state(
        self.optimizer, self.trainable.unflatten(trainable), hparams))

  def _jax_step(self, opt_state, trainable, grads):
    params = self.trainable.unflatten(trainable)
    updates, opt_state = self.optimizer.update(
        self.trainable.unflatten(grads), self.state.unflatten(opt_state),
        params)
    return (self.state.flatten(opt_state),
            self.trainable.flatten(optax.apply_updates(params, updates)))

  def build(self) -> 'OptaxOptimizer':
    return self

  def init(self, trainable, hparams):
    return tuple(self._init(list(trainable), dict(hparams)))

  def step(self, state, trainable, grads):
    state, trainable = self._step(list(state), list(trainable), list(grads))
    return tuple(state), list(trainable)


def is_keras_optimizer(value) -> bool:
  return isinstance(value, (tf.keras.optimizers.Optimizer,
                            tf.keras.optimizers.legacy.Optimizer))

