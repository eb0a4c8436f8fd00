#!/usr/bin/env bash
# The test command: creates both envs from the locks, then runs
#   1. the core suite in the core env (.venv, current jax),
#   2. the core suite in the TFF env (.venv-tff, jax 0.4.30),
#   3. the interop suite in the TFF env,
#   4. the notebooks, each in the env it needs.
# Fails when any step fails, or when a TFF worker_binary outlives the run.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all || exit 1
export JAX_PLATFORMS=cpu

status=0
step() {  # step NAME COMMAND... ; pytest's "no tests collected" (5) is a failure too.
  local name=$1; shift
  echo "=== $name"
  local start=$SECONDS
  "$@"; local rc=$?
  echo "=== $name: exit $rc in $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] || status=1
}

step "core suite (core env)" .venv/bin/python -m pytest tests/core -q -p no:cacheprovider
step "core suite (TFF env)" .venv-tff/bin/python -m pytest tests/core -q -p no:cacheprovider
step "interop suite (TFF env)" .venv-tff/bin/python -m pytest tests/interop -q -p no:cacheprovider
# Notebooks named tff_*.ipynb need the TFF env; the others run in the core env.
shopt -s nullglob
tff_notebooks=(notebooks/tff_*.ipynb)
core_notebooks=()
for nb in notebooks/*.ipynb; do [[ $nb == notebooks/tff_* ]] || core_notebooks+=("$nb"); done
run_notebooks() {  # run_notebooks PYTHON NOTEBOOK...
  local python=$1; shift
  [ "$#" -gt 0 ] || { echo "no notebooks"; return 0; }
  "$python" -m pytest --nbmake -q -p no:cacheprovider "$@"
}
step "notebooks (core env)" run_notebooks .venv/bin/python "${core_notebooks[@]}"
step "notebooks (TFF env)" run_notebooks .venv-tff/bin/python "${tff_notebooks[@]}"

# Live workers only: a zombie ([worker_binary] <defunct>) holds no pipe.
leftover=$(ps -eo pid=,stat=,args= | awk '$2 !~ /^Z/ && /[w]orker_binary/ {print $1}' | tr '\n' ' ')
if [ -n "$leftover" ]; then
  echo "FAIL: TFF worker_binary still running (pids: $leftover); killing it" >&2
  kill $leftover 2>/dev/null || true
  status=1
fi
[ "$status" -eq 0 ] && echo "ALL GREEN" || echo "SOME STEP FAILED"
exit "$status"
