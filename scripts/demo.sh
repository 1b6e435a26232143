#!/usr/bin/env bash
# The README's first command: on a fresh machine, installs what is missing, builds the demos
# (Release) and trains an MLP through a 4-stage pipeline on the host backend (ppipe-train), printing
# the loss per step, the throughput and the measured vs predicted bubble, and writing the last step's
# trace to build/ppipe-trace.json. Arguments go to ppipe-train (see --help).
#   bash scripts/demo.sh plan [args]       runs the planner (ppipe-plan) instead
#   bash scripts/demo.sh generate [args]   serves prompts through a pipelined transformer
#                                          (ppipe-generate), trace in build/ppipe-generate-trace.json
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/release.sh
configure_release demo
if [[ "${1:-}" == plan ]]; then
  shift
  cmake --build --preset release --target ppipe_plan
  exec build/release/examples/ppipe-plan "$@"
fi
if [[ "${1:-}" == generate ]]; then
  shift
  cmake --build --preset release --target ppipe_generate
  exec build/release/examples/ppipe-generate --trace build/ppipe-generate-trace.json "$@"
fi
cmake --build --preset release --target ppipe_train
exec build/release/examples/ppipe-train --trace build/ppipe-trace.json "$@"
