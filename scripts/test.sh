#!/usr/bin/env bash
# The README's second command, and what CI runs: on a fresh machine, installs what is missing,
# builds every test, example and benchmark with warnings as errors and runs the whole suite
# (ctest preset "ci"), checks the Conan recipe (scripts/conan-check.sh) and the API reference
# (scripts/docs.sh), then builds the host tests under AddressSanitizer + UndefinedBehaviorSanitizer
# and runs them again (preset "asan"), then once more under ThreadSanitizer (preset "tsan"): the
# runtime runs a thread per pipeline rank.
#   PPIPE_SANITIZERS=0 scripts/test.sh   skips both sanitizer passes
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs="$(nproc)"

echo "== build and test: preset ci (warnings as errors)"
cmake --preset ci
cmake --build --preset ci -j "${jobs}"
ctest --preset ci -j "${jobs}"

echo "== the Conan recipe and its test package"
bash scripts/conan-check.sh

echo "== the API reference (Doxygen, warnings as errors)"
bash scripts/docs.sh

if [[ "${PPIPE_SANITIZERS:-1}" != 0 ]]; then
  echo "== host tests under ASan + UBSan: preset asan"
  cmake --preset asan
  cmake --build --preset asan -j "${jobs}"
  ctest --preset asan -j "${jobs}"

  echo "== host tests under ThreadSanitizer: preset tsan"
  cmake --preset tsan
  cmake --build --preset tsan -j "${jobs}"
  ctest --preset tsan -j "${jobs}"
fi
