"""`backend='jax'`: the whole client update as one `tff.jax.computation`.

The client update is jaxclient's own `ClientWorkProcess.client_update` over
padded tensors (`jc.data.pack`'s layout, one client: `x [B, N, ...]`,
`y [B, N, ...]`, `mask [B, N]`), traced by TFF into an XLA computation.
`ClientWorkProcess` insists on `tff.SequenceType` client data, so `next`
takes TFF's data type and first maps a small `tff.tensorflow.computation`
that pads each client's batches to `padded_shape = (B, N)` (every batch kept
whole; a batch larger than N fails, batches beyond B are dropped). All type
signatures therefore equal TFF's own. TFF 0.87's C++ runtime cannot execute
XLA computations ("Found computation of type 12"), so `run_xla_payload`
compiles the serialized XLA with jaxlib and runs it.

Optimizers: an optax transformation, or a TFF optimizer translated to its
`jaxclient.optimizers` twin (same rule, same hparams). The Keras fallback
needs TF variables and has no JAX form.
"""

from __future__ import annotations

import collections

import jax
import numpy as np
import optax
import tensorflow as tf
import tensorflow_federated as tff
from jax.lib import xla_client
from tensorflow_federated.python.core.environments.xla_backend import (
    xla_serialization)

import jaxclient as jc
from jaxclient_tff import jax2tf_step
from jaxclient_tff import client_work_process

# TFF optimizer class -> (jaxclient builder, extra non-hparam arguments read
# from the TFF optimizer's attributes).
_TFF_TO_JAXCLIENT = {
    '_SGD': (jc.optimizers.build_sgdm, {}),
    '_Adam': (jc.optimizers.build_adam, {}),
    '_AdamW': (jc.optimizers.build_adamw, {}),
    '_RmsProp': (jc.optimizers.build_rmsprop, {}),
    '_Adagrad': (jc.optimizers.build_adagrad,
                 {'initial_preconditioner_value': '_initial_precond'}),
    '_Yogi': (jc.optimizers.build_yogi, {
        'initial_preconditioner_value': '_initial_preconditioner_value'}),
}


def as_optax(optimizer) -> optax.GradientTransformation:
  """`optimizer` as an optax transformation with TFF's hparam names."""
  if isinstance(optimizer, optax.GradientTransformation):
    return optimizer
  if isinstance(optimizer, tff.learning.optimizers.Optimizer):
    name = type(optimizer).__name__
    if name not in _TFF_TO_JAXCLIENT:
      raise TypeError(
          f"optimizer: backend='jax' translates TFF's "
          f'{sorted(_TFF_TO_JAXCLIENT)} optimizers to jaxclient.optimizers; '
          f'found {name}. Pass an optax.GradientTransformation instead.')
    builder, extras = _TFF_TO_JAXCLIENT[name]
    hparams = optimizer.get_hparams(optimizer.initialize(
        jax.ShapeDtypeStruct((), np.float32)))
    return builder(**{k: float(v) for k, v in hparams.items()},
                   **{k: getattr(optimizer, attr) for k, attr in
                      extras.items()})
  raise TypeError(
      "optimizer: backend='jax' takes an optax.GradientTransformation or a "
      'tff.learning.optimizers.Optimizer (the Keras fallback needs TF '
      f'variables), found {type(optimizer).__name__}.')


def padded_data_type(model: jc.FunctionalModel, padded_shape
                     ) -> tff.StructWithPythonType:
  """`<x=[B,N,...], y=[B,N,...], mask=bool[B,N]>` for one client."""
  if (not isinstance(padded_shape, tuple) or len(padded_shape) != 2 or
      not all(isinstance(n, int) and n > 0 for n in padded_shape)):
    raise ValueError(
        "padded_shape: backend='jax' needs (num_batches, batch_size), two "
        f'positive ints, found {padded_shape!r}.')
  return tff.StructWithPythonType(collections.OrderedDict(
      x=tff.TensorType(np.dtype(model.input_spec['x'].dtype),
                       padded_shape + tuple(model.input_spec['x'].shape)),
      y=tff.TensorType(np.dtype(model.input_spec['y'].dtype),
                       padded_shape + tuple(model.input_spec['y'].shape)),
      mask=tff.TensorType(np.bool_, padded_shape)), collections.OrderedDict)


def build_client_update(core: jc.ClientWorkProcess,
                        converted: jax2tf_step.ConvertedModel, state_type,
                        data_type):
  """The `tff.jax.computation` training one client: `(hparams, weights,
  padded data) -> (ClientResult, unfinalized metrics)`."""
  weights_type = converted.weights.tff_type()
  hparam_names = [name for name, _ in tff.structure.to_elements(state_type)]

  @tff.jax.computation(state_type, weights_type, data_type)
  def client_update(hparams, weights, data):
    hparams = collections.OrderedDict(
        (name, hparams[name]) for name in hparam_names)
    result, metric_states = core.client_update(
        hparams, converted.weights.from_tff(weights),
        {key: data[key] for key in ('x', 'y', 'mask')})
    return (tff.learning.templates.ClientResult(
        update=converted.weights.trainable.flatten(result.update),
        update_weight=result.update_weight),
            collections.OrderedDict(
                (name, jax2tf_step.tff_form(metric_states[name]))
                for name in converted.metrics))

  return client_update


