"""TFF's optimizers as optax transformations, with TFF's names and numerics.

Each `build_*` mirrors `tff.learning.optimizers.build_*`: the same argument
names and defaults, the same update rule and the same hyperparameters,
injected with `optax.inject_hyperparams` so that they appear in the client
work's state (`opt_state.hyperparams`) under TFF's names.

As in optax's `alias.py`, every optimizer is a chain of small
transformations: a `scale_by_tff_*` transformation with TFF's rule (public,
and composable with any other optax transformation), `optax.add_decayed_weights`
for AdamW, and `optax.scale_by_learning_rate`, which negates the step so that
`optax.apply_updates(w, updates)` computes TFF's `w - step`. TFF's rules
differ from optax's:

* Adam/AdamW/Yogi fold the bias correction into one factor
  `sqrt(1 - beta_2**t) / (1 - beta_1**t)`, so epsilon is added to the
  uncorrected `sqrt(preconditioner)`;
* RMSprop adds epsilon outside the square root;
* Adagrad's preconditioner starts at `initial_preconditioner_value` (0.1) and
  epsilon is added inside the square root;
* SGD lists `momentum` as a hyperparameter only when it is non-zero.

Example, TFF's Adam rule composed by hand (`build_adam` also injects the
hyperparameters):

>>> import jax.numpy as jnp
>>> import optax
>>> import jaxclient as jc
>>> adam = optax.chain(jc.optimizers.scale_by_tff_adam(),
...                    optax.scale_by_learning_rate(0.05))
>>> updates, _ = adam.update(jnp.array([2.0, -0.5]),
...                          adam.init(jnp.zeros(2)))
>>> print([round(x, 4) for x in updates.tolist()])
[-0.05, 0.05]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
  'ScaleByTffAdagradState',
  'ScaleByTffAdamState',
  'ScaleByTffMomentumState',
  'ScaleByTffRmsPropState',
  'build_adagrad',
  'build_adam',
  'build_adamw',
  'build_rmsprop',
  'build_sgdm',
  'build_yogi',
  'scale_by_tff_adagrad',
  'scale_by_tff_adam',
  'scale_by_tff_momentum',
  'scale_by_tff_rmsprop',
  'scale_by_tff_yogi',
]


# -- States. ---------------------------------------------------------------


class ScaleByTffMomentumState(NamedTuple):
  """State of `scale_by_tff_momentum`.

  Attributes:
    accumulator: the momentum accumulator `a` (a tree like the params, zeros
      at first), updated as `a = momentum * a + g`.
  """

  accumulator: Any


class ScaleByTffAdagradState(NamedTuple):
  """State of `scale_by_tff_adagrad`.

  Attributes:
    preconditioner: the running sum of squared gradients `p` (a tree like the
      params, `initial_preconditioner_value` at first), updated as
      `p = p + g**2`.
  """

  preconditioner: Any


class ScaleByTffRmsPropState(NamedTuple):
  """State of `scale_by_tff_rmsprop`.

  Attributes:
    preconditioner: the moving average of squared gradients `p` (a tree like
      the params, zeros at first), updated as
      `p = p + (g**2 - p) * (1 - decay)`.
  """

  preconditioner: Any


class ScaleByTffAdamState(NamedTuple):
  """State of `scale_by_tff_adam` and `scale_by_tff_yogi`.

  Attributes:
    step: the number of updates made so far (an int32 scalar, 0 at first);
      the bias correction of update `t = step + 1` uses it.
    accumulator: the uncorrected first moment `m` (a tree like the params,
      zeros at first), updated as `m = m + (g - m) * (1 - beta_1)`.
    preconditioner: the uncorrected second moment `v` (a tree like the params,
      zeros for Adam and `initial_preconditioner_value` for Yogi at first),
      updated by Adam's or Yogi's rule.
  """

  step: jax.Array
  accumulator: Any
  preconditioner: Any


# -- Shared helpers. -------------------------------------------------------


def _check_nonnegative(name: str, **values: float | jax.Array | None) -> None:
  for key, value in values.items():
    if value is not None and not isinstance(value, jax.Array) and value < 0:
      raise ValueError(f'{name} `{key}` must be nonnegative, found {value}.')


def _check_unit_interval(name: str, **values: float | jax.Array) -> None:
  for key, value in values.items():
    if not isinstance(value, jax.Array) and not 0.0 <= value <= 1.0:
      raise ValueError(
        f'{name} `{key}` must be in the range [0.0, 1.0], found {value}.'
      )


def _check_adam_args(
  name: str,
  learning_rate: float | jax.Array,
  beta_1: float | jax.Array,
  beta_2: float | jax.Array,
  epsilon: float | jax.Array,
) -> None:
  _check_nonnegative(name, learning_rate=learning_rate, epsilon=epsilon)
  _check_unit_interval(name, beta_1=beta_1, beta_2=beta_2)


def _full_like(tree: Any, value: float) -> Any:
  return jax.tree.map(lambda p: jnp.full_like(p, value), tree)


def _cast(value: float | jax.Array, like: jax.Array) -> jax.Array:
  return jnp.asarray(value).astype(like.dtype)


# -- TFF's rules as optax transformations. ---------------------------------


def scale_by_tff_momentum(
  momentum: float | jax.Array,
) -> optax.GradientTransformation:
  """TFF's heavy-ball momentum: `a = momentum * a + g`; the update is `a`.

  Args:
    momentum: the accumulator's decay, in [0, 1].

  Returns:
    An `optax.GradientTransformation` with a `ScaleByTffMomentumState`.
  """

  def init(params):
    return ScaleByTffMomentumState(_full_like(params, 0.0))

  def update(updates, state, params=None):
    del params
    acc = jax.tree.map(
      lambda a, g: _cast(momentum, a) * a + g, state.accumulator, updates
    )
    return acc, ScaleByTffMomentumState(acc)

  return optax.GradientTransformation(init, update)


def scale_by_tff_adagrad(
  epsilon: float | jax.Array = 1e-7, initial_preconditioner_value: float = 0.1
) -> optax.GradientTransformation:
  """TFF's Adagrad: `p = p + g**2`; the update is `g / sqrt(p + epsilon)`.

  Args:
    epsilon: added to the preconditioner inside the square root.
    initial_preconditioner_value: the preconditioner's initial value.

  Returns:
    An `optax.GradientTransformation` with a `ScaleByTffAdagradState`.
  """

  def init(params):
    return ScaleByTffAdagradState(
      _full_like(params, initial_preconditioner_value)
    )

  def update(updates, state, params=None):
    del params
    precond = jax.tree.map(
      lambda p, g: p + jnp.square(g), state.preconditioner, updates
    )
    updates = jax.tree.map(
      lambda g, p: g / jnp.sqrt(p + _cast(epsilon, p)), updates, precond
    )
    return updates, ScaleByTffAdagradState(precond)

  return optax.GradientTransformation(init, update)


def scale_by_tff_rmsprop(
  decay: float | jax.Array = 0.9, epsilon: float | jax.Array = 1e-7
) -> optax.GradientTransformation:
  """TFF's RMSprop: `p = p + (g**2 - p) * (1 - decay)`; `g / (sqrt(p) + eps)`.

  Args:
    decay: the moving average's decay, in [0, 1].
    epsilon: added to `sqrt(p)`, outside the square root.

  Returns:
    An `optax.GradientTransformation` with a `ScaleByTffRmsPropState`.
  """

  def init(params):
    return ScaleByTffRmsPropState(_full_like(params, 0.0))

  def update(updates, state, params=None):
    del params
    precond = jax.tree.map(
      lambda p, g: p + (jnp.square(g) - p) * (1 - _cast(decay, p)),
      state.preconditioner,
      updates,
    )
    updates = jax.tree.map(
      lambda g, p: g / (jnp.sqrt(p) + _cast(epsilon, p)), updates, precond
    )
    return updates, ScaleByTffRmsPropState(precond)

  return optax.GradientTransformation(init, update)


def _bias_correction(
  beta_1: float | jax.Array, beta_2: float | jax.Array, step: jax.Array
) -> jax.Array:
  """sqrt(1 - beta_2**t) / (1 - beta_1**t), TFF's normalization."""
  t = step.astype(jnp.float32)
  return jnp.sqrt(1.0 - jnp.power(beta_2, t)) / (1.0 - jnp.power(beta_1, t))


