"""`tff.tensorflow` computations, run in this process from their GraphDef.

A computation's proto holds a serialized GraphDef, its parameter and result
bindings (tensor names, datasets as variant tensors), an `initialize_op`
and a string `session_token_tensor_name` placeholder. `TensorFlowRunner`
imports the GraphDef ONCE into a `tf.compat.v1.wrap_function` and prunes it
to a concrete function `(parameter leaves..., session token) -> result
leaves`; every later call is one function call. Before the import the
GraphDef is made safe to share one process with every other computation:

* every resource `shared_name` gets a prefix unique to the computation (two
  computations' variables never alias);
* every library function gets a name unique to the computation: TF's eager
  function library is process-wide, and two GraphDefs may define the same
  name with different bodies (TFF's grappler-disabling rewrite keeps names
  and changes bodies), which TF rejects ("duplicate function");
* every node outside the `initialize_op`'s fan-in runs after it, so the
  computation's variables are initialised on every call before any read, as
  TFF's C++ runtime does by running the init op first.

Datasets go in as `tf.data.experimental.to_variant` and come out with
`from_variant`. The old Python `eager_tf_executor` of TFF 0.19-0.52 did the
same; this is this project's own code.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from jaxclient_tff.in_process import values

__all__ = ['TensorFlowRunner', 'computation_key']


def computation_key(proto) -> str:
  """The identity of a compiled computation: sha256 of its `tensorflow` or
  `xla` message (unchanged by TFF's `to_call_dominant`)."""
  kind = proto.WhichOneof('computation')
  message = getattr(proto, kind)
  digest = hashlib.sha256(message.SerializeToString(deterministic=True))
  return f'{kind}:{digest.hexdigest()}'


def _node_name(tensor_or_op_name: str) -> str:
  return tensor_or_op_name.lstrip('^').split(':')[0]


def _all_nodes(graph_def):
  return itertools.chain(
    graph_def.node, *[f.node_def for f in graph_def.library.function]
  )


def _rename_library_functions(graph_def, suffix: str) -> None:
  """Renames every library function, and every reference to it (op types,
  `func` and `list.func` attrs, gradients), to `name_suffix`."""
  names = {
    f.signature.name: f'{f.signature.name}_{suffix}'
    for f in graph_def.library.function
  }

  def rename_in(attr) -> None:
    if attr.HasField('func') and attr.func.name in names:
      attr.func.name = names[attr.func.name]
    for func in attr.list.func:
      if func.name in names:
        func.name = names[func.name]

  for function in graph_def.library.function:
    function.signature.name = names[function.signature.name]
    for attr in function.attr.values():
      rename_in(attr)
  for node in _all_nodes(graph_def):
    node.op = names.get(node.op, node.op)
    for attr in node.attr.values():
      rename_in(attr)
  for gradient in graph_def.library.gradient:
    gradient.function_name = names.get(
      gradient.function_name, gradient.function_name
    )
    gradient.gradient_func = names.get(
      gradient.gradient_func, gradient.gradient_func
    )


def _run_after_init(graph_def, init_op: str) -> None:
  """Adds `^init_op` to every node (but placeholders) outside its fan-in."""
  init = _node_name(init_op)
  inputs = {n.name: [_node_name(i) for i in n.input] for n in graph_def.node}
  fan_in, stack = set(), [init]
  while stack:
    name = stack.pop()
    if name not in fan_in:
      fan_in.add(name)
      stack.extend(inputs.get(name, ()))
  for node in graph_def.node:
    if node.name not in fan_in and node.op != 'Placeholder':
      node.input.append('^' + init)


def _prepared_graph_def(tf_proto, unique: str):
  """The computation's GraphDef, made safe to import (module docstring)."""
  graph_def = tf.compat.v1.GraphDef()
  tf_proto.graph_def.Unpack(graph_def)
  for node in _all_nodes(graph_def):
    if 'shared_name' in node.attr and node.attr['shared_name'].s:
      shared_name = node.attr['shared_name']
      shared_name.s = f'{unique}/'.encode() + shared_name.s
  _rename_library_functions(graph_def, unique)
  if tf_proto.initialize_op:
    _run_after_init(graph_def, tf_proto.initialize_op)
  return graph_def


def _binding_leaves(binding) -> list[tuple[str, str]]:
  """`(kind, tensor name)` of each leaf of a TensorFlow binding."""
  kind = binding.WhichOneof('binding')
  if kind == 'struct':
    return [
      leaf
      for element in binding.struct.element
      for leaf in _binding_leaves(element)
    ]
  if kind == 'tensor':
    return [('tensor', binding.tensor.tensor_name)]
  if kind == 'sequence':
    which = binding.sequence.WhichOneof('binding')
    if which != 'variant_tensor_name':
      raise NotImplementedError(
        'jaxclient_tff in-process runtime: a TensorFlow sequence binding '
        f'by {which!r} (only variant_tensor_name is supported).'
      )
    return [('sequence', binding.sequence.variant_tensor_name)]
  return []


class TensorFlowRunner:
  """Runs one `tff.tensorflow` computation: imported once, then called.

  Attributes:
    type_signature: the computation's `tff.FunctionType`.
    key: `computation_key` of its proto.
  """

  _count = itertools.count()

  def __init__(self, proto, type_signature):
    self.type_signature = type_signature
    self.key = computation_key(proto)
    tf_proto = proto.tensorflow
    graph_def = _prepared_graph_def(
      tf_proto, f'jaxclient_tff_{next(self._count)}'
    )
    self._params = (
      _binding_leaves(tf_proto.parameter)
      if tf_proto.HasField('parameter')
      else []
    )
    self._param_types = (
      values.leaf_types(type_signature.parameter) if self._params else []
    )
    results = _binding_leaves(tf_proto.result)
    self._result_types = values.leaf_types(type_signature.result)
    self._fn = _pruned_function(
      graph_def, self._params, results, tf_proto.session_token_tensor_name
    )
    self._token = (
      [tf.constant('')] if tf_proto.session_token_tensor_name else []
    )

  def __call__(self, arg=None):
    leaves = values.flatten(arg) if self._params else []
    inputs = [
      tf.data.experimental.to_variant(values.as_dataset(leaf, t.element))
      if kind == 'sequence'
      else tf.convert_to_tensor(np.asarray(leaf, t.dtype))
      for (kind, _), leaf, t in zip(
        self._params, leaves, self._param_types, strict=True
      )
    ]
    outputs = self._fn(*inputs, *self._token)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    results = [
      tf.data.experimental.from_variant(out, values.tensor_specs(t.element))
      if isinstance(t, tff.SequenceType)
      else out.numpy()
      for out, t in zip(outputs, self._result_types, strict=True)
    ]
    return values.pack(self.type_signature.result, iter(results))


def _pruned_function(graph_def, params, results, token_name: str):
  """`graph_def` imported once and pruned to `(params..., token) ->
  results` (a no-op when there are no results)."""
  if not results:
    return lambda *inputs: []

  def import_graph():
    tf.graph_util.import_graph_def(graph_def, name='')

  wrapped = tf.compat.v1.wrap_function(import_graph, signature=[])
  graph = wrapped.graph
  feeds = [graph.get_tensor_by_name(name) for _, name in params]
  if token_name:
    feeds.append(graph.get_tensor_by_name(token_name))
  fetches = [graph.get_tensor_by_name(name) for _, name in results]
  return wrapped.prune(feeds=feeds, fetches=fetches)
