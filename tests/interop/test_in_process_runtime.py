"""`jaxclient_tff.execution_context()`: TFF computations in this process.

Hand-computed numbers for bare and federated computations over every
intrinsic the runtime implements; TFF's own processes in the context equal
the same processes on TFF's native (C++) runtime, which the suite's session
fixture installs outside the context; the context starts no worker and no
thread and restores the previous context, also after an exception."""

import collections
import threading

import jax.numpy as jnp
import numpy as np
import psutil
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import jaxclient_tff
from jaxclient_tff import in_process
import twins

F32 = np.float32
AT_SERVER = tff.FederatedType(F32, tff.SERVER)
AT_CLIENTS = tff.FederatedType(F32, tff.CLIENTS)


@tff.tensorflow.computation(F32, F32)
def tf_affine(w, x):
  return w * x + 1.0


@tff.jax.computation(F32, F32)
def jax_double_product(w, x):
  return w * x * 2.0


@tff.federated_computation(AT_SERVER, AT_CLIENTS)
def broadcast_map_sum_mean(w, xs):
  w_at_clients = tff.federated_broadcast(w)
  via_jax = tff.federated_map(jax_double_product, (w_at_clients, xs))
  via_tf = tff.federated_map(tf_affine, (w_at_clients, xs))
  return tff.federated_sum(via_jax), tff.federated_mean(via_tf)


def test_bare_tensorflow_and_jax_computations():
  @tff.tensorflow.computation(collections.OrderedDict(
      a=tff.TensorType(F32, [2]), b=np.int32))
  def structured(arg):
    return collections.OrderedDict(s=tf.reduce_sum(arg['a']), b=arg['b'] * 2)

  @tff.jax.computation(tff.TensorType(F32, [3]), tff.TensorType(F32, [3]))
  def dot_and_sum(x, y):
    return jnp.dot(x, y), x + y

  with jaxclient_tff.execution_context() as context:
    assert tf_affine(2.0, 3.0) == 7.0
    assert jax_double_product(2.0, 3.0) == 12.0
    out = structured(collections.OrderedDict(a=[1.0, 2.5], b=4))
    dot, total = dot_and_sum(np.array([1, 2, 3], F32),
                             np.array([4, 5, 6], F32))
    dot_and_sum(np.ones(3, F32), np.ones(3, F32))
  assert isinstance(out, collections.OrderedDict)
  assert (out['s'], out['b']) == (3.5, 8)
  assert dot == 32.0
  np.testing.assert_array_equal(total, [5, 7, 9])
  assert context.stats['xla_builds'] <= 2  # Compiled once per computation.


def test_broadcast_map_sum_mean_hand_computed():
  with jaxclient_tff.execution_context() as context:
    total, mean = broadcast_map_sum_mean(2.0, [1.0, 2.0, 3.0])
    again = broadcast_map_sum_mean(1.0, [1.0, 1.0])
  # jax: sum_i 2 w x_i = 4 (1 + 2 + 3); tf: mean_i (w x_i + 1) = 5.
  assert (total, mean) == (24.0, 5.0)
  assert again == (4.0, 2.0)
  assert context.stats['compiles'] == 1  # Once, for both invocations.


def test_tffs_native_compiler_output_gives_the_same_numbers():
  """TFF's native compiler turns sums and means into federated_aggregate
  over TF computations; the runtime runs that form too."""
  with jaxclient_tff.execution_context(
      compiler_fn=tff.backends.native.desugar_and_transform_to_native):
    assert broadcast_map_sum_mean(2.0, [1.0, 2.0, 3.0]) == (24.0, 5.0)


