#!/usr/bin/env bash
# The API reference, as CI builds it: Doxygen over the public headers that docs/Doxyfile lists,
# failing on any warning (a function without @param/@return/@tparam for what it has, an
# undocumented member, a broken reference). The HTML goes to build/docs/api/html/index.html.
#   scripts/docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v doxygen >/dev/null; then
  echo "docs: doxygen is not installed (scripts/setup.sh installs it)" >&2
  exit 1
fi
mkdir -p build/docs
log=build/docs/doxygen.log
if ! doxygen docs/Doxyfile >"${log}" 2>&1; then
  cat "${log}" >&2
  echo "docs: Doxygen failed (above); document what it names, or fix the reference" >&2
  exit 1
fi
if [[ -s "${log}" ]]; then
  cat "${log}" >&2
  echo "docs: Doxygen printed warnings (above); the reference must build without any" >&2
  exit 1
fi
echo "docs: build/docs/api/html/index.html ($(doxygen --version))"
