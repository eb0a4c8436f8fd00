"""The Flax models the `jaxclient` command trains: `Mlp` and `Cnn`.

Both are `flax.linen` classifiers of `num_classes` logits over a batch of
examples `[N, ...]`. `classifier` builds one by its `--model` name and wraps
it as a `jaxclient.models.FunctionalModel` with the command's loss (sparse
categorical cross-entropy) and metric (accuracy).

>>> import numpy as np
>>> import jaxclient as jc
>>> x = np.zeros((1, 8, 8, 1), np.float32)
>>> model = jc.flax_models.classifier('mlp', x, np.zeros((1,), np.int32),
...                                   num_classes=10)
>>> {k: v['kernel'].shape for k, v in model.initial_weights.trainable.items()}
{'Dense_0': (64, 128), 'Dense_1': (128, 10)}
>>> model.predict_on_batch(model.initial_weights, x, False).shape
(1, 10)
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxclient import losses, metrics, models

__all__ = ['MODELS', 'Cnn', 'Mlp', 'classifier']


class Mlp(nn.Module):
  """`--model mlp`: flatten, Dense(128), ReLU, Dense(num_classes).

  Attributes:
    num_classes: the number of logits per example.
  """

  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128)(x))
    return nn.Dense(self.num_classes)(x)


class Cnn(nn.Module):
  """`--model cnn`: two 3-wide convolutions (16, 32 channels, ReLU) over
  the example's leading axes, then Dense(64), ReLU, Dense(num_classes).

  Examples are of rank 1 to 3: flat examples `[F]` are one channel of
  length F; `[L, C]` and `[H, W, C]` are channels last.

  Attributes:
    num_classes: the number of logits per example.
  """

  num_classes: int

  @nn.compact
  def __call__(self, x):
    if x.ndim not in (2, 3, 4):
      raise ValueError(
        f'Cnn: expected examples of rank 1 to 3, found shape {x.shape[1:]}.'
      )
    if x.ndim == 2:
      x = x[:, :, None]
    x = nn.relu(nn.Conv(16, (3,) * (x.ndim - 2))(x))
    x = nn.relu(nn.Conv(32, (3,) * (x.ndim - 2))(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(64)(x))
    return nn.Dense(self.num_classes)(x)


# The `--model` names of the command.
MODELS = {'mlp': Mlp, 'cnn': Cnn}


def classifier(
  name: str, sample_x, sample_y, num_classes: int, *, seed: int = 0
) -> models.FunctionalModel:
  """`MODELS[name](num_classes)` as a `FunctionalModel` the command trains.

  Args:
    name: a key of `MODELS`, `'mlp'` or `'cnn'`.
    sample_x: a batch of example inputs `[N, ...]` (see `from_flax`).
    sample_y: the matching batch of integer labels `[N]`.
    num_classes: the number of classes (logits per example).
    seed: the seed of the initial weights.

  Returns:
    The model with loss `jaxclient.losses.sparse_categorical_crossentropy`
    and metric `'accuracy'` (`jaxclient.metrics.sparse_categorical_accuracy`).

  Raises:
    ValueError: for an unknown `name`, or examples `Cnn` cannot take.
  """
  if name not in MODELS:
    raise ValueError(
      f'classifier: name: expected one of {sorted(MODELS)}, found {name!r}.'
    )
  return models.from_flax(
    MODELS[name](num_classes),
    sample_x,
    losses.sparse_categorical_crossentropy,
    metrics={'accuracy': metrics.sparse_categorical_accuracy()},
    rng=jax.random.PRNGKey(seed),
    sample_y=sample_y,
  )
