"""Convolutions rewritten into XLA:CPU's canonical layout: the same numbers,
and no non-canonical convolution left in a compiled training loop."""

import re

import flax.linen as nn
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import jaxclient as jc
from jaxclient._conv_layout import canonicalize_convolutions

# Spatial layouts of a 2-D convolution: input, kernel, output.
LAYOUTS = [('NHWC', 'HWIO', 'NHWC'), ('NCHW', 'OIHW', 'NCHW'),
           ('NHWC', 'OIHW', 'NCHW'), ('CHWN', 'IOHW', 'HWCN')]


def _operand(spec, sizes, rng):
  return rng.normal(size=[sizes[c] for c in spec]).astype(np.float32)


@hypothesis.settings(max_examples=20, deadline=None, derandomize=True)
@hypothesis.given(layout=st.sampled_from(LAYOUTS),
                  stride=st.integers(1, 2), dilation=st.integers(1, 2),
                  groups=st.sampled_from([1, 2]),
                  padding=st.sampled_from(['VALID', 'SAME']),
                  seed=st.integers(0, 2**16))
def test_rewritten_convolution_and_its_gradients_equal_lax(
    layout, stride, dilation, groups, padding, seed):
  rng = np.random.default_rng(seed)
  lhs_spec, rhs_spec, out_spec = layout
  lhs = _operand(lhs_spec, dict(N=3, C=4, H=7, W=6), rng)
  rhs = _operand(rhs_spec, dict(O=6, I=4 // groups, H=3, W=2), rng)

  def loss(lhs, rhs):
    out = lax.conv_general_dilated(
        lhs, rhs, (stride, stride), padding, rhs_dilation=(dilation, 1),
        dimension_numbers=layout, feature_group_count=groups)
    return jnp.sum(jnp.sin(out)), out

  reference = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  rewritten = canonicalize_convolutions(reference)
  # Both in one compiled program (one compilation per example, not one per
  # operation); only `found` goes through the rewrite.
  expected, found = jax.jit(lambda lhs, rhs: (reference(lhs, rhs),
                                              rewritten(lhs, rhs)))(lhs, rhs)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5,
                                                       atol=2e-5),
               found, expected)


def _convolution_labels(compiled_text):
  return re.findall(r'convolution\(.*?dim_labels=([^ ,]+)', compiled_text)


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='XLA:CPU layout')
def test_training_scan_compiles_to_canonical_convolutions_only():
  rng = np.random.default_rng(0)
  kernels = (jnp.asarray(_operand('HWIO', dict(H=3, W=3, I=2, O=4), rng)),
             jnp.asarray(_operand('HWIO', dict(H=3, W=3, I=4, O=3), rng)))
  images = jnp.asarray(rng.normal(size=(5, 4, 8, 8, 2)).astype(np.float32))

  def loss(kernels, x):
    for kernel in kernels:
      x = jax.nn.relu(lax.conv_general_dilated(
          x, kernel, (1, 1), 'VALID',
          dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
    return jnp.sum(x ** 2)

  def sgd_step(kernels, x, grad_fn):
    return jax.tree.map(lambda k, g: k - 1e-3 * g, kernels,
                        grad_fn(kernels, x))

  @jax.jit
  def train(kernels, images):
    # The gradient sits in a nested jit, inside the scan's while loop.
    grad_fn = canonicalize_convolutions(jax.jit(jax.grad(loss)))
    return lax.scan(lambda k, x: (sgd_step(k, x, grad_fn), None), kernels,
                    images)[0]

  labels = _convolution_labels(train.lower(kernels, images).compile()
                               .as_text())
  # Two forward, two kernel-gradient and one input-gradient convolution.
  assert len(labels) == 5
  assert set(labels) == {'b01f_01io->b01f'}
  expected = kernels
  for x in images:
    expected = sgd_step(expected, x, jax.grad(loss))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               train(kernels, images), expected)


class Cnn(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), padding='VALID')(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_cnn_cohort_equals_a_per_batch_jitted_loop():
  rng = np.random.default_rng(1)
  clients = [{'x': rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
              'y': rng.integers(0, 3, size=n).astype(np.int32)}
             for n in (7, 4, 9)]
  module = Cnn()
  model = jc.models.from_flax(module, clients[0]['x'][:1],
                              jc.losses.sparse_categorical_crossentropy,
                              sample_y=clients[0]['y'][:1])
  process = jc.build_model_delta_client_work(
      model, optax.sgd(0.1), jc.ClientWeighting.NUM_EXAMPLES,
      strategy=jc.cohort.Blocked(1))
  out = process.next(process.initialize(), model.initial_weights,
                     jc.data.pack(clients, batch_size=3))

  @jax.jit
  def step(params, x, y):
    grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        module.apply({'params': p}, x), y).mean())(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

  initial = model.initial_weights.trainable
  for i, client in enumerate(clients):
    params = initial
    for start in range(0, len(client['y']), 3):
      params = step(params, client['x'][start:start + 3],
                    client['y'][start:start + 3])
    jax.tree.map(
        lambda found, a, b: np.testing.assert_allclose(
            found[i], a - b, rtol=1e-4, atol=1e-6),
        jax.device_get(out.result.update), jax.device_get(initial),
        jax.device_get(params))


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='CPU schedule')
def test_a_cpu_trains_a_convolutional_model_one_client_at_a_time():
  x = np.zeros((1, 8, 8, 1), np.float32)
  y = np.zeros((1,), np.int32)
  cnn = jc.models.from_flax(Cnn(), x, jc.losses.sparse_categorical_crossentropy,
                            sample_y=y)
  mlp = jc.models.from_flax(nn.Dense(3), x.reshape(1, -1),
                            jc.losses.sparse_categorical_crossentropy,
                            sample_y=y)
  build = lambda model: jc.build_model_delta_client_work(
      model, optax.sgd(0.1), jc.ClientWeighting.NUM_EXAMPLES)
  data = {'x': np.zeros((8, 1, 1, 8, 8, 1), np.float32),
          'y': np.zeros((8, 1, 1), np.int32), 'mask': np.ones((8, 1, 1), bool)}
  flat = dict(data, x=data['x'].reshape(8, 1, 1, 64))
  cnn_plan, mlp_plan = build(cnn).plan(data), build(mlp).plan(flat)
  # Over every device (one per core) or on one, each device's schedule.
  per_device = lambda plan: getattr(plan.strategy, 'per_device', plan.strategy)
  assert per_device(cnn_plan) == jc.cohort.Blocked(1)
  assert 'convolutions' in cnn_plan.reason
  assert per_device(mlp_plan).block_size(8, devices=1) == 8
