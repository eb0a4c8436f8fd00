"""Checkpoints: a pytree as one msgpack file, written atomically.

The format is Flax's msgpack (`flax.serialization.msgpack_serialize`) of a
flat mapping from each leaf's path in the tree (`jax.tree_util.keystr`, e.g.
`"['state'].global_model_weights.trainable['params']['Dense_0']['kernel']"`)
to the leaf as a numpy array; `msgpack_restore` reads it without
jaxclient. A checkpoint is written to a
temporary file in the same directory and renamed over the old one, so a run
killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile

import jax
import numpy as np

from jaxclient.typing import PyTree

__all__ = ['restore', 'save']


def save(path: str | os.PathLike, tree: PyTree) -> None:
  """Writes `tree` (arrays are copied to the host) to `path` atomically."""
  from flax import serialization  # pylint: disable=g-import-not-at-top

  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  payload = serialization.msgpack_serialize(
    {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}
  )
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.checkpoint-')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(payload)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def restore(path: str | os.PathLike, target: PyTree) -> PyTree:
  """Reads the checkpoint at `path` into the structure of `target`.

  Returns:
    A tree of `target`'s structure with numpy leaves from the file.

  Raises:
    ValueError: when the file's leaves do not match `target`'s paths,
      shapes and dtypes, or the file is not a checkpoint.
  """
  from flax import serialization  # pylint: disable=g-import-not-at-top

  with open(path, 'rb') as f:
    payload = f.read()
  try:
    saved = serialization.msgpack_restore(payload)
  except Exception as e:  # msgpack raises several unrelated types.
    raise ValueError(f'{path}: not a checkpoint ({e}).') from e
  leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
  keys = [jax.tree_util.keystr(p) for p, _ in leaves]
  if not isinstance(saved, dict) or set(saved) != set(keys):
    found_keys = set(saved) if isinstance(saved, dict) else set()
    raise ValueError(
      f'{path}: the checkpoint does not match the expected structure; '
      f'missing {sorted(set(keys) - found_keys)}, unexpected '
      f'{sorted(found_keys - set(keys))}.'
    )
  restored = []
  for key, (_, expected) in zip(keys, leaves, strict=True):
    found = np.asarray(saved[key])
    if found.shape != np.shape(expected) or (
      found.dtype != np.asarray(expected).dtype
    ):
      raise ValueError(
        f'{path}: leaf {key} has shape {found.shape} {found.dtype}, '
        f'expected {np.shape(expected)} {np.asarray(expected).dtype}.'
      )
    restored.append(found)
  return jax.tree_util.tree_unflatten(treedef, restored)
