"""Client metrics: init / update / finalize over summable unfinalized state.

A `Metric` is a triple of pure functions, in the style of optax's
`GradientTransformation`:

* `init() -> state`: the unfinalized state of a client that saw no data;
* `update(state, batch) -> state`: folds in one `BatchOutput`;
* `finalize(state) -> value`: the reported value.

Unfinalized states are pytrees of arrays that add up across clients, so the
default aggregator, `sum_then_finalize`, sums them over the client axis and
finalizes once (TFF's `tff.learning.metrics.sum_then_finalize`).

The client work always reports the built-ins `loss`, `num_examples`,
`num_batches` and `num_non_finite_clients` beside the model's own metrics.
Batches with no valid example never reach `update`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxclient.typing import PyTree

__all__ = [
  'BUILT_IN_METRIC_NAMES',
  'BatchOutput',
  'Metric',
  'MetricsAggregator',
  'mean_loss',
  'mean_squared_error',
  'num_batches',
  'num_examples',
  'num_non_finite_clients',
  'sparse_categorical_accuracy',
  'sum_then_finalize',
  'with_built_ins',
]


class BatchOutput(NamedTuple):
  """What a metric sees of one training batch, before the optimizer step.

  Attributes:
    predictions: the model's predictions for the batch, `[N, ...]`.
    labels: the batch's `y`, `[N, ...]`.
    mask: `[N]` bool, true for real examples, false for padding.
    loss: the batch's scalar mean loss over valid examples.
  """

  predictions: PyTree
  labels: jax.Array
  mask: jax.Array
  loss: jax.Array


class Metric(NamedTuple):
  """A client metric as pure functions over a summable unfinalized state."""

  init: Callable[[], PyTree]
  update: Callable[[PyTree, BatchOutput], PyTree]
  finalize: Callable[[PyTree], PyTree]


MetricsAggregator = Callable[
  [Mapping[str, Metric]], Callable[[Mapping[str, PyTree]], dict]
]


def _num_valid(mask: jax.Array) -> jax.Array:
  return jnp.sum(mask).astype(jnp.float32)


def _ratio(state):
  total, count = state
  return total / jnp.maximum(count, 1.0)  # 0.0 for no examples, not NaN.


def mean_loss() -> Metric:
  """Example-weighted mean of each batch's loss: state `(total, count)`."""
  return Metric(
    init=lambda: (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)),
    update=lambda s, b: (
      s[0] + b.loss.astype(jnp.float32) * _num_valid(b.mask),
      s[1] + _num_valid(b.mask),
    ),
    finalize=_ratio,
  )


def _counter(increment: Callable[[BatchOutput], jax.Array]) -> Metric:
  return Metric(
    init=lambda: jnp.zeros((), jnp.int32),
    update=lambda s, b: s + increment(b).astype(jnp.int32),
    finalize=lambda s: s,
  )


def num_examples() -> Metric:
  """Number of valid examples trained on, over all epochs (int32)."""
  return _counter(lambda b: jnp.sum(b.mask))


def num_batches() -> Metric:
  """Number of batches with at least one valid example (int32)."""
  return _counter(lambda b: jnp.ones((), jnp.int32))


def num_non_finite_clients() -> Metric:
  """1 for a client whose update was not finite, else 0; set by the client
  work after training, never by batches."""
  return _counter(lambda b: jnp.zeros((), jnp.int32))


def _masked_mean_metric(
  per_example: Callable[[BatchOutput], jax.Array],
) -> Metric:
  def update(state, batch):
    values = jnp.where(batch.mask, per_example(batch), 0.0)
    return (
      state[0] + jnp.sum(values).astype(jnp.float32),
      state[1] + _num_valid(batch.mask),
    )

  return Metric(
    init=lambda: (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)),
    update=update,
    finalize=_ratio,
  )


def sparse_categorical_accuracy() -> Metric:
  """Fraction of valid examples whose argmax prediction equals the label."""
  return _masked_mean_metric(
    lambda b: (
      jnp.argmax(b.predictions, axis=-1) == b.labels.reshape(b.mask.shape)
    ).astype(jnp.float32)
  )


def mean_squared_error() -> Metric:
  """Mean over valid examples of the mean squared error over features."""

  def per_example(b):
    diff = b.predictions - b.labels.reshape(b.predictions.shape)
    return jnp.mean(jnp.square(diff).reshape(diff.shape[0], -1), axis=1)

  return _masked_mean_metric(per_example)


BUILT_IN_METRIC_NAMES = (
  'loss',
  'num_examples',
  'num_batches',
  'num_non_finite_clients',
)


def with_built_ins(model_metrics: Mapping[str, Metric]) -> dict[str, Metric]:
  """The model's metrics followed by the built-ins every client reports."""
  return {
    **model_metrics,
    'loss': mean_loss(),
    'num_examples': num_examples(),
    'num_batches': num_batches(),
    'num_non_finite_clients': num_non_finite_clients(),
  }


def sum_then_finalize(
  metrics: Mapping[str, Metric],
) -> Callable[[Mapping[str, PyTree]], dict]:
  """The default aggregator: sum unfinalized states over clients, finalize.

  Args:
    metrics: name -> `Metric` (the model's and the built-ins).

  Returns:
    A function of the clients' unfinalized states, stacked on a leading
    client axis, returning name -> finalized value.
  """

  def aggregate(stacked: Mapping[str, PyTree]) -> dict:
    summed = jax.tree.map(lambda v: jnp.sum(v, axis=0), dict(stacked))
    return {
      name: metric.finalize(summed[name]) for name, metric in metrics.items()
    }

  return aggregate