def _adam_preconditioner(
  v: jax.Array, g: jax.Array, beta_2: jax.Array
) -> jax.Array:
  """Adam's second moment: `v + (g**2 - v) * (1 - beta_2)`."""
  return v + (jnp.square(g) - v) * (1.0 - beta_2)


def _yogi_preconditioner(
  v: jax.Array, g: jax.Array, beta_2: jax.Array
) -> jax.Array:
  """Yogi's second moment: `v + (1 - beta_2) * sign(g**2 - v) * g**2`."""
  return v + (1 - beta_2) * jnp.sign(jnp.square(g) - v) * jnp.square(g)


def _scale_by_tff_moments(
  beta_1: float | jax.Array,
  beta_2: float | jax.Array,
  epsilon: float | jax.Array,
  initial_preconditioner_value: float,
  preconditioner_rule: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
) -> optax.GradientTransformation:
  """The moments and bias correction shared by TFF's Adam and Yogi.

  `m = m + (g - m) * (1 - beta_1)`, `v = preconditioner_rule(v, g, beta_2)`;
  the update is `sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + eps)`.
  """

  def init(params):
    return ScaleByTffAdamState(
      jnp.zeros((), jnp.int32),
      _full_like(params, 0.0),
      _full_like(params, initial_preconditioner_value),
    )

  def update(updates, state, params=None):
    del params
    step = state.step + 1
    normalization = _bias_correction(beta_1, beta_2, step)
    acc = jax.tree.map(
      lambda m, g: m + (g - m) * (1.0 - _cast(beta_1, g)),
      state.accumulator,
      updates,
    )
    precond = jax.tree.map(
      lambda v, g: preconditioner_rule(v, g, _cast(beta_2, g)),
      state.preconditioner,
      updates,
    )
    updates = jax.tree.map(
      lambda m, v: (
        _cast(normalization, m) * m / (jnp.sqrt(v) + _cast(epsilon, v))
      ),
      acc,
      precond,
    )
    return updates, ScaleByTffAdamState(step, acc, precond)

  return optax.GradientTransformation(init, update)


