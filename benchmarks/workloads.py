"""The benchmark workloads: two models as pure JAX functions, synthetic client
data, and the FLOP count of training on one example.

Every peer trains the SAME model (these functions, or a Keras model built
layer for layer from the same weights), on the SAME data, with plain SGD at
the same learning rate, one step per batch:

* `2nn`: the 784-200-200-10 MLP with ReLU of the FedAvg paper (McMahan et
  al., 2017), 199,210 parameters;
* `cnn`: the EMNIST CNN of Reddi et al. (2021, "Adaptive Federated
  Optimization"): conv 3x3 32, conv 3x3 64 (valid padding, ReLU), max-pool
  2x2, dense 128 (ReLU), dense 62; 1,206,590 parameters. The paper's dropout
  is left out so that every peer computes the same deterministic numbers.

Parameters are a list of `{'kernel', 'bias'}` layers in Keras layout (dense
kernels `[in, out]`, conv kernels HWIO, activations NHWC), so that
`keras_model.set_weights(flat_weights(params))` gives the Keras twin.

Client data is uniform noise with uniform labels, generated from a seed:
throughput does not depend on the values, and every client holds exactly
`num_batches * batch_size` examples (no padding), so that every peer does
the same number of steps on the same examples.

This module needs only numpy and jax (it runs in the core, TFF and bench
environments alike).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

LEARNING_RATE = 0.05


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer: `kind` is 'dense', 'conv' or 'maxpool'; `units` the output
  features (channels for conv); `activation` 'relu' or None."""

  kind: str
  units: int = 0
  activation: str | None = None


