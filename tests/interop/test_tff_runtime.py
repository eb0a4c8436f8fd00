"""`local_cpp_execution_context` stops the worker it started, and only it."""

import numpy as np
import tensorflow_federated as tff

import jaxclient_tff
from jaxclient_tff import runtime


@tff.tensorflow.computation(tff.TensorType(np.float32))
def _add_one(x):
  return x + 1.0


def test_nested_context_stops_its_worker_and_keeps_the_outer_one():
  assert _add_one(1.0) == 2.0  # The session context's worker is running.
  outer = {p.pid for p in runtime.worker_processes()}
  assert len(outer) == 1
  with jaxclient_tff.local_cpp_execution_context():
    assert _add_one(2.0) == 3.0
    inner = {p.pid for p in runtime.worker_processes()} - outer
    assert len(inner) == 1
  assert {p.pid for p in runtime.worker_processes()} == outer
  assert _add_one(3.0) == 4.0  # The outer context still works.
