#!/usr/bin/env bash
# The GPU checks, in one command, for a machine with a GPU: builds only what they need (Release,
# this GPU's architecture, every core), runs every test labelled gpu, and writes to OUTDIR:
#   log.txt     everything the build and the tests printed
#   ctest.xml   the tests' results (JUnit)
#   summary.md  the device, driver and CUDA version, what passed, failed and was skipped, timings
#   cpu_streams.json  runtime_bench's waiting-kernel steps against simulate() on this machine's
#               cores, for the host and CPU-stream backends (Google Benchmark JSON), when Google
#               Benchmark is there: the 3% target of the CPU-stream backend wants more cores than
#               the 2-core development VM has
#   cuda_bench.json   the CUDA backend's benchmarks (benchmarks/cuda_bench.cu): pipelined bf16
#               steps against one stream, TFLOP/s, and the host's enqueue cost per action
#   nccl_bench.json   where NCCL and MPI are installed: the NCCL transport against raw
#               ncclSend/ncclRecv (benchmarks/nccl_bench.cpp); the NCCL tests and ppipe-nccl-train
#               are then among the gpu-labelled tests
# It finishes in a few minutes; docs/cuda.md says how to run it on a lent machine.
#
# Catch2 comes from the system or, on a machine that reaches no package registry, from the
# prefix scripts/gpu-deps.sh makes here (.gpu-deps/, sent along with the tree).
#
# On a machine without a GPU it writes a summary saying so and exits 3, having built and run
# nothing; PPIPE_GPU_CHECK_ANYWAY=1 builds and runs all the same (the tests then report
# themselves skipped), to try the script itself.
#
# Usage: scripts/gpu-check.sh OUTDIR
set -euo pipefail

