#!/usr/bin/env bash
# Creates both environments from the committed locks:
#   .venv      the core env   (uv.lock): the project with its `sim` extra and
#              its default dependency groups: test, docs (sphinx, myst-nb,
#              furo), lint (ruff, mypy)
#   .venv-tff  the TFF env    (envs/tff/uv.lock): its `test` group
# Installs uv with pip when it is missing. Only the package index is used.
# Usage: bash scripts/setup.sh [core|tff|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
which_envs=${1:-all}

if command -v uv >/dev/null 2>&1; then
  uv=(uv)
else
  echo "setup: uv not found; installing it with pip" >&2
  python3 -m pip install --quiet uv
  uv=(python3 -m uv)  # works whether or not pip's script dir is on PATH
fi

python=$(command -v python3.11 || true)
if [ -z "$python" ]; then
  echo "setup: python3.11 is required (TFF 0.87 refuses 3.12) and was not found" >&2
  exit 1
fi
export UV_PYTHON_DOWNLOADS=never

if [ "$which_envs" = core ] || [ "$which_envs" = all ]; then
  "${uv[@]}" sync --quiet --locked --extra sim --python "$python"
fi
if [ "$which_envs" = tff ] || [ "$which_envs" = all ]; then
  UV_PROJECT_ENVIRONMENT="$root/.venv-tff" \
    "${uv[@]}" sync --quiet --locked --project envs/tff --python "$python"
fi