def scale_by_tff_adam(
  beta_1: float | jax.Array = 0.9,
  beta_2: float | jax.Array = 0.999,
  epsilon: float | jax.Array = 1e-7,
) -> optax.GradientTransformation:
  """TFF's Adam direction, with the bias correction folded into one factor.

  `m = m + (g - m) * (1 - beta_1)`, `v = v + (g**2 - v) * (1 - beta_2)`
  (uncorrected moments, zeros at first); the update of step `t` is
  `sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + epsilon)`.

  Args:
    beta_1: the first moment's decay, in [0, 1].
    beta_2: the second moment's decay, in [0, 1].
    epsilon: added to the uncorrected `sqrt(v)`.

  Returns:
    An `optax.GradientTransformation` with a `ScaleByTffAdamState`.
  """
  return _scale_by_tff_moments(
    beta_1, beta_2, epsilon, 0.0, _adam_preconditioner
  )


def scale_by_tff_yogi(
  beta_1: float | jax.Array = 0.9,
  beta_2: float | jax.Array = 0.999,
  epsilon: float | jax.Array = 1e-3,
  initial_preconditioner_value: float = 1e-6,
) -> optax.GradientTransformation:
  """TFF's Yogi direction: Adam's, with Yogi's second-moment rule.

  `v = v + (1 - beta_2) * sign(g**2 - v) * g**2`, `v` starting at
  `initial_preconditioner_value`; the first moment and the bias correction
  are `scale_by_tff_adam`'s.

  Args:
    beta_1: the first moment's decay, in [0, 1].
    beta_2: the second moment's rate, in [0, 1].
    epsilon: added to the uncorrected `sqrt(v)`.
    initial_preconditioner_value: the second moment's initial value.

  Returns:
    An `optax.GradientTransformation` with a `ScaleByTffAdamState`.
  """
  return _scale_by_tff_moments(
    beta_1, beta_2, epsilon, initial_preconditioner_value, _yogi_preconditioner
  )


# -- The chains, as `optax.inject_hyperparams` factories: their numeric
#    parameters, in order, are TFF's hyperparameters. -------------------


def _sgd(learning_rate: float | jax.Array) -> optax.GradientTransformation:
  return optax.scale_by_learning_rate(learning_rate)


def _sgdm(
  learning_rate: float | jax.Array, momentum: float | jax.Array
) -> optax.GradientTransformation:
  return optax.chain(
    scale_by_tff_momentum(momentum), optax.scale_by_learning_rate(learning_rate)
  )


def _adagrad(
  learning_rate: float | jax.Array,
  epsilon: float | jax.Array,
  initial_preconditioner_value: float,
) -> optax.GradientTransformation:
  return optax.chain(
    scale_by_tff_adagrad(epsilon, initial_preconditioner_value),
    optax.scale_by_learning_rate(learning_rate),
  )