def test_other_intrinsics_hand_computed():
  @tff.tensorflow.computation
  def seven():
    return tf.constant(7.0)

  @tff.tensorflow.computation(F32)
  def plus_one(x):
    return x + 1.0

  @tff.federated_computation(AT_CLIENTS, AT_CLIENTS,
                             tff.FederatedType(np.int32, tff.CLIENTS))
  def many(xs, ws, ints):
    weighted = tff.federated_mean(xs, ws)
    ten = tff.federated_value(F32(10.0), tff.SERVER)
    at_clients = tff.federated_value(F32(2.0), tff.CLIENTS)
    aggregate = tff.federated_aggregate(
        xs, F32(0.0),
        tff.tensorflow.computation(lambda a, x: a + x * x, F32, F32),
        tff.tensorflow.computation(lambda a, b: a + b, F32, F32),
        tff.tensorflow.computation(lambda a: tf.sqrt(a), F32))
    return (tff.federated_zip((weighted, ten)),
            tff.federated_eval(seven, tff.SERVER),
            tff.federated_sum(tff.federated_eval(seven, tff.CLIENTS)),
            tff.federated_map(plus_one, ten),
            tff.federated_sum(tff.federated_zip((xs, at_clients))),
            tff.federated_secure_sum_bitwidth(ints, 8), aggregate,
            tff.federated_max(xs), tff.federated_min(xs))

  with jaxclient_tff.execution_context():
    ((mean, ten), seven_at_server, sevens, applied, (xs_sum, twos), secure,
     aggregate, largest, smallest) = many([1.0, 2.0, 4.0], [1.0, 1.0, 2.0],
                                          [3, 4, 5])
  assert mean == pytest.approx((1 + 2 + 8) / 4)
  assert (ten, seven_at_server, sevens, applied) == (10.0, 7.0, 21.0, 11.0)
  assert (xs_sum, twos, secure) == (7.0, 6.0, 12)
  assert aggregate == pytest.approx(np.sqrt(1 + 4 + 16))
  assert (largest, smallest) == (4.0, 1.0)


def test_federated_map_all_equal_from_building_blocks():
  """Only TFF's compiler emits federated_map_all_equal; built directly."""
  @tff.tensorflow.computation(F32)
  def plus_one(x):
    return x + 1.0

  equal = tff.FederatedType(F32, tff.CLIENTS, all_equal=True)
  intrinsic = tff.framework.Intrinsic(
      tff.framework.FEDERATED_MAP_ALL_EQUAL.uri,
      tff.FunctionType([plus_one.type_signature, equal], equal))
  body = tff.framework.Call(intrinsic, tff.framework.Struct(
      [plus_one.to_building_block(), tff.framework.Reference('x', equal)]))
  comp = tff.framework.ConcreteComputation(
      computation_proto=tff.framework.Lambda('x', equal, body).proto,
      context_stack=tff.framework.get_context_stack())
  with jaxclient_tff.execution_context(default_num_clients=3):
    assert comp(4.0) == 5.0


def test_sequences_as_datasets_and_lists_of_batches_in_and_out():
  batches = tff.SequenceType(tff.TensorType(F32, [None]))

  @tff.tensorflow.computation(batches)
  def total(dataset):
    return dataset.reduce(F32(0.0), lambda a, x: a + tf.reduce_sum(x))

  @tff.tensorflow.computation(F32)
  def make(n):
    return tf.data.Dataset.range(3).map(lambda i: tf.cast(i, F32) * n)

  @tff.federated_computation(tff.FederatedType(batches, tff.CLIENTS))
  def sums(data):
    return tff.federated_sum(tff.federated_map(total, data))

  as_list = [np.array([1.0, 2.0], F32), np.array([3.0], F32)]
  with jaxclient_tff.execution_context():
    assert sums([tf.data.Dataset.from_tensor_slices([[1.0, 2.0], [3.0, 4.0]]),
                 as_list, []]) == 16.0
    assert list(make(2.0).as_numpy_iterator()) == [0.0, 2.0, 4.0]
    assert total(make(2.0).batch(2)) == 6.0


def test_tf_variables_are_initialized_on_every_call():
  @tff.tensorflow.computation(F32)
  def with_variable(x):
    v = tf.Variable(1.0)
    with tf.control_dependencies([v.assign_add(x)]):
      return v.read_value()

  with jaxclient_tff.execution_context():
    assert with_variable(2.0) == 3.0
    assert with_variable(2.0) == 3.0


