#!/usr/bin/env bash
# Builds the benchmarks in Release and records their figures as Google Benchmark JSON under
# docs/benchmarks/, the source of every number in docs/benchmarks.md. Run on an otherwise idle
# machine. Extra arguments go to every benchmark binary (e.g. --benchmark_filter=generate).
#   schedule_bench:  generate + validate + simulate at scale
#   partition_bench: the partitioners at scale
#   runtime_bench:   the host executor's overhead per action, and real steps against simulate()
#   generation_bench: pipelined token generation, tokens/s against groups in flight
#   zero_bubble:     runtime_bench's waiting kernels for 1F1B, ZB-H1, ZB-V and DualPipeV
#   recompute:       runtime_bench's waiting kernels for GPipe and 1F1B, with and without recompute
#   cpu_streams:     runtime_bench's cases on the CPU-stream backend (host enqueue cost, waiting steps)
#   mpi_bench:       the MPI transport against raw MPI send/recv
#   layers:          the layer kit on OpenBLAS against direct cblas_sgemm calls and the kit's loops
#   layers_skylakex: the same with OpenBLAS's SkylakeX kernels forced (OPENBLAS_CORETYPE), on a CPU
#                    with AVX-512 only: OpenBLAS 0.3.21 takes CPUs it does not know for Prescott
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target ppipe_bench_schedule ppipe_bench_partition ppipe_bench_runtime ppipe_bench_generation \
  ppipe_bench_mpi ppipe_bench_layers
mkdir -p docs/benchmarks
# PPIPE_BENCHES="partition" records one of them only.
# zero_bubble is runtime_bench's waiting kernels for 1F1B, ZB-H1, ZB-V and DualPipeV alone.
# mpi runs mpi_bench as 2 MPI processes (rank 0 reports and writes the JSON).
for bench in ${PPIPE_BENCHES:-schedule partition runtime generation zero_bubble recompute cpu_streams mpi layers layers_skylakex}; do
  binary="${bench}"
  filter=()
  launch=()
  if [[ "${bench}" == layers_skylakex ]]; then
    if ! grep -qw avx512bw /proc/cpuinfo; then
      echo "layers_skylakex: this CPU has no AVX-512; skipped"
      continue
    fi
    binary=layers
    launch=(env OPENBLAS_CORETYPE=SkylakeX)
  fi
  if [[ "${bench}" == zero_bubble ]]; then
    binary=runtime
    filter=(--benchmark_filter='^waiting/(1f1b|zb_h1|zb_v|dualpipe_v)_p4_m16(_v2)?/')
  fi
  if [[ "${bench}" == recompute ]]; then
    binary=runtime
    filter=(--benchmark_filter='^waiting/(gpipe|1f1b)_p4_m16')
  fi
  if [[ "${bench}" == cpu_streams ]]; then
    binary=runtime
    filter=(--benchmark_filter='^cpu_streams/')
  fi
  if [[ "${bench}" == mpi ]]; then
    # As in scripts/demo.sh: as root Open MPI wants its consent, and on a machine with few cores
    # permission to oversubscribe and no binding. Set for this benchmark only.
    launch=(env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
            OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none mpirun -np 2)
  fi
  "${launch[@]}" "build/release/benchmarks/ppipe_bench_${binary}" "${filter[@]}" \
    --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
    --benchmark_out="docs/benchmarks/${bench}.json" --benchmark_out_format=json "$@"
done