def _rmsprop(
  learning_rate: float | jax.Array,
  decay: float | jax.Array,
  epsilon: float | jax.Array,
) -> optax.GradientTransformation:
  return optax.chain(
    scale_by_tff_rmsprop(decay, epsilon),
    optax.scale_by_learning_rate(learning_rate),
  )


def _adam(
  learning_rate: float | jax.Array,
  beta_1: float | jax.Array,
  beta_2: float | jax.Array,
  epsilon: float | jax.Array,
) -> optax.GradientTransformation:
  return optax.chain(
    scale_by_tff_adam(beta_1, beta_2, epsilon),
    optax.scale_by_learning_rate(learning_rate),
  )


def _adamw(
  learning_rate: float | jax.Array,
  beta_1: float | jax.Array,
  beta_2: float | jax.Array,
  epsilon: float | jax.Array,
  weight_decay: float | jax.Array,
) -> optax.GradientTransformation:
  return optax.chain(
    scale_by_tff_adam(beta_1, beta_2, epsilon),
    optax.add_decayed_weights(weight_decay),
    optax.scale_by_learning_rate(learning_rate),
  )


def _yogi(
  learning_rate: float | jax.Array,
  beta_1: float | jax.Array,
  beta_2: float | jax.Array,
  epsilon: float | jax.Array,
  initial_preconditioner_value: float,
) -> optax.GradientTransformation:
  return optax.chain(
    scale_by_tff_yogi(beta_1, beta_2, epsilon, initial_preconditioner_value),
    optax.scale_by_learning_rate(learning_rate),
  )


# -- TFF's builders. -------------------------------------------------------


def build_sgdm(
  learning_rate: float | jax.Array = 0.01,
  momentum: float | jax.Array | None = None,
) -> optax.GradientTransformation:
  """SGD with optional momentum (`tff.learning.optimizers.build_sgdm`).

  `a = momentum * a + g; w = w - learning_rate * a` (`a = g` without
  momentum): `scale_by_tff_momentum`, then the learning rate.

  Args:
    learning_rate: the step size, non-negative.
    momentum: the accumulator's decay, in [0, 1]; `None` or 0 for plain SGD.

  Returns:
    An `optax.GradientTransformation` whose state's `hyperparams` are
    `learning_rate`, plus `momentum` when it is non-zero.

  Raises:
    ValueError: if `learning_rate` is negative or `momentum` outside [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import jaxclient as jc
    >>> sgdm = jc.optimizers.build_sgdm(learning_rate=0.5, momentum=0.5)
    >>> w = jnp.array([1.0, -1.0])
    >>> state = sgdm.init(w)
    >>> list(state.hyperparams)
    ['learning_rate', 'momentum']
    >>> for g in (jnp.array([1.0, -2.0]), jnp.array([1.0, -2.0])):
    ...   updates, state = sgdm.update(g, state, w)
    ...   w = optax.apply_updates(w, updates)
    >>> print([round(x, 4) for x in w.tolist()])
    [-0.25, 1.5]
  """
  _check_nonnegative('SGD', learning_rate=learning_rate)
  if momentum:
    _check_unit_interval('SGD', momentum=momentum)
    return optax.inject_hyperparams(_sgdm)(
      learning_rate=learning_rate, momentum=momentum
    )
  return optax.inject_hyperparams(_sgd)(learning_rate=learning_rate)


def build_adagrad(
  learning_rate: float | jax.Array,
  initial_preconditioner_value: float = 0.1,
  epsilon: float | jax.Array = 1e-7,
) -> optax.GradientTransformation:
  """Adagrad (`tff.learning.optimizers.build_adagrad`).

  `p = p + g**2; w = w - learning_rate * g / sqrt(p + epsilon)`, with `p`
  starting at `initial_preconditioner_value`: `scale_by_tff_adagrad`, then
  the learning rate.

  Args:
    learning_rate: the step size, non-negative.
    initial_preconditioner_value: the preconditioner's initial value,
      non-negative (a static argument, not a hyperparameter).
    epsilon: added inside the square root, non-negative.

  Returns:
    An `optax.GradientTransformation` whose state's `hyperparams` are
    `learning_rate` and `epsilon`.

  Raises:
    ValueError: if an argument is negative.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import jaxclient as jc
    >>> adagrad = jc.optimizers.build_adagrad(
    ...     learning_rate=0.5, initial_preconditioner_value=0.0, epsilon=0.0)
    >>> w = jnp.array([1.0, -1.0])
    >>> state = adagrad.init(w)
    >>> list(state.hyperparams)
    ['learning_rate', 'epsilon']
    >>> for g in (jnp.array([3.0, -4.0]), jnp.array([4.0, -3.0])):
    ...   updates, state = adagrad.update(g, state, w)
    ...   w = optax.apply_updates(w, updates)
    >>> print([round(x, 4) for x in w.tolist()])
    [0.1, -0.2]
  """
  _check_nonnegative(
    'Adagrad',
    learning_rate=learning_rate,
    epsilon=epsilon,
    initial_preconditioner_value=initial_preconditioner_value,
  )
  return optax.inject_hyperparams(
    _adagrad, static_args=('initial_preconditioner_value',)
  )(
    learning_rate=learning_rate,
    epsilon=epsilon,
    initial_preconditioner_value=initial_preconditioner_value,
  )


