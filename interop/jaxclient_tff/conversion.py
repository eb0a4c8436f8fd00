"""The boundary between jaxclient pytrees and TFF values and types.

TFF sees a model's weights the way it sees a Keras model's:
`tff.learning.models.ModelWeights(trainable=[...], non_trainable=[...])`, flat
lists of tensors in the order the model CREATED them. For a pytree that order
is mapping insertion order (Flax creates a `Dense` layer's `kernel` before its
`bias`, and layers in call order, exactly as Keras does), not JAX's
sorted-key order. `WeightsLayout` converts between the two.

Counters: jaxclient's metric counters are int32 (JAX computes in 32 bits);
TFF's `num_examples` / `num_batches` are int64. Every int32 leaf of a metric
state is int64 on the TFF side and cast back at the JAX boundary
(`to_tff_dtype`); a metric state of several leaves is a list on the TFF side
(`tff_form`).

Also here: the TFF type of a batch of client data (`element_type`).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import jaxclient as jc

__all__ = [
  'PytreeLayout',
  'WeightsLayout',
  'element_type',
  'tff_form',
  'to_tff_dtype',
]

PyTree = Any


def _creation_order(tree: PyTree) -> list[int]:
  """Position k holds the JAX-order index of the k-th leaf in creation order.

  Mappings are walked in insertion order (JAX sorts their keys); every other
  node in JAX's order.
  """
  with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
  jax_index = {path: i for i, (path, _) in enumerate(with_paths)}
  order = []

  def walk(node, prefix):
    if isinstance(node, Mapping):
      for key in node:
        walk(node[key], prefix + (jax.tree_util.DictKey(key),))
      return
    children, _ = jax.tree_util.tree_flatten_with_path(
      node, is_leaf=lambda n: n is not node and isinstance(n, Mapping)
    )
    if [path for path, _ in children] == [()]:
      order.append(jax_index[prefix])
      return
    for path, child in children:
      walk(child, prefix + path)

  walk(tree, ())
  return order


class PytreeLayout:
  """Flattens one pytree structure to a list in creation order and back."""

  def __init__(self, example: PyTree):
    self.treedef = jax.tree_util.tree_structure(example)
    self.order = _creation_order(example)
    leaves = jax.tree_util.tree_leaves(example)
    self.specs = [
      jax.ShapeDtypeStruct(
        np.shape(leaves[i]), jax.numpy.result_type(leaves[i])
      )
      for i in self.order
    ]

  def flatten(self, tree: PyTree) -> list:
    leaves = jax.tree_util.tree_leaves(tree)
    return [leaves[i] for i in self.order]

  def unflatten(self, flat: Sequence) -> PyTree:
    leaves = [None] * len(self.order)
    for position, index in enumerate(self.order):
      leaves[index] = flat[position]
    return jax.tree_util.tree_unflatten(self.treedef, leaves)

  def tensor_types(self) -> list[tff.TensorType]:
    return [tff.TensorType(np.dtype(s.dtype), s.shape) for s in self.specs]


class WeightsLayout:
  """A model's `ModelWeights` as TFF's flat, creation-ordered lists."""

  def __init__(self, weights: jc.ModelWeights):
    self.trainable = PytreeLayout(weights.trainable)
    self.non_trainable = PytreeLayout(weights.non_trainable)

  def to_tff(
    self, weights: jc.ModelWeights
  ) -> tff.learning.models.ModelWeights:
    """TFF's `ModelWeights` of numpy arrays for jaxclient `weights`."""
    return tff.learning.models.ModelWeights(
      trainable=[
        np.asarray(a) for a in self.trainable.flatten(weights.trainable)
      ],
      non_trainable=[
        np.asarray(a) for a in self.non_trainable.flatten(weights.non_trainable)
      ],
    )

  def from_tff(self, weights) -> jc.ModelWeights:
    """jaxclient `ModelWeights` for TFF's (lists in creation order)."""
    trainable, non_trainable = weights
    return jc.ModelWeights(
      self.trainable.unflatten(list(trainable)),
      self.non_trainable.unflatten(list(non_trainable)),
    )

  def tff_type(self) -> tff.StructWithPythonType:
    """The weights type, equal to `weights_type_from_model` of a Keras twin."""
    return tff.StructWithPythonType(
      tff.learning.models.ModelWeights(
        trainable=self.trainable.tensor_types(),
        non_trainable=self.non_trainable.tensor_types(),
      ),
      tff.learning.models.ModelWeights,
    )


def element_type(model: jc.FunctionalModel) -> tff.StructWithPythonType:
  """One batch of client data: `<x=dtype[?,...], y=dtype[?,...]>`, as TFF
  derives from a Keras model's `input_spec`."""
  missing = [k for k in ('x', 'y') if k not in model.input_spec]
  if missing:
    raise ValueError(
      f"model.input_spec: expected keys 'x' and 'y' to type the client data"
      f' as a tff.SequenceType; missing {missing}, found '
      f'{list(model.input_spec)}.'
    )
  return tff.types.tensorflow_to_type(
    collections.OrderedDict(
      (
        key,
        tf.TensorSpec(
          (None,) + tuple(model.input_spec[key].shape),
          tf.as_dtype(model.input_spec[key].dtype),
        ),
      )
      for key in ('x', 'y')
    )
  )


def to_tff_dtype(dtype) -> np.dtype:
  """TFF's dtype for a jaxclient metric leaf: int32 counters become int64."""
  return np.dtype(np.int64) if np.dtype(dtype) == np.int32 else np.dtype(dtype)


def tff_form(state: PyTree):
  """A metric state as TFF reports it: one leaf as itself, several as a list
  (Keras reports a Mean as `[total, count]`)."""
  leaves = jax.tree_util.tree_leaves(state)
  return leaves[0] if len(leaves) == 1 else list(leaves)
