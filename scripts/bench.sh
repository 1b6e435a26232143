#!/usr/bin/env bash
# Builds the benchmarks in Release and records their figures as Google Benchmark JSON under
# docs/benchmarks/, the source of every number in docs/benchmarks.md. Run on an otherwise idle
# machine. Extra arguments go to every benchmark binary (e.g. --benchmark_filter=generate).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target ppipe_bench_schedule
mkdir -p docs/benchmarks
build/release/benchmarks/ppipe_bench_schedule \
  --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  --benchmark_out=docs/benchmarks/schedule.json --benchmark_out_format=json "$@"