def build_rmsprop(
  learning_rate: float | jax.Array,
  decay: float | jax.Array = 0.9,
  epsilon: float | jax.Array = 1e-7,
) -> optax.GradientTransformation:
  """RMSprop (`tff.learning.optimizers.build_rmsprop`).

  `p = p + (g**2 - p) * (1 - decay); w = w - lr * g / (sqrt(p) + epsilon)`:
  `scale_by_tff_rmsprop`, then the learning rate.

  Args:
    learning_rate: the step size, non-negative.
    decay: the moving average's decay, in [0, 1].
    epsilon: added outside the square root, non-negative.

  Returns:
    An `optax.GradientTransformation` whose state's `hyperparams` are
    `learning_rate`, `decay` and `epsilon`.

  Raises:
    ValueError: if `learning_rate` or `epsilon` is negative or `decay` is
      outside [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import jaxclient as jc
    >>> rmsprop = jc.optimizers.build_rmsprop(
    ...     learning_rate=0.5, decay=0.75, epsilon=0.0)
    >>> w = jnp.array([1.0, -1.0])
    >>> state = rmsprop.init(w)
    >>> list(state.hyperparams)
    ['learning_rate', 'decay', 'epsilon']
    >>> for g in (jnp.array([2.0, -2.0]), jnp.array([2.0, -2.0])):
    ...   updates, state = rmsprop.update(g, state, w)
    ...   w = optax.apply_updates(w, updates)
    >>> print([round(x, 4) for x in w.tolist()])
    [-0.7559, 0.7559]
  """
  _check_nonnegative('RMSProp', learning_rate=learning_rate, epsilon=epsilon)
  _check_unit_interval('RMSProp', decay=decay)
  return optax.inject_hyperparams(_rmsprop)(
    learning_rate=learning_rate, decay=decay, epsilon=epsilon
  )


def build_adam(
  learning_rate: float | jax.Array,
  beta_1: float | jax.Array = 0.9,
  beta_2: float | jax.Array = 0.999,
  epsilon: float | jax.Array = 1e-7,
) -> optax.GradientTransformation:
  """Adam (`tff.learning.optimizers.build_adam`).

  `lr_t = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)`;
  `w = w - lr_t * m / (sqrt(v) + epsilon)` with uncorrected moments `m`, `v`:
  `scale_by_tff_adam`, then the learning rate.

  Args:
    learning_rate: the step size, non-negative.
    beta_1: the first moment's decay, in [0, 1].
    beta_2: the second moment's decay, in [0, 1].
    epsilon: added to the uncorrected `sqrt(v)`, non-negative.

  Returns:
    An `optax.GradientTransformation` whose state's `hyperparams` are
    `learning_rate`, `beta_1`, `beta_2` and `epsilon`.

  Raises:
    ValueError: if `learning_rate` or `epsilon` is negative or a beta is
      outside [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import jaxclient as jc
    >>> adam = jc.optimizers.build_adam(learning_rate=0.05)
    >>> w = jnp.array([1.0, -1.0])
    >>> state = adam.init(w)
    >>> list(state.hyperparams)
    ['learning_rate', 'beta_1', 'beta_2', 'epsilon']
    >>> for g in (jnp.array([2.0, -0.5]), jnp.array([2.0, -0.5])):
    ...   updates, state = adam.update(g, state, w)
    ...   w = optax.apply_updates(w, updates)
    >>> print([round(x, 4) for x in w.tolist()])
    [0.9, -0.9]
  """
  _check_adam_args('Adam', learning_rate, beta_1, beta_2, epsilon)
  return optax.inject_hyperparams(_adam)(
    learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon
  )


