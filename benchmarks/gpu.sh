#!/usr/bin/env bash
# The benchmark table on the device machine (an H100 or H200), from the
# repository root:
#
#   bash benchmarks/gpu.sh OUT_DIR [extra `python -m benchmarks` flags]
#
# Every JAX peer runs in the machine's own python3 (jax with CUDA, flax,
# optax, chex); DrJAX and FedJAX come as wheels in .venv-bench/wheels
# (carried: see README.md). TFF 0.87's runtime is CPU-only (TF 2.14 without
# CUDA here), so TFF's rows are in the CPU table only. Writes
# OUT_DIR/gpu.{json,md,log} and the f32 (TF32) and bf16 matmul peaks
# (OUT_DIR/peak-*.json); with BF16=1 also jaxclient's and the plain loop's
# rows with JAX_DEFAULT_MATMUL_PRECISION=bfloat16 (OUT_DIR/gpu-bf16.*).
set -euo pipefail
out=${1:?usage: gpu.sh OUT_DIR [flags]}; shift
mkdir -p "$out"
if ls .venv-bench/wheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/bench-site .venv-bench/wheels/*.whl
  export PYTHONPATH=/tmp/bench-site${PYTHONPATH:+:$PYTHONPATH}
fi
# Several worker processes share the GPU: none may take 75% of it up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv \
  > "$out/nvidia-smi.csv"
python3 -m benchmarks.peak --dtype float32 > "$out/peak-f32.json"
python3 -m benchmarks.peak --dtype bfloat16 > "$out/peak-bf16.json"
python3 -m benchmarks --python core=python3 bench=python3 \
  --peers jaxclient plain_loop drjax fedjax --out "$out/gpu" "$@"
if [[ "${BF16:-0}" == 1 ]]; then
  JAX_DEFAULT_MATMUL_PRECISION=bfloat16 python3 -m benchmarks \
    --python core=python3 bench=python3 --peers jaxclient plain_loop \
    --out "$out/gpu-bf16" "$@"
fi
