"""`backend='jax'`: the whole client update as one `tff.jax.computation`.

The client update is jaxclient's own `ClientWorkProcess.client_update` over
padded tensors (`jc.data.pack`'s layout, one client: `x [B, N, ...]`,
`y [B, N, ...]`, `mask [B, N]`), traced by TFF into an XLA computation.
`ClientWorkProcess` insists on `tff.SequenceType` client data, so `next`
takes TFF's data type and first maps a small `tff.tensorflow.computation`
that pads each client's batches to `padded_shape = (B, N)` (every batch kept
whole; a batch larger than N fails, batches beyond B are dropped). All type
signatures therefore equal TFF's own. TFF 0.87's C++ runtime cannot execute
XLA computations ("Found computation of type 12"); only a runtime with an
XLA executor can run `next`.

Optimizers: an optax transformation, or a TFF optimizer translated to its
`jaxclient.optimizers` twin (`optimizer_adapters.as_optax`). The Keras
fallback needs TF variables and has no JAX form.
"""

from __future__ import annotations

import collections

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

__all__ = ['build', 'build_client_update', 'build_padding', 'padded_data_type']


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
    return (
      tff.learning.templates.ClientResult(
        update=converted.weights.trainable.flatten(result.update),
        update_weight=result.update_weight,
      ),
      collections.OrderedDict(
        (name, conversion.tff_form(metric_states[name]))
        for name in converted.metrics
      ),
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
  initial_hparams = collections.OrderedDict(
    (name, np.asarray(value)) for name, value in core.initialize().items()
  )

  def client_update_at_clients(state_type):
    client_update = build_client_update(
      core, parts.converted, state_type, padded_type
    )
    return lambda hparams, weights, data: tff.federated_map(
      client_update, (hparams, weights, tff.federated_map(padding, data))
    )

  return tff_process.build_process(
    initial_hparams, client_update_at_clients, parts
  )