def build_adamw(
  learning_rate: float | jax.Array,
  beta_1: float | jax.Array = 0.9,
  beta_2: float | jax.Array = 0.999,
  epsilon: float | jax.Array = 1e-7,
  weight_decay: float | jax.Array = 0.004,
) -> optax.GradientTransformation:
  """AdamW (`tff.learning.optimizers.build_adamw`).

  `w = w - lr * (norm_t * m / (sqrt(v) + epsilon) + weight_decay * w)`:
  `scale_by_tff_adam`, `optax.add_decayed_weights`, then the learning rate.
  `update` needs `params`.

  Args:
    learning_rate: the step size, non-negative.
    beta_1: the first moment's decay, in [0, 1].
    beta_2: the second moment's decay, in [0, 1].
    epsilon: added to the uncorrected `sqrt(v)`, non-negative.
    weight_decay: the decoupled weight decay, non-negative.

  Returns:
    An `optax.GradientTransformation` whose state's `hyperparams` are
    `learning_rate`, `beta_1`, `beta_2`, `epsilon` and `weight_decay`.

  Raises:
    ValueError: if `learning_rate`, `epsilon` or `weight_decay` is negative or
      a beta is outside [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import jaxclient as jc
    >>> adamw = jc.optimizers.build_adamw(learning_rate=0.05, weight_decay=0.5)
    >>> w = jnp.array([1.0, -1.0])
    >>> state = adamw.init(w)
    >>> list(state.hyperparams)
    ['learning_rate', 'beta_1', 'beta_2', 'epsilon', 'weight_decay']
    >>> for g in (jnp.array([2.0, -0.5]), jnp.array([2.0, -0.5])):
    ...   updates, state = adamw.update(g, state, w)
    ...   w = optax.apply_updates(w, updates)
    >>> print([round(x, 4) for x in w.tolist()])
    [0.8519, -0.8519]
  """
  _check_adam_args('AdamW', learning_rate, beta_1, beta_2, epsilon)
  _check_nonnegative('AdamW', weight_decay=weight_decay)
  return optax.inject_hyperparams(_adamw)(
    learning_rate=learning_rate,
    beta_1=beta_1,
    beta_2=beta_2,
    epsilon=epsilon,
    weight_decay=weight_decay,
  )


def build_yogi(
  learning_rate: float | jax.Array,
  beta_1: float | jax.Array = 0.9,
  beta_2: float | jax.Array = 0.999,
  epsilon: float | jax.Array = 1e-3,
  initial_preconditioner_value: float = 1e-6,
) -> optax.GradientTransformation:
  """Yogi (`tff.learning.optimizers.build_yogi`).

  `v = v + (1 - beta_2) * sign(g**2 - v) * g**2`, `v` starting at
  `initial_preconditioner_value`; otherwise as Adam: `scale_by_tff_yogi`,
  then the learning rate.

  Args:
    learning_rate: the step size, non-negative.
    beta_1: the first moment's decay, in [0, 1].
    beta_2: the second moment's rate, in [0, 1].
    epsilon: added to the uncorrected `sqrt(v)`, non-negative.
    initial_preconditioner_value: the second moment's initial value,
      non-negative (a static argument, not a hyperparameter).

  Returns:
    An `optax.GradientTransformation` whose state's `hyperparams` are
    `learning_rate`, `beta_1`, `beta_2` and `epsilon`.

  Raises:
    ValueError: if `learning_rate`, `epsilon` or
      `initial_preconditioner_value` is negative or a beta is outside [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import jaxclient as jc
    >>> yogi = jc.optimizers.build_yogi(learning_rate=0.05)
    >>> w = jnp.array([1.0, -1.0])
    >>> state = yogi.init(w)
    >>> list(state.hyperparams)
    ['learning_rate', 'beta_1', 'beta_2', 'epsilon']
    >>> for g in (jnp.array([2.0, -0.5]), jnp.array([2.0, -0.5])):
    ...   updates, state = yogi.update(g, state, w)
    ...   w = optax.apply_updates(w, updates)
    >>> print([round(x, 4) for x in w.tolist()])
    [0.9014, -0.9053]
  """
  _check_adam_args('Yogi', learning_rate, beta_1, beta_2, epsilon)
  _check_nonnegative(
    'Yogi', initial_preconditioner_value=initial_preconditioner_value
  )
  return optax.inject_hyperparams(
    _yogi, static_args=('initial_preconditioner_value',)
  )(
    learning_rate=learning_rate,
    beta_1=beta_1,
    beta_2=beta_2,
    epsilon=epsilon,
    initial_preconditioner_value=initial_preconditioner_value,
  )
