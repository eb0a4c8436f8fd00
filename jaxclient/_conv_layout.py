"""Convolutions in the layout XLA:CPU runs fast, inside loops too.

XLA:CPU runs a convolution with its fast (Eigen) kernels only when the
input is NHWC, the kernel HWIO and the output NHWC ("canonical"). Its
`ConvCanonicalization` pass transposes other convolutions into that form,
but it visits the entry computation only: a convolution inside a `while`
body (a `lax.scan` over batches, a `lax.map` over clients) keeps its
layout and runs on a naive loop emitter. The convolutions JAX's autodiff
writes for the gradients of an NHWC/HWIO convolution are not canonical
(the kernel gradient treats the batch as the feature dimension), so a
CNN's training step inside a scan ran many times slower than the same step
jitted alone (benchmarks/README.md has the measurement).

`canonicalize_convolutions(fun)` traces `fun` to a jaxpr and evaluates it
with every non-canonical convolution replaced by transpose -> canonical
convolution -> transpose: the same numbers, in the layout the fast kernels
take, wherever the call ends up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
from jax import lax
from jax.extend import core as jax_core

_CONV = 'conv_general_dilated'
# Call primitives whose body is evaluated in line (jax 0.4 names the jit
# primitive 'pjit', later versions 'jit').
_CALLS = {
  'jit': 'jaxpr',
  'pjit': 'jaxpr',
  'closed_call': 'call_jaxpr',
  'core_call': 'call_jaxpr',
}


def canonicalize_convolutions(fun: Callable) -> Callable:
  """`fun`, with every convolution it runs in XLA:CPU's canonical layout.

  Convolutions inside nested jit calls are rewritten too; those inside
  other higher-order primitives (a model's own `scan`, `cond`,
  `checkpoint`, custom derivatives) run unchanged. Results equal `fun`'s
  up to float32 summation order.
  """

  @functools.wraps(fun)
  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fun, return_shape=True)(*args)
    outputs = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), outputs)

  return wrapped


def contains_convolution(fun: Callable, *args) -> bool:
  """Whether `fun(*args)` (arrays or `jax.ShapeDtypeStruct`s) runs a
  convolution, in nested jit calls included."""

  def search(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == _CONV:
        return True
      body = eqn.params.get(_CALLS.get(eqn.primitive.name, ''))
      if body is not None and search(getattr(body, 'jaxpr', body)):
        return True
    return False

  return search(jax.make_jaxpr(fun)(*args).jaxpr)


def _evaluate(jaxpr, consts: Sequence, args: Sequence) -> list:
  """`jax.core.eval_jaxpr`, with convolutions canonicalized."""
  env: dict = {}

  def read(var):
    return var.val if isinstance(var, jax_core.Literal) else env[var]

  env.update(zip(jaxpr.constvars, consts, strict=True))
  env.update(zip(jaxpr.invars, args, strict=True))
  for eqn in jaxpr.eqns:
    inputs = [read(var) for var in eqn.invars]
    name = eqn.primitive.name
    if name == _CONV:
      outputs = [_canonical_convolution(*inputs, **eqn.params)]
    elif name in _CALLS:
      body = eqn.params[_CALLS[name]]
      body_consts = getattr(body, 'consts', ())
      outputs = _evaluate(getattr(body, 'jaxpr', body), body_consts, inputs)
    else:
      outputs = _bind(eqn, inputs)
    env.update(zip(eqn.outvars, outputs, strict=True))
  return [read(var) for var in jaxpr.outvars]


def _bind(eqn, inputs) -> list:
  """Applies `eqn`'s primitive to `inputs`, as `jax.core.eval_jaxpr` does."""
  params = eqn.primitive.get_bind_params(eqn.params)
  subfuns = ()
  if isinstance(params, tuple):  # jax < 0.5: (subfuns, params)
    subfuns, params = params
  with eqn.ctx.manager:
    outputs = eqn.primitive.bind(*subfuns, *inputs, **params)
  return outputs if eqn.primitive.multiple_results else [outputs]


def _canonical_convolution(lhs, rhs, *, dimension_numbers, **params):
  """The convolution `conv_general_dilated(lhs, rhs, ...)` computed with
  NHWC input, HWIO kernel and NHWC output, transposing in and out."""
  lhs_spec, rhs_spec, out_spec = dimension_numbers
  spatial = len(lhs_spec) - 2
  canonical = lax.ConvDimensionNumbers(
    lhs_spec=(0, spatial + 1) + tuple(range(1, spatial + 1)),
    rhs_spec=(spatial + 1, spatial) + tuple(range(spatial)),
    out_spec=(0, spatial + 1) + tuple(range(1, spatial + 1)),
  )
  primitive = lax.conv_general_dilated_p
  if tuple(map(tuple, dimension_numbers)) == tuple(map(tuple, canonical)):
    return primitive.bind(
      lhs, rhs, dimension_numbers=dimension_numbers, **params
    )
  # Batch, spatial..., feature; kernel spatial..., in, out.
  lhs_order = (lhs_spec[0],) + tuple(lhs_spec[2:]) + (lhs_spec[1],)
  rhs_order = tuple(rhs_spec[2:]) + (rhs_spec[1], rhs_spec[0])
  out_order = (out_spec[0],) + tuple(out_spec[2:]) + (out_spec[1],)
  out = primitive.bind(
    lax.transpose(lhs, lhs_order),
    lax.transpose(rhs, rhs_order),
    dimension_numbers=canonical,
    **params,
  )
  inverse = sorted(range(len(out_order)), key=out_order.__getitem__)
  return lax.transpose(out, tuple(inverse))
