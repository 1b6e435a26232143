#!/usr/bin/env bash
# The docs, as CI builds them: the guide (README.md and docs/) and the API reference (the public
# headers that docs/Doxyfile lists) as one Doxygen site, failing on any warning (a function without
# @param/@return/@tparam for what it has, an undocumented member, a link that leads nowhere). The
# HTML goes to build/docs/api/html/index.html.
#   scripts/docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v doxygen >/dev/null; then
  echo "docs: doxygen is not installed (scripts/setup.sh installs it)" >&2
  exit 1
fi
if ! command -v python3 >/dev/null; then
  echo "docs: python3 is not installed (scripts/setup.sh installs it)" >&2
  exit 1
fi
rm -rf build/docs/guide
mkdir -p build/docs
python3 scripts/lib/guide_pages.py . build/docs/guide build/docs/api/html
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
