"""`backend='jax'`: the whole client update as one `tff.jax.computation`.

The client update is jaxclient's own `ClientWorkProcess.client_update` over
padded tensors (`jc.data.pack`'s layout, one client: `x [B, N, ...]`,
`y [B, N, ...]`, `mask [B, N]`), traced by TFF into an XLA computation.
`ClientWorkProcess` insists on `tff.SequenceType` client data, so `next`
takes TFF's data type and first maps a small `tff.tensorflow.computation`
that pads each client's batches to `padded_shape = (B, N)` (every batch kept
whole; a batch larger than N fails, batches beyond B are dropped). All type
signatures therefore equal TFF's own. TFF 0.87's C++ runtime cannot execute
XLA computations ("Found computation of type 12"); `next` runs in
`jaxclient_tff.execution_context()` (`jaxclient_tff.in_process`), where
both computations have a cohort program (`in_process.cohort_programs`): the
padding runs in numpy on the batches the runtime holds, and the client
update runs for the whole cohort as one call of jaxclient's vmapped cohort
training, the program `jc.build_model_delta_client_work(...).next` runs.

Optimizers: an optax transformation, or a TFF optimizer translated to its
`jaxclient.optimizers` twin (`optimizer_adapters.as_optax`). The Keras
fallback needs TF variables and has no JAX form.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import jaxclient as jc
from jaxclient_tff import (
  conversion,
  converted_model,
  optimizer_adapters,
  tff_process,
)
from jaxclient_tff.in_process import cohort_programs
from jaxclient_tff.in_process import values as in_process_values

__all__ = [
  'build',
  'build_client_update',
  'build_cohort_update',
  'build_host_padding',
  'build_padding',
  'padded_data_type',
]


def padded_data_type(
  model: jc.FunctionalModel, padded_shape
) -> tff.StructWithPythonType:
  """`<x=[B,N,...], y=[B,N,...], mask=bool[B,N]>` for one client."""
  if (
    not isinstance(padded_shape, tuple)
    or len(padded_shape) != 2
    or not all(isinstance(n, int) and n > 0 for n in padded_shape)
  ):
    raise ValueError(
      "padded_shape: backend='jax' needs (num_batches, batch_size), two "
      f'positive ints, found {padded_shape!r}.'
    )
  return tff.StructWithPythonType(
    collections.OrderedDict(
      x=tff.TensorType(
        np.dtype(model.input_spec['x'].dtype),
        padded_shape + tuple(model.input_spec['x'].shape),
      ),
      y=tff.TensorType(
        np.dtype(model.input_spec['y'].dtype),
        padded_shape + tuple(model.input_spec['y'].shape),
      ),
      mask=tff.TensorType(np.bool_, padded_shape),
    ),
    collections.OrderedDict,
  )


def _tff_outputs(converted, result, metric_states) -> tuple:
  """`(update leaves, update_weight, metric states)` in TFF's layout (the
  client update's result, flattened; also for a cohort's stacked result)."""
  return (
    converted.weights.trainable.flatten(result.update),
    result.update_weight,
    [conversion.tff_form(metric_states[name]) for name in converted.metrics],
  )


def build_client_update(
  core: jc.ClientWorkProcess,
  converted: converted_model.ConvertedModel,
  state_type,
  data_type,
):
  """The `tff.jax.computation` training one client: `(hparams, weights,
  padded data) -> (ClientResult, unfinalized metrics)`."""
  weights_type = converted.weights.tff_type()
  hparam_names = [name for name, _ in tff.structure.to_elements(state_type)]

  @tff.jax.computation(state_type, weights_type, data_type)
  def client_update(hparams, weights, data):
    hparams = collections.OrderedDict(
      (name, hparams[name]) for name in hparam_names
    )
    result, metric_states = core.client_update(
      hparams,
      converted.weights.from_tff(weights),
      {key: data[key] for key in ('x', 'y', 'mask')},
    )
    update, update_weight, metrics = _tff_outputs(
      converted, result, metric_states
    )
    return (
      tff.learning.templates.ClientResult(
        update=update, update_weight=update_weight
      ),
      collections.OrderedDict(zip(converted.metrics, metrics, strict=True)),
    )

  return client_update


def _pad_batch(batch, batch_size: int):
  """One batch padded to `batch_size` rows, with its `mask`."""
  n = tf.shape(batch['x'])[0]
  with tf.control_dependencies(
    [
      tf.debugging.assert_less_equal(
        n,
        batch_size,
        message='client data: a batch is larger than padded_shape[1]',
      )
    ]
  ):
    padding = batch_size - n
  return collections.OrderedDict(
    x=tf.pad(
      batch['x'], [[0, padding]] + [[0, 0]] * (batch['x'].shape.rank - 1)
    ),
    y=tf.pad(
      batch['y'], [[0, padding]] + [[0, 0]] * (batch['y'].shape.rank - 1)
    ),
    mask=tf.sequence_mask(n, batch_size),
  )


def build_padding(model: jc.FunctionalModel, padded_shape, data_type):
  """The `tff.tensorflow.computation` padding a client's `tff.SequenceType`
  of batches to `padded_shape` (each batch kept whole, as one step)."""
  num_batches, batch_size = padded_shape
  padded_type = padded_data_type(model, padded_shape)

  @tff.tensorflow.computation(data_type)
  def padding(dataset):
    empty = collections.OrderedDict(
      (key, tf.zeros(t.shape[1:], t.dtype))
      for key, t in tff.structure.to_elements(padded_type)
    )
    batches = dataset.map(lambda batch: _pad_batch(batch, batch_size))
    batches = batches.concatenate(
      tf.data.Dataset.from_tensors(empty).repeat(num_batches)
    )
    padded = batches.take(num_batches).batch(num_batches).get_single_element()
    return collections.OrderedDict(
      (key, tf.ensure_shape(padded[key], t.shape))
      for key, t in tff.structure.to_elements(padded_type)
    )

  return padding


def _client_axis(leaf, axis, num_clients: int):
  """`leaf` with a leading client axis (a shared leaf is broadcast)."""
  if axis == 0:
    return leaf
  return np.broadcast_to(leaf, (num_clients, *np.shape(leaf)))


def build_cohort_update(core: jc.ClientWorkProcess, converted, client_update):
  """The cohort program of `client_update` (`in_process.cohort_programs`):
  the whole cohort's update as ONE call of jaxclient's cohort training
  (`jc.cohort.train` with the strategy `core.plan` picks: what `core.next`
  runs, before its metric aggregation), on the clients' padded data
  stacked. Declines (None) when the clients' hparams differ."""
  hparam_names = [
    name
    for name, _ in tff.structure.to_elements(
      client_update.type_signature.parameter[0]
    )
  ]
  result_type = client_update.type_signature.result

  @functools.partial(jax.jit, static_argnames='strategy')
  def train(hparams, weights, data, strategy):
    client_ids = jnp.arange(data['mask'].shape[0])
    result, metric_states = jc.cohort.train(
      core.training, strategy, hparams, weights, data, client_ids
    )
    return _tff_outputs(converted, result, metric_states)

  def cohort_update(members):
    num_clients = len(members)
    (hparams, weights, data), axes = in_process_values.stack_members(members)
    if num_clients > 1 and 0 in in_process_values.flatten(axes[0]):
      return None
    if 0 in in_process_values.flatten(axes[1]):
      weights = in_process_values.tree_map(
        lambda w, axis: _client_axis(w, axis, num_clients), weights, axes[1]
      )
    data = {
      key: _client_axis(data[key], axes[2][key], num_clients)
      for key in ('x', 'y', 'mask')
    }
    hparams = collections.OrderedDict(
      (name, np.asarray(hparams[name])) for name in hparam_names
    )
    outputs = train(
      hparams,
      converted.weights.from_tff(weights),
      data,
      strategy=core.plan(data).strategy,
    )
    return in_process_values.unstack_members(
      result_type, jax.tree_util.tree_leaves(outputs), num_clients
    )

  return cohort_update