def build_padding(model: jc.FunctionalModel, padded_shape, data_type):
  """The `tff.tensorflow.computation` padding a client's `tff.SequenceType`
  of batches to `padded_shape` (each batch kept whole, as one step)."""
  num_batches, batch_size = padded_shape
  padded_type = padded_data_type(model, padded_shape)

  def pad(batch):
    n = tf.shape(batch['x'])[0]
    with tf.control_dependencies([tf.debugging.assert_less_equal(
        n, batch_size, message='client data: a batch is larger than '
        'padded_shape[1]')]):
      padding = batch_size - n
    return collections.OrderedDict(
        x=tf.pad(batch['x'], [[0, padding]] + [[0, 0]] * (
            batch['x'].shape.rank - 1)),
        y=tf.pad(batch['y'], [[0, padding]] + [[0, 0]] * (
            batch['y'].shape.rank - 1)),
        mask=tf.sequence_mask(n, batch_size))

  @tff.tensorflow.computation(data_type)
  def padding(dataset):
    empty = collections.OrderedDict(
        (key, tf.zeros(t.shape[1:], t.dtype))
        for key, t in tff.structure.to_elements(padded_type))
    batches = dataset.map(pad).concatenate(
        tf.data.Dataset.from_tensors(empty).repeat(num_batches))
    padded = batches.take(num_batches).batch(
        num_batches).get_single_element()
    return collections.OrderedDict(
        (key, tf.ensure_shape(padded[key], t.shape))
        for key, t in tff.structure.to_elements(padded_type))

  return padding


def build(model, optimizer, client_weighting, converted,
          metrics_aggregation_fn, padded_shape, data_type):
  """The `ClientWorkProcess` of `backend='jax'` (see the module docstring)."""
  padded_type = padded_data_type(model, padded_shape)
  core = jc.build_model_delta_client_work(model, as_optax(optimizer),
                                          client_weighting)
  padding = build_padding(model, padded_shape, data_type)
  initial_hparams = collections.OrderedDict(
      (name, np.asarray(value)) for name, value in core.initialize().items())

  def client_update_at_clients(state_type):
    client_update = build_client_update(core, converted, state_type,
                                        padded_type)
    return lambda hparams, weights, data: tff.federated_map(
        client_update, (hparams, weights, tff.federated_map(padding, data)))

  return client_work_process.build(
      initial_hparams, client_update_at_clients,
      converted.weights.tff_type(), data_type, metrics_aggregation_fn)


def run_xla_payload(computation, flat_args) -> list[np.ndarray]:
  """Compiles the XLA inside a `tff.jax.computation` with jaxlib and runs it.

  The parameter and result bindings that TFF serialized with the XLA map
  TFF's leaf order to XLA's, as TFF's own XLA executor did.

  Args:
    computation: a `tff.jax.computation`.
    flat_args: the leaves of its argument, in the order of its parameter type
      (e.g. `[*hparams, *trainable, *non_trainable, x, y, mask]`).

  Returns:
    The leaves of the result as numpy arrays, in the order of the result
    type.
  """
  proto = tff.framework.ConcreteComputation.get_proto(computation)
  if proto.WhichOneof('computation') != 'xla':
    raise TypeError('computation: expected a tff.jax.computation (XLA), '
                    f"found a {proto.WhichOneof('computation')} computation.")
  xla_computation = xla_serialization.unpack_xla_computation(
      proto.xla.hlo_module)
  backend = jax.lib.xla_bridge.get_backend('cpu')
  executable = backend.compile(
      xla_client._xla.mlir.xla_computation_to_mlir_module(xla_computation))  # pylint: disable=protected-access
  parameter_positions = _binding_indices(proto.xla.parameter)
  if len(flat_args) != len(parameter_positions):
    raise ValueError(f'flat_args: expected {len(parameter_positions)} leaves '
                     f'for {computation.type_signature.parameter}, found '
                     f'{len(flat_args)}.')
  ordered = [None] * len(flat_args)
  for value, position in zip(flat_args, parameter_positions):
    ordered[position] = np.asarray(value)
  device = backend.local_devices()[0]
  outputs = executable.execute([jax.device_put(a, device) for a in ordered])
  return [np.asarray(outputs[i]) for i in _binding_indices(proto.xla.result)]


def _binding_indices(binding) -> list[int]:
  """XLA parameter index of each TFF leaf, in TFF order."""
  kind = binding.WhichOneof('binding')
  if kind == 'tensor':
    return [binding.tensor.index]
  if kind == 'struct':
    return [i for element in binding.struct.element
            for i in _binding_indices(element)]
  return []
