"""Checkpoints: a pytree as one verified msgpack file, written atomically.

The file is Flax's msgpack (`flax.serialization.msgpack_serialize`) of
`{'format': 'jaxclient-checkpoint-1', 'sha256': DIGEST, 'payload': BYTES}`,
where `payload` is itself the msgpack of a flat mapping from each leaf's path
in the tree (`jax.tree_util.keystr`, e.g.
`"['state'].global_model_weights.trainable['params']['Dense_0']['kernel']"`)
to the leaf as a numpy array, and `sha256` is the hex digest of `payload`.
`restore` checks the digest before it reads a single leaf: a flipped byte or
an edited value is an error naming the file, never trained on.

A checkpoint is written to a temporary file `.checkpoint-*` in the same
directory (with the mode the process's umask gives any new file) and
renamed over the old one, so a run killed mid-write leaves the previous
checkpoint intact; `remove_temporaries` deletes what such a kill left.
"""

from __future__ import annotations

import glob
import hashlib
import os
import secrets

import jax
import numpy as np

from jaxclient.typing import PyTree

__all__ = [
  'CheckpointError',
  'FORMAT',
  'TEMPORARY_PREFIX',
  'read_leaves',
  'remove_temporaries',
  'restore',
  'save',
]

FORMAT = 'jaxclient-checkpoint-1'
TEMPORARY_PREFIX = '.checkpoint-'


class CheckpointError(ValueError):
  """A checkpoint is missing, corrupted, or does not match the expected
  tree."""


def _write_new(path: str, data: bytes) -> None:
  """Writes `data` to a file that must not exist yet, durably."""
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  with os.fdopen(fd, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def save(path: str | os.PathLike, tree: PyTree) -> None:
  """Writes `tree` (arrays are copied to the host) to `path` atomically."""
  from flax import serialization  # pylint: disable=g-import-not-at-top

  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  payload = serialization.msgpack_serialize(
    {jax.tree_util.keystr(p): np.asarray(leaf) for p, leaf in leaves}
  )
  data = serialization.msgpack_serialize(
    {
      'format': FORMAT,
      'sha256': hashlib.sha256(payload).hexdigest(),
      'payload': payload,
    }
  )
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, TEMPORARY_PREFIX + secrets.token_hex(8))
  try:
    _write_new(tmp, data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def remove_temporaries(directory: str | os.PathLike) -> list[str]:
  """Deletes the `.checkpoint-*` files that a killed `save` left in
  `directory`; returns their paths. Call it only when no other process is
  writing a checkpoint there."""
  stale = sorted(
    glob.glob(os.path.join(glob.escape(str(directory)), TEMPORARY_PREFIX + '*'))
  )
  for path in stale:
    os.unlink(path)
  return stale


def _verified_payload(path, data: bytes) -> dict:
  from flax import serialization  # pylint: disable=g-import-not-at-top

  try:
    envelope = serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several unrelated types.
    raise CheckpointError(
      f'{path}: not a jaxclient checkpoint, or corrupted ({type(e).__name__}).'
    ) from e
  if not isinstance(envelope, dict) or envelope.get('format') != FORMAT:
    raise CheckpointError(
      f'{path}: not a {FORMAT} file (no verified '
      'payload); refusing to trust it.'
    )
  payload = envelope.get('payload')
  if not isinstance(payload, bytes) or hashlib.sha256(
    payload
  ).hexdigest() != envelope.get('sha256'):
    raise CheckpointError(
      f'{path}: corrupted: the SHA-256 digest of its '
      'payload does not match the one it was saved with.'
    )
  return serialization.msgpack_restore(payload)


def read_leaves(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The verified flat mapping leaf path -> array of the checkpoint at
  `path`, without a target tree (e.g. to compare two checkpoints).

  Raises:
    CheckpointError: when the file is not a checkpoint or its digest does not
      match its contents.
  """
  with open(path, 'rb') as f:
    saved = _verified_payload(path, f.read())
  if not isinstance(saved, dict):
    raise CheckpointError(f'{path}: the payload is not a mapping of leaves.')
  return {k: np.asarray(v) for k, v in saved.items()}


def restore(path: str | os.PathLike, target: PyTree) -> PyTree:
  """Reads the checkpoint at `path` into the structure of `target`.

  Returns:
    A tree of `target`'s structure with numpy leaves from the file.

  Raises:
    CheckpointError (a ValueError): when the file is not a checkpoint, its
      digest does not match its contents, or its leaves do not match
      `target`'s paths, shapes and dtypes.
    OSError: when the file cannot be read.
  """
  saved = read_leaves(path)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
  keys = [jax.tree_util.keystr(p) for p, _ in leaves]
  if set(saved) != set(keys):
    found_keys = set(saved)
    raise CheckpointError(
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
      raise CheckpointError(
        f'{path}: leaf {key} has shape {found.shape} {found.dtype}, '
        f'expected {np.shape(expected)} {np.asarray(expected).dtype}.'
      )
    restored.append(found)
  return jax.tree_util.tree_unflatten(treedef, restored)