# Batches read per step of `_dataset_batches` (a few steps per cohort).
_BATCHES_PER_READ = 256


def _check_batch(client: int, batch: int, num_x: int, num_y: int, size: int):
  if num_x > size or num_y != num_x:
    raise ValueError(
      f'client data: client {client}, batch {batch} has {num_x} examples '
      f'(x) and {num_y} (y); padded_shape allows batches of at most {size}, '
      'with as many y as x.'
    )


def _at_width(client, batch, width: int):
  """`(client, num x, num y, x, y)` of a batch, x and y cut or zero-padded
  to `width` rows (so that every batch of every client stacks)."""

  def fixed(t):
    t = t[:width]
    padding = [[0, width - tf.shape(t)[0]]] + [[0, 0]] * (t.shape.rank - 1)
    return tf.pad(t, padding)

  return (
    client,
    tf.shape(batch['x'])[0],
    tf.shape(batch['y'])[0],
    fixed(batch['x']),
    fixed(batch['y']),
  )


def _concatenated(datasets: list) -> tf.data.Dataset:
  """The datasets in order, concatenated as a balanced tree (depth log n)."""
  while len(datasets) > 1:
    pairs = [
      a.concatenate(b)
      for a, b in zip(datasets[::2], datasets[1::2], strict=False)
    ]
    datasets = pairs + datasets[len(pairs) * 2 :]
  return datasets[0]


