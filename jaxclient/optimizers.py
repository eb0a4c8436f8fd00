"""TFF's optimizers as optax transformations, with TFF's names and numerics.

Each `build_*` mirrors `tff.learning.optimizers.build_*`: the same argument
names and defaults, the same update rule (operation for operation), and the
same hyperparameters, injected with `optax.inject_hyperparams` so that they
appear in the client work's state under TFF's names. TFF's rules differ from
optax's defaults:

* Adam/AdamW/Yogi fold the bias correction into the learning rate, so epsilon
  is added to the uncorrected `sqrt(preconditioner)`;
* RMSprop adds epsilon outside the square root;
* Adagrad's preconditioner starts at `initial_preconditioner_value` (0.1) and
  epsilon is added inside the square root;
* SGD lists `momentum` as a hyperparameter only when it is non-zero.

The updates are `-(step)`, so `optax.apply_updates(w, updates)` computes TFF's
`w - step` exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class SgdmState(NamedTuple):
  accumulator: Any


class AdagradState(NamedTuple):
  preconditioner: Any


class RmsPropState(NamedTuple):
  preconditioner: Any


class AdamState(NamedTuple):
  """State of Adam, AdamW and Yogi: the step count and two moment trees."""
  step: jax.Array
  accumulator: Any
  preconditioner: Any


def _check_nonnegative(name: str, **values) -> None:
  for key, value in values.items():
    if value is not None and not isinstance(value, jax.Array) and value < 0:
      raise ValueError(f'{name} `{key}` must be nonnegative, found {value}.')


def _check_unit_interval(name: str, **values) -> None:
  for key, value in values.items():
    if not isinstance(value, jax.Array) and not 0.0 <= value <= 1.0:
      raise ValueError(
          f'{name} `{key}` must be in the range [0.0, 1.0], found {value}.')


def _full_like(tree, value):
  return jax.tree.map(lambda p: jnp.full_like(p, value), tree)


def _cast(value, like):
  return jnp.asarray(value).astype(like.dtype)


def _sgd(learning_rate) -> optax.GradientTransformation:
  def update(grads, state, params=None):
    del params
    return jax.tree.map(lambda g: -(_cast(learning_rate, g) * g), grads), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def _sgdm(learning_rate, momentum) -> optax.GradientTransformation:
  def update(grads, state, params=None):
    del params
    acc = jax.tree.map(lambda a, g: _cast(momentum, a) * a + g,
                       state.accumulator, grads)
    updates = jax.tree.map(lambda a: -(_cast(learning_rate, a) * a), acc)
    return updates, SgdmState(acc)
  return optax.GradientTransformation(
      lambda params: SgdmState(_full_like(params, 0.0)), update)


def build_sgdm(learning_rate=0.01, momentum=None
               ) -> optax.GradientTransformation:
  """SGD with optional heavy-ball momentum (`tff.learning.optimizers.build_sgdm`).

  `a = momentum * a + g; w = w - learning_rate * a`. Hyperparameters:
  `learning_rate`, plus `momentum` when it is non-zero.
  """
  _check_nonnegative('SGD', learning_rate=learning_rate)
  if momentum:
    _check_unit_interval('SGD', momentum=momentum)
    return optax.inject_hyperparams(_sgdm)(learning_rate=learning_rate,
                                           momentum=momentum)
  return optax.inject_hyperparams(_sgd)(learning_rate=learning_rate)


def _adagrad(learning_rate, epsilon, initial_preconditioner_value):
  def update(grads, state, params=None):
    del params
    p = jax.tree.map(lambda p, g: p + jnp.square(g), state.preconditioner,
                     grads)
    updates = jax.tree.map(
        lambda g, p: -(_cast(learning_rate, g) * g / jnp.sqrt(
            p + _cast(epsilon, p))), grads, p)
    return updates, AdagradState(p)
  return optax.GradientTransformation(
      lambda params: AdagradState(
          _full_like(params, initial_preconditioner_value)), update)


def build_adagrad(learning_rate, initial_preconditioner_value=0.1,
                  epsilon=1e-7) -> optax.GradientTransformation:
  """Adagrad (`tff.learning.optimizers.build_adagrad`).

  `p = p + g**2; w = w - learning_rate * g / sqrt(p + epsilon)`, with `p`
  starting at `initial_preconditioner_value`. Hyperparameters:
  `learning_rate`, `epsilon`.
  """
  _check_nonnegative('Adagrad', learning_rate=learning_rate, epsilon=epsilon,
                     initial_preconditioner_value=initial_preconditioner_value)
  return optax.inject_hyperparams(
      _adagrad, static_args=('initial_preconditioner_value',))(
          learning_rate=learning_rate, epsilon=epsilon,
          initial_preconditioner_value=initial_preconditioner_value)


def _rmsprop(learning_rate, decay, epsilon):
  def update(grads, state, params=None):
    del params
    p = jax.tree.map(lambda p, g: p + (jnp.square(g) - p) * (1 - _cast(
        decay, p)), state.preconditioner, grads)
    updates = jax.tree.map(
        lambda g, p: -(_cast(learning_rate, g) * g /
                       (jnp.sqrt(p) + _cast(epsilon, p))), grads, p)
    return updates, RmsPropState(p)
  return optax.GradientTransformation(
      lambda params: RmsPropState(_full_like(params, 0.0)), update)


def build_rmsprop(learning_rate, decay=0.9, epsilon=1e-7
                  ) -> optax.GradientTransformation:
  """RMSprop (`tff.learning.optimizers.build_rmsprop`).

  `p = p + (g**2 - p) * (1 - decay); w = w - lr * g / (sqrt(p) + epsilon)`.
  Hyperparameters: `learning_rate`, `decay`, `epsilon`.
  """
  _check_nonnegative('RMSProp', learning_rate=learning_rate, epsilon=epsilon)
  _check_unit_interval('RMSProp', decay=decay)
  return optax.inject_hyperparams(_rmsprop)(
      learning_rate=learning_rate, decay=decay, epsilon=epsilon)


def _bias_correction(beta_1, beta_2, step):
  """sqrt(1 - beta_2**t) / (1 - beta_1**t), TFF's normalization."""
  t = step.astype(jnp.float32)
  return jnp.sqrt(1.0 - jnp.power(beta_2, t)) / (1.0 - jnp.power(beta_1, t))


