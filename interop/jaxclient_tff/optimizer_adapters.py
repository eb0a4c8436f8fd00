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

`reject_uncalled_builder` (both backends, called by the builder first): an
optimizer builder passed uncalled (`optax.sgd` for `optax.sgd(0.1)`) is a
callable, so it would be taken for the Keras fallback's and fail deep in
TFF's tracing; it is recognized by where it is defined (a structural check:
nothing is called) and is a `TypeError` saying to call it.
"""

from __future__ import annotations

import collections
import functools
import inspect
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
  'reject_uncalled_builder',
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


def _unwrapped(function):
  """`function` without `functools.partial` and `functools.wraps` layers
  (`optax.inject_hyperparams(optax.sgd)` wraps `optax.sgd`)."""
  while True:
    if isinstance(function, functools.partial):
      function = function.func
    elif hasattr(function, '__wrapped__'):
      try:
        function = inspect.unwrap(function)
      except ValueError:  # A wrapper loop: no builder inside.
        return function
    else:
      return function


def _uncalled_builder(function) -> tuple[str, str] | None:
  """`(the builder's public name, the kind it returns)` when `function` is
  a function of optax, `jaxclient.optimizers` or `tff.learning.optimizers`,
  else None."""
  if not inspect.isfunction(function):
    return None  # Classes (e.g. Keras optimizers) and other callables.
  module = function.__module__ or ''
  name = function.__qualname__
  if module.split('.')[0] == 'optax':
    return f'optax.{name}', 'optax.GradientTransformation'
  if module == jc.optimizers.__name__:
    return f'{module}.{name}', 'optax.GradientTransformation'
  if any(function is v for v in vars(tff.learning.optimizers).values()):
    return (
      f'tff.learning.optimizers.{name}',
      'tff.learning.optimizers.Optimizer',
    )
  return None


def reject_uncalled_builder(optimizer) -> None:
  """Raises if `optimizer` is an optimizer builder that was not called.

  Recognized by where the function is defined, after unwrapping
  `functools.partial` and `functools.wraps`: optax (any module of the
  package), `jaxclient.optimizers`, or a public function of
  `tff.learning.optimizers`. Nothing is called: a Keras-fallback callable
  may build TF state, and calling an arbitrary callable to see what it
  returns could have other side effects.

  Raises:
    TypeError: naming `optimizer` and the builder, saying to call it.
  """
  function = _unwrapped(optimizer)
  builder = _uncalled_builder(function)
  if builder is None:
    return
  name, returns = builder
  if function is optimizer:
    found = f'`{name}` itself'
    takes_learning_rate = 'learning_rate' in (
      inspect.signature(function).parameters
    )
    example = (
      f'{name}(learning_rate=0.1)' if takes_learning_rate else f'{name}(...)'
    )
    call = f'call it (e.g. `{example}`)'
  else:
    found = (
      f'a wrapper of `{name}` (a functools.partial, or e.g. '
      'optax.inject_hyperparams)'
    )
    call = 'call it'
  raise TypeError(
    f'optimizer: found {found}, an optimizer builder that was not called; '
    f'{call} and pass the {returns} it returns. (A callable is taken only '
    'as the Keras fallback, a no-arg callable returning a tf.keras '
    'optimizer.)'
  )


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
