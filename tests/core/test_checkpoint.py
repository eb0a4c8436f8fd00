"""Checkpoints: atomic, verified, and never trusted when changed on disk."""

import os
import re
import stat

import numpy as np
import pytest

import jaxclient as jc

TREE = {'round': np.int32(3), 'w': np.arange(6, dtype=np.float32)}


def _saved(tmp_path):
  path = tmp_path / 'checkpoint.msgpack'
  jc.checkpoint.save(path, TREE)
  return path


def test_round_trip(tmp_path):
  restored = jc.checkpoint.restore(_saved(tmp_path), TREE)
  np.testing.assert_array_equal(restored['w'], TREE['w'])
  assert int(restored['round']) == 3


@pytest.mark.parametrize('offset', [-1, -9, -20])
def test_flipped_bytes_are_an_error_naming_the_file(tmp_path, offset):
  path = _saved(tmp_path)
  data = bytearray(path.read_bytes())
  data[offset] ^= 0xFF
  data[offset - 1] ^= 0x01
  path.write_bytes(bytes(data))
  with pytest.raises(jc.checkpoint.CheckpointError,
                     match=re.escape(str(path))):
    jc.checkpoint.restore(path, TREE)


def test_a_nan_written_into_the_payload_is_detected(tmp_path):
  path = _saved(tmp_path)
  data = path.read_bytes()
  value = np.float32(4.0).tobytes()  # TREE['w'][4], little-endian.
  assert data.count(value) == 1
  path.write_bytes(data.replace(value, np.float32(np.nan).tobytes()))
  with pytest.raises(jc.checkpoint.CheckpointError,
                     match='corrupted: the SHA-256 digest'):
    jc.checkpoint.restore(path, TREE)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
  path = tmp_path / 'other.msgpack'
  from flax import serialization  # pylint: disable=g-import-not-at-top
  path.write_bytes(serialization.msgpack_serialize({'w': TREE['w']}))
  with pytest.raises(jc.checkpoint.CheckpointError,
                     match='not a jaxclient-checkpoint-1 file'):
    jc.checkpoint.restore(path, TREE)
  path.write_bytes(b'\x00garbage')
  with pytest.raises(jc.checkpoint.CheckpointError, match='corrupted'):
    jc.checkpoint.restore(path, TREE)


def test_mode_follows_the_umask_like_any_new_file(tmp_path):
  old = os.umask(0o027)
  try:
    path = _saved(tmp_path)
    plain = tmp_path / 'plain.txt'
    plain.write_text('x')
  finally:
    os.umask(old)
  assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(
      plain.stat().st_mode) == 0o640


def test_remove_temporaries_deletes_only_leftover_writes(tmp_path):
  path = _saved(tmp_path)
  leftover = tmp_path / '.checkpoint-deadbeef'
  leftover.write_bytes(b'partial')
  other = tmp_path / 'history.json'
  other.write_text('{}')
  assert jc.checkpoint.remove_temporaries(tmp_path) == [str(leftover)]
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'checkpoint.msgpack', 'history.json']
  jc.checkpoint.restore(path, TREE)