@dataclasses.dataclass(frozen=True)
class Workload:
  """A model and the shape of its data."""

  name: str
  description: str
  example_shape: tuple[int, ...]
  num_classes: int
  layers: Sequence[Layer]

  # -- model ---------------------------------------------------------------

  def init(self, seed: int = 0) -> list[dict[str, jax.Array]]:
    """Glorot-uniform kernels and zero biases (Keras' defaults), in float32."""
    rng = np.random.default_rng(seed)
    params = []
    shape = self.example_shape
    for layer in self.layers:
      if layer.kind == 'maxpool':
        shape = (shape[0] // 2, shape[1] // 2, shape[2])
        continue
      if layer.kind == 'conv':
        kernel_shape = (3, 3, shape[-1], layer.units)
        fan_in, fan_out = 9 * shape[-1], 9 * layer.units
        shape = (shape[0] - 2, shape[1] - 2, layer.units)
      else:
        kernel_shape = (int(np.prod(shape)), layer.units)
        fan_in, fan_out = kernel_shape
        shape = (layer.units,)
      limit = np.sqrt(6.0 / (fan_in + fan_out))
      params.append({
          'kernel': jnp.asarray(rng.uniform(-limit, limit, kernel_shape),
                                jnp.float32),
          'bias': jnp.zeros((layer.units,), jnp.float32)})
    return params

  def apply(self, params, x: jax.Array) -> jax.Array:
    """Logits `[N, num_classes]` for a batch `x` `[N, *example_shape]`."""
    weights = iter(params)
    for layer in self.layers:
      if layer.kind == 'maxpool':
        x = max_pool_2x2(x)
        continue
      w = next(weights)
      if layer.kind == 'conv':
        x = jax.lax.conv_general_dilated(
            x, w['kernel'], (1, 1), 'VALID',
            dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + w['bias']
      else:
        x = x.reshape(x.shape[0], -1) @ w['kernel'] + w['bias']
      if layer.activation == 'relu':
        x = jax.nn.relu(x)
    return x

  def num_parameters(self) -> int:
    return sum(int(np.prod(w.shape)) for layer in self.init()
               for w in layer.values())

  # -- cost ----------------------------------------------------------------

  def train_flops_per_example(self) -> int:
    """FLOPs of one SGD step per example, counting multiply-adds as 2.

    Forward pass + weight gradients (as many as forward) + input gradients
    of every layer but the first (nobody needs the gradient of the data).
    This convention gives the 71.6 MFLOP quoted for the EMNIST CNN.
    Element-wise work (bias, ReLU, pooling, softmax) is not counted.
    """
    layer_flops = []
    shape = self.example_shape
    for layer in self.layers:
      if layer.kind == 'maxpool':
        shape = (shape[0] // 2, shape[1] // 2, shape[2])
      elif layer.kind == 'conv':
        out = (shape[0] - 2, shape[1] - 2, layer.units)
        layer_flops.append(2 * out[0] * out[1] * layer.units * 9 * shape[-1])
        shape = out
      else:
        layer_flops.append(2 * int(np.prod(shape)) * layer.units)
        shape = (layer.units,)
    return 3 * sum(layer_flops) - layer_flops[0]


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pooling with stride 2 of NHWC `x` with even height and width.

  The same numbers as `reduce_window` max-pooling (and Keras' `MaxPool2D`),
  written as a reshape and a max: its gradient is element-wise (jax2tf
  converts it without XLA ops, which the gradient of `reduce_window`,
  `select_and_scatter_add`, is not) and XLA:CPU runs it faster.
  """
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


TWO_NN = Workload(
    name='2nn',
    description='784-200-200-10 MLP (FedAvg "2NN")',
    example_shape=(784,),
    num_classes=10,
    layers=(Layer('dense', 200, 'relu'), Layer('dense', 200, 'relu'),
            Layer('dense', 10)))

EMNIST_CNN = Workload(
    name='cnn',
    description='EMNIST CNN of Reddi et al. (conv32-conv64-pool-128-62)',
    example_shape=(28, 28, 1),
    num_classes=62,
    layers=(Layer('conv', 32, 'relu'), Layer('conv', 64, 'relu'),
            Layer('maxpool'), Layer('dense', 128, 'relu'), Layer('dense', 62)))

WORKLOADS = {w.name: w for w in (TWO_NN, EMNIST_CNN)}


def client_data(workload: Workload, num_clients: int, num_batches: int = 10,
                batch_size: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
  """`{'x': [C, B, N, *example_shape] float32, 'y': [C, B, N] int32}`."""
  rng = np.random.default_rng(seed)
  lead = (num_clients, num_batches, batch_size)
  return {
      'x': rng.random(lead + workload.example_shape, dtype=np.float32),
      'y': rng.integers(0, workload.num_classes, lead).astype(np.int32)}


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy from logits against integer labels,
  through `one_hot` (no gather: jax2tf converts it to plain TF ops)."""
  one_hot = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
  return -jnp.sum(one_hot * jax.nn.log_softmax(logits), axis=-1)


def mean_loss(workload: Workload, params, x, y) -> jax.Array:
  """Softmax cross-entropy from logits, averaged over the batch."""
  return jnp.mean(cross_entropy(workload.apply(params, x), y))


def sgd_client_update(workload: Workload, learning_rate: float
                      ) -> Callable[..., tuple]:
  """The per-client update a JAX user writes by hand (unjitted, unbatched):

  `(params, x [B, N, ...], y [B, N]) -> (update, num_examples, loss_sum)`
  with `update = params - final_params` after one SGD step per batch, in
  order; `loss_sum` is the sum over batches of batch loss times batch size.
  Used by the plain loop, DrJAX and (split into steps) FedJAX.
  """
  grad_fn = jax.value_and_grad(lambda p, x, y: mean_loss(workload, p, x, y))

  def step(params, batch):
    loss, grads = grad_fn(params, *batch)
    params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
    return params, loss * batch[1].shape[0]

  def client_update(params, x, y):
    final, losses = jax.lax.scan(step, params, (x, y))
    update = jax.tree.map(jnp.subtract, params, final)
    return update, jnp.float32(x.shape[0] * x.shape[1]), jnp.sum(losses)

  return client_update


def flatten(params) -> np.ndarray:
  """All leaves of a parameter list, in layer order, as one float64 vector."""
  return np.concatenate([np.asarray(leaf, np.float64).ravel()
                         for layer in params
                         for leaf in (layer['kernel'], layer['bias'])])


def flat_weights(params) -> list[np.ndarray]:
  """`[kernel0, bias0, kernel1, ...]`: Keras' `get_weights` order."""
  return [np.asarray(layer[k]) for layer in params for k in ('kernel', 'bias')]


def weighted_mean_update(stacked_update, weights) -> np.ndarray:
  """The weighted mean over clients of an update stacked on a leading client
  axis (a parameter list of `[C, ...]` leaves), flattened in layer order:
  what every peer's round reduces to, for the agreement check."""
  weights = np.asarray(weights, np.float64)
  mean = [{k: np.tensordot(weights, np.asarray(v, np.float64), axes=1) /
           weights.sum() for k, v in layer.items()} for layer in stacked_update]
  return flatten(mean)