if (($# != 1)); then
  echo "usage: scripts/gpu-check.sh OUTDIR" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
build="${PPIPE_GPU_BUILD_DIR:-${root}/build/gpu}"
log="${out}/log.txt"
summary="${out}/summary.md"
: >"${log}"
exec > >(tee -a "${log}") 2>&1

started=$(date +%s)
seconds_since() { echo $(($(date +%s) - $1)); }

gpu="$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>/dev/null | head -n 1 || true)"
if [[ -z "${gpu}" && "${PPIPE_GPU_CHECK_ANYWAY:-0}" != 1 ]]; then
  printf '# GPU check\n\nNo GPU: nvidia-smi lists none on %s. Nothing was built or run.\n' "$(hostname)" >"${summary}"
  echo "gpu-check: no GPU here; nothing to do (see ${summary})"
  exit 3
fi
arch=90
if [[ -n "${gpu}" ]]; then
  arch="$(echo "${gpu}" | cut -d, -f3 | tr -d ' .')"
fi
nvcc_path="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
cuda_version="$("${nvcc_path}" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p' || true)"
echo "gpu-check: ${gpu:-no GPU (PPIPE_GPU_CHECK_ANYWAY)}; CUDA ${cuda_version:-?}; sm_${arch}; $(nproc) cores"

prefix_path=()
if [[ -d "${root}/.gpu-deps" ]]; then
  prefix_path=(-DCMAKE_PREFIX_PATH="${root}/.gpu-deps")
  bench_dir="$(dirname "$(find "${root}/.gpu-deps" -name benchmarkConfig.cmake | head -n 1)" 2>/dev/null || true)"
  [[ -n "${bench_dir}" && "${bench_dir}" != . ]] && prefix_path+=(-Dbenchmark_DIR="${bench_dir}")
fi

configure_status=0
build_status=0
test_status=0
t0=$(date +%s)
cmake -S "${root}" -B "${build}" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="${arch}" -DCMAKE_CUDA_COMPILER="${nvcc_path}" \
  -DPPIPE_ENABLE_CUDA=ON -DPPIPE_ENABLE_BLAS=OFF -DPPIPE_BUILD_TESTS=ON -DPPIPE_BUILD_EXAMPLES=ON \
  -DPPIPE_BUILD_BENCHMARKS=ON -DPPIPE_INSTALL=OFF "${prefix_path[@]}" || configure_status=$?
configure_s=$(seconds_since "${t0}")
t0=$(date +%s)
if ((configure_status == 0)); then
  cmake --build "${build}" --target ppipe_gpu_checks -j "$(nproc)" || build_status=$?
fi
build_s=$(seconds_since "${t0}")
t0=$(date +%s)
ctest_out="${out}/ctest.txt"
if ((configure_status == 0 && build_status == 0)); then
  # One test at a time: they share the GPU, and some of them time it.
  ctest --test-dir "${build}" -L gpu --output-on-failure --timeout 300 --output-junit "${out}/ctest.xml" \
    | tee "${ctest_out}" || test_status=$?
fi
test_s=$(seconds_since "${t0}")

# The waiting-kernel steps, on the host and CPU-stream backends, with this machine's cores.
bench_status="not run (no Google Benchmark)"
t0=$(date +%s)
if ((configure_status == 0)) && cmake --build "${build}" --target ppipe_bench_runtime -j "$(nproc)"; then
  if "${build}/benchmarks/ppipe_bench_runtime" --benchmark_filter='^(waiting/.*spin_us:100|cpu_streams/waiting/)' \
      --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      --benchmark_out="${out}/cpu_streams.json" --benchmark_out_format=json; then
    bench_status=ok
  else
    bench_status=FAILED
  fi
fi
# The CUDA backend's own benchmarks (built with the GPU checks when Google Benchmark is there).
if [[ -x "${build}/benchmarks/ppipe_bench_cuda" ]]; then
  if ! "${build}/benchmarks/ppipe_bench_cuda" --benchmark_out="${out}/cuda_bench.json" \
      --benchmark_out_format=json; then
    bench_status=FAILED
  fi
fi
# The NCCL transport against raw NCCL (built where NCCL and MPI are installed): one process.
if [[ -x "${build}/benchmarks/ppipe_bench_nccl" ]]; then
  if ! OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "${build}/benchmarks/ppipe_bench_nccl" \
      --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      --benchmark_out="${out}/nccl_bench.json" --benchmark_out_format=json; then
    bench_status=FAILED
  fi
fi
bench_s=$(seconds_since "${t0}")

# ctest's result lines: "  3/13 Test #40: name ....   Passed    0.01 sec".
count() { grep -cE "^ *[0-9]+/[0-9]+ Test .*$1" "${ctest_out}" 2>/dev/null || true; }
{
  echo "# GPU check"
  echo
  echo "- when: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "${root}" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "- device: ${gpu:-none (PPIPE_GPU_CHECK_ANYWAY=1)}"
  echo "- CUDA: ${cuda_version:-?} (nvcc ${nvcc_path}), built for sm_${arch} on $(nproc) cores"
  echo "- configure: $([[ ${configure_status} == 0 ]] && echo ok || echo "FAILED (${configure_status})"), ${configure_s} s"
  echo "- build: $([[ ${configure_status} != 0 ]] && echo 'not run' || { [[ ${build_status} == 0 ]] && echo ok || echo "FAILED (${build_status})"; }), ${build_s} s"
  if [[ -f "${ctest_out}" ]]; then
    echo "- tests: $(grep -E 'tests passed|tests failed' "${ctest_out}" | tail -n 1), ${test_s} s"
    echo "  - passed $(count ' Passed '), failed $(count '(Failed|Timeout|Exception)'), skipped $(count 'Skipped')"
  else
    echo "- tests: not run"
  fi
  echo "- benchmarks: ${bench_status}, ${bench_s} s"
  if [[ -f "${out}/cpu_streams.json" ]]; then
    echo
    echo "| case (median of 3) | step / simulate() | bubble | predicted | wake-up per message |"
    echo "| --- | --- | --- | --- | --- |"
    python3 - "${out}/cpu_streams.json" <<'PY' || true
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("aggregate_name") != "median" or "ratio" not in b:
        continue
    name = b["run_name"].replace("/iterations:5/manual_time", "")
    print(f'| {name} | {b["ratio"]:.3f} | {b["bubble"]:.3f} | {b["predicted_bubble"]:.3f} | {b["wake_us"]:.1f} us |')
PY
    echo
  fi
  if [[ -f "${out}/cuda_bench.json" ]]; then
    echo "| CUDA case | pipelined | one stream | overhead | TFLOP/s | host per action |"
    echo "| --- | --- | --- | --- | --- | --- |"
    python3 - "${out}/cuda_bench.json" <<'PY' || true
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    name = b["run_name"].replace("/manual_time", "")
    if "error_message" in b:
        print(f'| {name} | {b["error_message"]} | | | | |')
    elif "overhead_pct" in b:
        print(f'| {name} | {b["pipelined_ms"]:.2f} ms | {b["one_stream_ms"]:.2f} ms | {b["overhead_pct"]:.2f}% | {b["tflops"]:.0f} | |')
    elif "enqueue_us_per_rank_action" in b:
        print(f'| {name} | | | | | {b["enqueue_us_per_rank_action"]:.1f} us enqueue, {b["us_per_action"]:.1f} us step |')
    elif "speedup" in b:
        print(f'| {name} | {b["graph_us_per_step"]:.0f} us from a graph | {b["eager_us_per_step"]:.0f} us enqueued | {b["speedup"]:.1f}x faster | | |')
PY
    echo
  fi
  if [[ -f "${out}/nccl_bench.json" ]]; then
    echo "| NCCL case (median of 3) | raw NCCL | ppipe | ppipe / raw | raw GB/s |"
    echo "| --- | --- | --- | --- | --- |"
    python3 - "${out}/nccl_bench.json" <<'PY' || true
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    name = b["run_name"].split("/iterations")[0]
    if "error_message" in b:
        print(f'| {name} | {b["error_message"]} | | | |')
    elif b.get("aggregate_name") == "median" and "ppipe_vs_raw" in b:
        print(f'| {name} | {b["raw_us"]:.1f} us | {b["ppipe_us"]:.1f} us | {b["ppipe_vs_raw"]:.3f} | {b["raw_gb_per_s"]:.1f} |')
PY
    echo
  fi
  echo "- total: $(seconds_since "${started}") s"
} >"${summary}"
cat "${summary}"
if ((configure_status != 0 || build_status != 0 || test_status != 0)) || [[ "${bench_status}" == FAILED ]]; then
  exit 1
fi
