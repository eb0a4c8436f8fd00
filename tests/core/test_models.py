"""`jc.models.from_flax` for linen and nnx modules, against a plain optax loop
written directly over the module's `apply`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxclient as jc


class Mlp(nn.Module):
  """A small MLP with batch norm (non-trainable stats) and dropout."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(8)(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.relu(x)
    x = nn.Dropout(0.5, deterministic=not train)(x)
    return nn.Dense(3)(x)


def digits_like(n, seed):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, 4)).astype(np.float32),
          rng.integers(0, 3, size=(n,)).astype(np.int32))


def test_linen_model_trains_like_a_plain_optax_loop():
  # Full batches only: BatchNorm's training statistics would see padded rows
  # of a short batch (see the `from_flax` docstring).
  x, y = digits_like(10, 0)
  module = Mlp()
  model = jc.models.from_flax(
      module, x[:2], jc.losses.sparse_categorical_crossentropy,
      metrics={'accuracy': jc.metrics.sparse_categorical_accuracy()},
      rng=jax.random.PRNGKey(1), sample_y=y[:2], train_kwarg='train')
  assert set(model.initial_weights.non_trainable) == {'batch_stats'}
  assert model.input_spec['x'].shape == (4,)
  assert model.input_spec['y'] == jax.ShapeDtypeStruct((), jnp.int32)

  process = jc.build_model_delta_client_work(
      model, optax.sgd(0.1), jc.ClientWeighting.NUM_EXAMPLES)
  key = jax.random.PRNGKey(5)
  out = process.next(process.initialize(), model.initial_weights,
                     jc.data.pack([{'x': x, 'y': y}], batch_size=5), rng=key)

  # The reference: the same steps written with module.apply and optax (one
  # jitted step, not hundreds of op-by-op compilations).
  variables = module.init(jax.random.PRNGKey(1), x[:2], train=False)
  params, stats = variables['params'], variables['batch_stats']
  client_key = jax.random.fold_in(key, 0)
  optimizer = optax.sgd(0.1)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, xb, yb, dropout_key):
    def loss_fn(p):
      logits, _ = module.apply(
          {'params': p, 'batch_stats': stats}, xb, train=True,
          rngs={'dropout': dropout_key}, mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                             yb).mean()
    updates, opt_state = optimizer.update(jax.grad(loss_fn)(params),
                                          opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for b, start in enumerate(range(0, 10, 5)):
    params, opt_state = step(params, opt_state, x[start:start + 5],
                             y[start:start + 5], jax.random.fold_in(client_key,
                                                                    b))
  expected = jax.tree.map(np.subtract, variables['params'], params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-5,
                                                       atol=1e-6),
               jax.device_get(out.result.update), expected)
  assert 0.0 <= float(out.measurements['train']['accuracy']) <= 1.0


def test_linen_predict_in_eval_mode_is_module_apply():
  x, _ = digits_like(5, 1)
  module = Mlp()
  model = jc.models.from_flax(module, x[:2], jc.losses.mean_squared_error,
                              train_kwarg='train')
  variables = module.init(jax.random.PRNGKey(0), x[:2], train=False)
  np.testing.assert_array_equal(
      model.predict_on_batch(model.initial_weights, x, False),
      module.apply(variables, x, train=False))


def test_from_flax_rejects_something_else():
  with pytest.raises(TypeError, match='from_flax: module: expected a '
                     'flax.linen.Module'):
    jc.models.from_flax(lambda x: x, np.ones((1, 2)),
                        jc.losses.mean_squared_error)


def test_nnx_model_trains_like_a_plain_optax_loop():
  nnx = jc.models._optional_nnx()  # pylint: disable=protected-access
  if nnx is None:
    pytest.skip('this flax has no nnx with to_pure_dict/reseed (flax < 0.10)')
  x, y = digits_like(6, 2)
  module = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
                          nnx.Linear(8, 3, rngs=nnx.Rngs(1)))
  model = jc.models.from_flax(module, x[:2],
                              jc.losses.sparse_categorical_crossentropy,
                              sample_y=y[:2])
  process = jc.build_model_delta_client_work(
      model, optax.sgd(0.1), jc.ClientWeighting.NUM_EXAMPLES)
  out = process.next(process.initialize(), model.initial_weights,
                     jc.data.pack([{'x': x, 'y': y}], batch_size=3))

  graphdef, params = nnx.split(module, nnx.Param)
  pure = nnx.to_pure_dict(params)
  initial = pure

  @jax.jit
  def step(pure, xb, yb):
    def loss_fn(p):
      state = nnx.clone(params)
      nnx.replace_by_pure_dict(state, p)
      logits = nnx.merge(graphdef, state)(xb)
      return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                             yb).mean()
    grads = jax.grad(loss_fn)(pure)
    return jax.tree.map(lambda w, g: w - 0.1 * g, pure, grads)

  for start in (0, 3):
    pure = step(pure, x[start:start + 3], y[start:start + 3])
  expected = jax.tree.map(np.subtract, initial, pure)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-5,
                                                       atol=1e-6),
               jax.device_get(out.result.update), expected)
