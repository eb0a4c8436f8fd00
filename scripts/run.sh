#!/usr/bin/env bash
# The main job: a federated simulation on the embedded digits (FedAvg, Flax
# MLP), with a progress bar, a final metrics table, history and a plot under
# runs/. Creates the core env from its lock first. Flags go to `jaxclient`
# (`bash scripts/run.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh core
exec .venv/bin/jaxclient "$@"
