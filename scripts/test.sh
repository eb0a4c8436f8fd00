#!/usr/bin/env bash
# The test command: creates both envs from the locks, then runs
#   1. the core suite in the core env (.venv, current jax),
#   2. the core suite in the TFF env (.venv-tff, jax 0.4.30),
#   3. the interop suite in the TFF env,
#   4. the doctests of the core (the examples in jaxclient's docstrings), in
#      both envs,
#   5. the notebooks, each in the env it needs (executed as copies in the
#      git-ignored docs/notebooks/, whose outputs the site then shows),
#   6. the documentation site, built with warnings as errors into a
#      temporary folder outside the repository,
#   7. lint (ruff check), format (ruff format --check) and types (mypy).
# Every step runs even when an earlier one failed. Fails when any step
# fails, or when a TFF worker_binary outlives the run.
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
step "doctests (core env)" .venv/bin/python -m pytest --doctest-modules jaxclient -q -p no:cacheprovider
step "doctests (TFF env)" .venv-tff/bin/python -m pytest --doctest-modules jaxclient -q -p no:cacheprovider

# Notebooks named tff_*.ipynb need the TFF env; the others run in the core env.
# Each runs as a fresh copy in docs/notebooks/ (git-ignored), which nbmake
# overwrites with its outputs; the site's build below renders those copies.
shopt -s nullglob
mkdir -p docs/notebooks
rm -f docs/notebooks/*.ipynb
tff_notebooks=() core_notebooks=()
for nb in notebooks/*.ipynb; do
  copy=docs/notebooks/$(basename "$nb")
  cp "$nb" "$copy"
  if [[ $nb == notebooks/tff_* ]]; then tff_notebooks+=("$copy"); else core_notebooks+=("$copy"); fi
done
run_notebooks() {  # run_notebooks PYTHON NOTEBOOK...
  local python=$1; shift
  [ "$#" -gt 0 ] || { echo "no notebooks"; return 0; }
  "$python" -m pytest --nbmake --overwrite -q -p no:cacheprovider "$@"
}
step "notebooks (core env)" run_notebooks .venv/bin/python "${core_notebooks[@]}"
step "notebooks (TFF env)" run_notebooks .venv-tff/bin/python "${tff_notebooks[@]}"

docs_out=$(mktemp -d "${TMPDIR:-/tmp}/jaxclient-docs.XXXXXX")
step "docs site (core env, warnings are errors)" \
  .venv/bin/sphinx-build -W --keep-going -q -b html docs "$docs_out"
rm -rf "$docs_out"
step "lint (ruff check)" .venv/bin/ruff check --output-format concise
step "format (ruff format --check)" .venv/bin/ruff format --check --output-format concise
step "types (mypy, core env)" .venv/bin/mypy

# Live workers only: a zombie ([worker_binary] <defunct>) holds no pipe.
leftover=$(ps -eo pid=,stat=,args= | awk '$2 !~ /^Z/ && /[w]orker_binary/ {print $1}' | tr '\n' ' ')
if [ -n "$leftover" ]; then
  echo "FAIL: TFF worker_binary still running (pids: $leftover); killing it" >&2
  kill $leftover 2>/dev/null || true
  status=1
fi
[ "$status" -eq 0 ] && echo "ALL GREEN" || echo "SOME STEP FAILED"
exit "$status"
