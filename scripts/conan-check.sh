#!/usr/bin/env bash
# The Conan 2 recipe (conanfile.py) and its test package, as CI runs them: Conan from PyPI in a
# virtual environment under build/, a Conan home of its own with every remote disabled (the recipe
# needs none: its sources are this tree), then `conan create .` with the default options and once
# more with each component this machine can compile (MPI; CUDA and NCCL, compiled, not run).
#   scripts/conan-check.sh            all of it (about a minute once Conan is installed)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
venv="${root}/build/conan-venv"
export CONAN_HOME="${root}/build/conan-home"
# Open MPI refuses root without these; the test package starts MPI as a singleton.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [[ ! -x "${venv}/bin/conan" ]]; then
  python3 -m venv "${venv}"
  "${venv}/bin/pip" install --quiet "conan>=2.0,<3"
fi
conan="${venv}/bin/conan"
"${conan}" --version
[[ -f "${CONAN_HOME}/profiles/default" ]] || "${conan}" profile detect
"${conan}" remote disable "*" >/dev/null

run() {
  echo "== conan create . $*"
  "${conan}" create . -s compiler.cppstd=20 "$@"
}
run
have_mpi=0
have_cuda=0
have_nccl=0
command -v mpicxx >/dev/null && have_mpi=1
{ command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; } && have_cuda=1
for h in /usr/include/nccl.h /usr/local/include/nccl.h /usr/local/cuda/include/nccl.h; do
  [[ -f "${h}" ]] && have_nccl=1
done
options=()
((have_mpi)) && options+=(-o "ppipe/*:with_mpi=True")
((have_cuda)) && options+=(-o "ppipe/*:with_cuda=True")
((have_cuda && have_nccl)) && options+=(-o "ppipe/*:with_nccl=True")
if ((${#options[@]})); then
  run "${options[@]}"
else
  echo "== no MPI, CUDA or NCCL here: only the core was packaged"
fi
rm -rf test_package/build test_package/CMakeUserPresets.json