def _dataset_batches(datasets: dict, batch_size: int) -> dict:
  """`{client: [batch as numpy]}` of the clients' `tf.data` datasets, read
  in ONE TF call over all of them: tagged with the client (`zip`, no
  tracing), concatenated, cut or padded to `batch_size` rows by one `map`
  (iterating each client's dataset from Python costs about 2 ms a batch,
  and a `map` per client traces a function per client)."""
  tagged = [
    tf.data.Dataset.zip((tf.data.Dataset.from_tensors(client).repeat(), d))
    for client, d in datasets.items()
  ]
  combined = _concatenated(tagged).map(
    functools.partial(_at_width, width=batch_size)
  )
  parts = combined.batch(_BATCHES_PER_READ).as_numpy_iterator()
  batches: dict = {client: [] for client in datasets}
  for clients, num_x, num_y, x, y in parts:
    for k, client in enumerate(clients.tolist()):
      _check_batch(client, len(batches[client]), num_x[k], num_y[k], batch_size)
      batches[client].append({'x': x[k, : num_x[k]], 'y': y[k, : num_y[k]]})
  return batches


def _padded_client(
  index: int, batches: list, padded_type, padded_shape
) -> in_process_values.Struct:
  """Client `index`'s batches (numpy) padded to `padded_shape` (each batch
  kept whole; batches beyond `num_batches` dropped, as the
  `tff.tensorflow` padding does)."""
  num_batches, batch_size = padded_shape
  types = dict(tff.structure.to_elements(padded_type))
  padded = {key: np.zeros(t.shape, t.dtype) for key, t in types.items()}
  for b, batch in enumerate(batches[:num_batches]):
    size = len(batch['x'])
    _check_batch(index, b, size, len(batch['y']), batch_size)
    padded['x'][b, :size] = batch['x']
    padded['y'][b, :size] = batch['y']
    padded['mask'][b, :size] = True
  return in_process_values.Struct(
    [(key, padded[key]) for key in ('x', 'y', 'mask')]
  )


def build_host_padding(model: jc.FunctionalModel, padded_shape):
  """The cohort program of the padding computation: every client's batches
  padded in numpy; the clients' `tf.data` datasets are read in one TF call,
  lists of batches taken as they are (no TF graph run per client)."""
  padded_type = padded_data_type(model, padded_shape)

  def host_padding(members):
    datasets = {
      i: m for i, m in enumerate(members) if isinstance(m, tf.data.Dataset)
    }
    batches = _dataset_batches(datasets, padded_shape[1]) if datasets else {}
    return [
      _padded_client(i, batches.get(i, m), padded_type, padded_shape)
      for i, m in enumerate(members)
    ]

  return host_padding


def build(
  parts: tff_process.ClientWorkParts,
) -> tff.learning.templates.ClientWorkProcess:
  """The `ClientWorkProcess` of `backend='jax'` (see the module docstring).

  Raises:
    ValueError: `parts.padded_shape` is not two positive ints.
    TypeError: the optimizer is neither optax nor a translatable TFF one.
  """
  model = parts.model
  padded_type = padded_data_type(model, parts.padded_shape)
  core = jc.build_model_delta_client_work(
    model, optimizer_adapters.as_optax(parts.optimizer), parts.client_weighting
  )
  padding = build_padding(model, parts.padded_shape, parts.data_type)
  cohort_programs.register(
    padding, build_host_padding(model, parts.padded_shape)
  )
  initial_hparams = collections.OrderedDict(
    (name, np.asarray(value)) for name, value in core.initialize().items()
  )

  def client_update_at_clients(state_type):
    client_update = build_client_update(
      core, parts.converted, state_type, padded_type
    )
    cohort_programs.register(
      client_update, build_cohort_update(core, parts.converted, client_update)
    )
    return lambda hparams, weights, data: tff.federated_map(
      client_update, (hparams, weights, tff.federated_map(padding, data))
    )

  return tff_process.build_process(
    initial_hparams, client_update_at_clients, parts
  )
