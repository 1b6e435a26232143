#!/usr/bin/env bash
# Fuzzes ppipe's schedule-file reader (ppipe/schedule/csv.hpp) with libFuzzer under ASan + UBSan.
#   scripts/fuzz.sh              600 seconds, one job
#   scripts/fuzz.sh 60           60 seconds
#   scripts/fuzz.sh 60 -runs=N   extra arguments go to libFuzzer
# Builds build/fuzz/fuzz_schedule_csv with clang++, writes the seeds (every built-in schedule's
# CSV for a few (p, m, v), and hand-made files) to build/fuzz/seeds, and runs with the corpus it
# grows in build/fuzz/corpus. A crash, a hang over 5 s, or an exception that is not ppipe::error
# stops it with the input saved under build/fuzz/artifacts/ (replay: the binary with that file).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
cxx="${CXX_FUZZ:-clang++}"
out=build/fuzz
mkdir -p "${out}/seeds" "${out}/corpus" "${out}/artifacts"

common=(-std=c++20 -g -Iinclude)
"${cxx}" "${common[@]}" -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  tests/fuzz/fuzz_schedule_csv.cpp -o "${out}/fuzz_schedule_csv"
"${cxx}" "${common[@]}" -O1 tests/fuzz/fuzz_seeds.cpp -o "${out}/fuzz_seeds"
"${out}/fuzz_seeds" "${out}/seeds"

# One job: the machines this runs on have two cores, shared with the build.
"${out}/fuzz_schedule_csv" "${out}/corpus" "${out}/seeds" \
  -max_total_time="${seconds}" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
  -dict=tests/fuzz/schedule_csv.dict -artifact_prefix="${out}/artifacts/" "$@"
