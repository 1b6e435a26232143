#!/usr/bin/env bash
# Draws every built-in schedule as an SVG picture into docs/gallery/ (p=4, m=8, v=2 where a
# schedule takes several stages per rank): builds ppipe-gallery (Release) and runs it. The pictures
# are committed; rerun this after adding or changing a schedule, and add a line for a new picture to
# docs/gallery/README.md.
#   bash scripts/gallery.sh          replaces docs/gallery/*.svg
#   bash scripts/gallery.sh DIR      writes into DIR instead, removing nothing
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/release.sh
configure_release gallery
cmake --build --preset release --target ppipe_gallery
out="${1:-docs/gallery}"
if [[ $# -eq 0 ]]; then
  # A schedule renamed or removed must not leave its old picture behind.
  mkdir -p "${out}"
  rm -f "${out}"/*.svg
fi
exec build/release/examples/ppipe-gallery "${out}"