def _adam_family(learning_rate, beta_1, beta_2, epsilon, *,
                 initial_preconditioner_value=0.0, weight_decay=None,
                 yogi=False):
  """The shared moment updates of TFF's Adam, AdamW and Yogi."""

  def init(params):
    return AdamState(jnp.zeros((), jnp.int32), _full_like(params, 0.0),
                     _full_like(params, initial_preconditioner_value))

  def update(grads, state, params=None):
    step = state.step + 1
    normalization = _bias_correction(beta_1, beta_2, step)
    acc = jax.tree.map(lambda a, g: a + (g - a) * (1.0 - _cast(beta_1, g)),
                       state.accumulator, grads)
    if yogi:
      precond = jax.tree.map(
          lambda p, g: p + (1 - _cast(beta_2, g)) * jnp.sign(
              jnp.square(g) - p) * jnp.square(g), state.preconditioner, grads)
    else:
      precond = jax.tree.map(
          lambda p, g: p + (jnp.square(g) - p) * (1.0 - _cast(beta_2, g)),
          state.preconditioner, grads)

    if weight_decay is None:
      normalized_lr = learning_rate * normalization
      updates = jax.tree.map(
          lambda a, p: -(_cast(normalized_lr, a) * a /
                         (jnp.sqrt(p) + _cast(epsilon, p))), acc, precond)
    else:
      if params is None:
        raise ValueError('AdamW needs `params` in `update` for weight decay.')
      updates = jax.tree.map(
          lambda a, p, w: -(_cast(learning_rate, a) * (
              _cast(normalization, a) * a / (jnp.sqrt(p) + _cast(epsilon, a))
              + weight_decay * w)), acc, precond, params)
    return updates, AdamState(step, acc, precond)

  return optax.GradientTransformation(init, update)


def _check_adam_args(name, learning_rate, beta_1, beta_2, epsilon):
  _check_nonnegative(name, learning_rate=learning_rate, epsilon=epsilon)
  _check_unit_interval(name, beta_1=beta_1, beta_2=beta_2)


def _adam(learning_rate, beta_1, beta_2, epsilon):
  return _adam_family(learning_rate, beta_1, beta_2, epsilon)


def build_adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7
               ) -> optax.GradientTransformation:
  """Adam (`tff.learning.optimizers.build_adam`).

  `lr_t = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)`;
  `w = w - lr_t * m / (sqrt(v) + epsilon)` with uncorrected moments `m`, `v`.
  Hyperparameters: `learning_rate`, `beta_1`, `beta_2`, `epsilon`.
  """
  _check_adam_args('Adam', learning_rate, beta_1, beta_2, epsilon)
  return optax.inject_hyperparams(_adam)(
      learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
      epsilon=epsilon)


def _adamw(learning_rate, beta_1, beta_2, epsilon, weight_decay):
  return _adam_family(learning_rate, beta_1, beta_2, epsilon,
                      weight_decay=weight_decay)


def build_adamw(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                weight_decay=0.004) -> optax.GradientTransformation:
  """AdamW (`tff.learning.optimizers.build_adamw`).

  `w = w - lr * (norm_t * m / (sqrt(v) + epsilon) + weight_decay * w)`.
  Hyperparameters: `learning_rate`, `beta_1`, `beta_2`, `epsilon`,
  `weight_decay`.
  """
  _check_adam_args('AdamW', learning_rate, beta_1, beta_2, epsilon)
  _check_nonnegative('AdamW', weight_decay=weight_decay)
  return optax.inject_hyperparams(_adamw)(
      learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
      epsilon=epsilon, weight_decay=weight_decay)


def _yogi(learning_rate, beta_1, beta_2, epsilon,
          initial_preconditioner_value):
  return _adam_family(learning_rate, beta_1, beta_2, epsilon,
                      initial_preconditioner_value=initial_preconditioner_value,
                      yogi=True)


def build_yogi(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-3,
               initial_preconditioner_value=1e-6
               ) -> optax.GradientTransformation:
  """Yogi (`tff.learning.optimizers.build_yogi`).

  `v = v + (1 - beta_2) * sign(g**2 - v) * g**2`, `v` starting at
  `initial_preconditioner_value`; otherwise as Adam. Hyperparameters:
  `learning_rate`, `beta_1`, `beta_2`, `epsilon`.
  """
  _check_adam_args('Yogi', learning_rate, beta_1, beta_2, epsilon)
  _check_nonnegative('Yogi',
                     initial_preconditioner_value=initial_preconditioner_value)
  return optax.inject_hyperparams(
      _yogi, static_args=('initial_preconditioner_value',))(
          learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
          epsilon=epsilon,
          initial_preconditioner_value=initial_preconditioner_value)
