#!/usr/bin/env bash
# The README's first command: on a fresh machine, installs what is missing, builds the demos
# (Release) and trains an MLP through a 4-stage pipeline on the host backend (ppipe-train), printing
# the loss per step, the throughput and the measured vs predicted bubble, and writing the last step's
# trace to build/ppipe-trace.json. Arguments go to ppipe-train (see --help).
#   bash scripts/demo.sh plan [args]       runs the planner (ppipe-plan) instead
#   bash scripts/demo.sh generate [args]   serves prompts through a pipelined transformer
#                                          (ppipe-generate), trace in build/ppipe-generate-trace.json
#   bash scripts/demo.sh mpi [args]        trains the MLP over 4 MPI processes (ppipe-mpi-train under
#                                          mpirun -np 4), traces in build/ppipe-mpi-trace.rank*.json;
#                                          PPIPE_NP=8 runs 8 processes
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
if [[ "${1:-}" == mpi ]]; then
  shift
  cmake --build --preset release --target ppipe_mpi_train
  # As root, Open MPI wants its consent; on a machine with fewer cores than processes, it wants
  # permission to oversubscribe and no binding.
  if ((EUID == 0)); then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
  export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none
  exec mpirun -np "${PPIPE_NP:-4}" build/release/examples/ppipe-mpi-train --trace build/ppipe-mpi-trace "$@"
fi
cmake --build --preset release --target ppipe_train
exec build/release/examples/ppipe-train --trace build/ppipe-trace.json "$@"
