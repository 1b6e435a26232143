#!/usr/bin/env bash
# Gathers, from this machine, what scripts/gpu-check.sh needs to build on a GPU machine that
# reaches no package registry: Catch2 (header, CMake package and main library), CLI11 (headers
# and CMake package, for ppipe-cuda-train) and Google Benchmark (headers, CMake package,
# library), into .gpu-deps/, a CMake prefix that gpu-check.sh
# finds by itself. Run it here once (after scripts/setup.sh),
# then send .gpu-deps along with the tree (the device tool's `carry`).
#
# Usage: scripts/gpu-deps.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${root}/.gpu-deps"

catch_config="$(dpkg -L catch2 2>/dev/null | grep '/Catch2Config.cmake$' | head -n 1 || true)"
if [[ -z "${catch_config}" ]]; then
  echo "gpu-deps: Catch2 is not installed here; run scripts/setup.sh first" >&2
  exit 1
fi
rm -rf "${prefix}"
mkdir -p "${prefix}/include" "${prefix}/lib/cmake"
cp -r /usr/include/catch2 "${prefix}/include/"
cp -r "$(dirname "${catch_config}")" "${prefix}/lib/cmake/"
cp "$(dpkg -L catch2 | grep '/libCatch2WithMain.a$' | head -n 1)" "${prefix}/lib/"
# CLI11's package finds its headers three folders above its CMake files.
cli11_config="$(dpkg -L libcli11-dev 2>/dev/null | grep '/CLI11Config.cmake$' | head -n 1 || true)"
if [[ -z "${cli11_config}" ]]; then
  echo "gpu-deps: CLI11 is not installed here; run scripts/setup.sh first" >&2
  exit 1
fi
mkdir -p "${prefix}/share/cmake"
cp -r /usr/include/CLI "${prefix}/include/"
cp -r "$(dirname "${cli11_config}")" "${prefix}/share/cmake/"
# Google Benchmark keeps its Debian layout (lib/x86_64-linux-gnu), which its CMake files expect.
bench_config="$(dpkg -L libbenchmark-dev 2>/dev/null | grep '/benchmarkConfig.cmake$' | head -n 1 || true)"
if [[ -n "${bench_config}" ]]; then
  libdir="$(dirname "$(dirname "$(dirname "${bench_config}")")")"
  mkdir -p "${prefix}${libdir#/usr}/cmake"
  cp -r /usr/include/benchmark "${prefix}/include/"
  cp -r "$(dirname "${bench_config}")" "${prefix}${libdir#/usr}/cmake/"
  cp -a "${libdir}"/libbenchmark.so* "${libdir}"/libbenchmark_main.a "${prefix}${libdir#/usr}/"
else
  echo "gpu-deps: Google Benchmark is not installed here; the GPU machine will run no benchmark" >&2
fi
echo "gpu-deps: wrote ${prefix} ($(du -sh "${prefix}" | cut -f1))"
