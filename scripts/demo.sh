#!/usr/bin/env bash
# The README's first command: on a fresh machine, installs what is missing, builds the planning
# demo (Release) and runs it. Arguments go to ppipe-plan (see --help); without any it plans GPipe,
# 1F1B and interleaved 1F1B for 4 ranks and 8 microbatches and compares them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
log=build/release-configure.log
mkdir -p build
if ! cmake --preset release >"${log}" 2>&1; then
  cat "${log}" >&2
  echo "demo: configuring failed (log above, also in ${log})" >&2
  exit 1
fi
cmake --build --preset release --target ppipe_plan
exec build/release/examples/ppipe-plan "$@"
