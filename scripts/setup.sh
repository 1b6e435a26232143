#!/usr/bin/env bash
# Installs what ppipe's build and tests need on a fresh Debian 12 machine, and nothing that is already
# there: Catch2 (tests), Open MPI (ppipe::mpi and its tests), pkg-config (the package tests), CLI11
# (the examples' and tools' command lines), OpenBLAS (the CPU layer kit's matrix products), Doxygen
# (the API reference, scripts/docs.sh).
# CMake, Ninja, g++ and the CUDA toolkit are part of the machine image (see shared/ENVIRONMENT.md).
#
# Idempotent: a second run installs nothing and does not touch the network. Quiet on success; on
# failure it prints what apt said.
#
# Usage: scripts/setup.sh
set -euo pipefail

packages=(catch2 libopenmpi-dev openmpi-bin pkg-config libcli11-dev libopenblas-dev doxygen python3 python3-venv)

is_installed() {
  # dpkg -s also succeeds for removed packages whose config files remain; ask for the real state.
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == "installed" ]]
}

missing=()
for package in "${packages[@]}"; do
  is_installed "${package}" || missing+=("${package}")
done
if ((${#missing[@]} == 0)); then
  echo "setup: all of ${packages[*]} already installed"
  exit 0
fi

# sudo resets the environment, so the frontend setting goes through env on both paths.
if ((EUID == 0)); then
  as_root=(env DEBIAN_FRONTEND=noninteractive)
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo --non-interactive env DEBIAN_FRONTEND=noninteractive)
else
  echo "setup: need root to install ${missing[*]}: run as root, or install sudo" >&2
  exit 1
fi

log="$(mktemp -t ppipe-setup.XXXXXX)"
trap 'rm -f "${log}"' EXIT
run_quietly() {
  if ! "$@" >"${log}" 2>&1; then
    echo "setup: failed: $*" >&2
    cat "${log}" >&2
    exit 1
  fi
}

echo "setup: installing ${missing[*]}"
apt_options=(-q -o DPkg::Lock::Timeout=300)
run_quietly "${as_root[@]}" apt-get "${apt_options[@]}" update
run_quietly "${as_root[@]}" apt-get "${apt_options[@]}" install -y "${missing[@]}"

for package in "${missing[@]}"; do
  if ! is_installed "${package}"; then
    echo "setup: ${package} is still not installed after apt-get install" >&2
    exit 1
  fi
done
echo "setup: done"
