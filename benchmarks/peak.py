"""This machine's matrix-multiply peak, measured with XLA through JAX.

    python -m benchmarks.peak [--dtype float32|bfloat16] [--size N]

prints one JSON object: the best FLOP/s of a jitted `a @ b` of two N x N
matrices over several timed trials (each a chain of products long enough to
swamp dispatch), the device, and, for a known accelerator, its datasheet
dense peak. On a GPU, float32 products run at XLA's default precision, which
on Ampere and later GPUs is TF32, the precision the client work computes at.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

# Datasheet dense (no sparsity) peaks, FLOP/s, by `device_kind` prefix.
DATASHEET_PEAKS = {
    'NVIDIA H100 80GB HBM3': {'tf32': 494.7e12, 'bf16': 989.4e12},
    'NVIDIA H100': {'tf32': 494.7e12, 'bf16': 989.4e12},
    'NVIDIA H200': {'tf32': 494.7e12, 'bf16': 989.4e12},
}


def datasheet_peak(device) -> dict | None:
  for prefix, peak in DATASHEET_PEAKS.items():
    if device.device_kind.startswith(prefix):
      return peak
  return None


def measure_matmul_peak(dtype: str = 'float32', size: int | None = None,
                        trials: int = 7, min_trial_s: float = 0.3) -> dict:
  """The best achieved FLOP/s of an N x N x N product on device 0."""
  device = jax.devices()[0]
  size = size or (2048 if device.platform == 'cpu' else 8192)
  keys = jax.random.split(jax.random.PRNGKey(0))
  a, b = (jax.random.normal(k, (size, size), jnp.dtype(dtype)) for k in keys)
  matmul = jax.jit(lambda a, b: a @ b)
  matmul(a, b).block_until_ready()
  flop = 2.0 * size**3
  start = time.perf_counter()
  matmul(a, b).block_until_ready()
  count = max(1, int(min_trial_s / max(time.perf_counter() - start, 1e-6)))
  best = 0.0
  for _ in range(trials):
    start = time.perf_counter()
    for _ in range(count):
      out = matmul(a, b)
    out.block_until_ready()
    best = max(best, flop * count / (time.perf_counter() - start))
  return {'dtype': dtype, 'size': size, 'flops_per_s': best,
          'platform': device.platform, 'device_kind': device.device_kind,
          'datasheet_peak': datasheet_peak(device)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--size', type=int, default=None)
  args = parser.parse_args()
  print(json.dumps(measure_matmul_peak(args.dtype, args.size)))


if __name__ == '__main__':
  main()