def test_unsupported_intrinsic_is_rejected_before_any_client_trains():
  sequence = tff.SequenceType(F32)

  @tff.federated_computation(tff.FederatedType(sequence, tff.CLIENTS))
  def uses_sequence_sum(data):
    trained = tff.federated_map(tff.tensorflow.computation(
        lambda ds: ds.reduce(F32(0), lambda a, x: a + x), sequence), data)
    summed = tff.federated_map(
        tff.federated_computation(tff.sequence_sum, sequence), data)
    return tff.federated_sum(trained), tff.federated_sum(summed)

  with jaxclient_tff.execution_context() as context:
    with pytest.raises(NotImplementedError, match="intrinsic 'sequence_sum'"):
      uses_sequence_sum([[F32(1.0)]])
  assert context.stats['tensorflow_builds'] == 0  # Nothing was built or run.


def test_cardinality_mismatch_names_the_placement_and_counts():
  @tff.federated_computation(AT_CLIENTS, AT_CLIENTS)
  def sums(a, b):
    return tff.federated_sum(a), tff.federated_sum(b)

  with jaxclient_tff.execution_context():
    with pytest.raises(in_process.CardinalityError,
                       match=r'CLIENTS.*arg\.a has 2, arg\.b has 3'):
      sums([1.0, 2.0], [1.0, 2.0, 3.0])


def test_no_worker_or_thread_and_the_previous_context_is_restored():
  stack = tff.framework.get_context_stack()
  before = stack.current
  children = {p.pid for p in psutil.Process().children(recursive=True)}
  threads = threading.active_count()
  with pytest.raises(RuntimeError, match='boom'):
    with jaxclient_tff.execution_context() as context:
      assert stack.current is context
      assert broadcast_map_sum_mean(1.0, [1.0]) == (2.0, 2.0)
      assert {p.pid for p in psutil.Process().children(recursive=True)
             } == children
      raise RuntimeError('boom')
  assert stack.current is before
  assert threading.active_count() == threads


# -- TFF's own processes: in the context, equal to the native runtime --------

def _assert_trees_close(ours, theirs, atol=1e-6):
  ours, theirs = tf.nest.flatten(ours), tf.nest.flatten(theirs)
  assert len(ours) == len(theirs)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol,
                               rtol=0)


def test_tffs_model_delta_client_work_equals_the_native_runtime():
  process = twins.tff_process('mlp', 'sgdm')
  twin = twins.mlp_twin()
  data = twins.as_datasets(twin.make_data(0))
  weights = [twin.initial_weights] * len(data)
  native = process.next(process.initialize(), weights, data)
  with jaxclient_tff.execution_context():
    ours = process.next(process.initialize(), weights, data)
  _assert_trees_close([r.update for r in ours.result],
                      [r.update for r in native.result])
  assert [r.update_weight for r in ours.result] == [
      r.update_weight for r in native.result]
  _assert_trees_close(ours.measurements, native.measurements)


def test_tffs_weighted_fed_avg_over_keras_equals_the_native_runtime():
  twin = twins.mlp_twin()
  process = tff.learning.algorithms.build_weighted_fed_avg(
      twin.keras_model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0))

  def two_rounds():
    state, metrics = process.initialize(), []
    for seed in (1, 2):
      out = process.next(state, twins.as_datasets(twin.make_data(seed)))
      state = out.state
      metrics.append(out.metrics['client_work'])
    return process.get_model_weights(state), metrics

  native = two_rounds()
  with jaxclient_tff.execution_context():
    ours = two_rounds()
  _assert_trees_close(ours[0], native[0])
  _assert_trees_close(ours[1], native[1], atol=1e-5)


def test_same_function_names_with_different_bodies_in_one_process():
  """TFF's `transform_to_native_form` disables grappler on call ops, which
  keeps the graphs' library function names and changes their bodies; both
  forms in one process need the runtime's per-computation renaming (TF's
  function library is process-wide: "duplicate function ... differ")."""
  process = twins.tff_process('linear', 'sgd')
  twin = twins.linear_twin()
  data = twins.as_datasets(twin.make_data(0))
  updates = []
  for compiler_fn in (in_process.compile_call_dominant,
                      tff.backends.native.transform_to_native_form):
    with jaxclient_tff.execution_context(compiler_fn=compiler_fn):
      out = process.next(process.initialize(),
                         [twin.initial_weights] * len(data), data)
    updates.append([r.update for r in out.result])
  _assert_trees_close(updates[0], updates[1])
