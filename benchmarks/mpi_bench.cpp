// The MPI transport against raw MPI point-to-point, in the same run (issue 7's target: ppipe
// within 10% of raw MPI, in latency for small payloads and in bandwidth for 4 MiB):
//   pingpong/raw_mpi/<bytes>  MPI_Send then MPI_Recv of <bytes>/4 floats (MPI_FLOAT), blocking,
//                             on a duplicate of MPI_COMM_WORLD; rank 1 receives, then sends back.
//   pingpong/ppipe/<bytes>    the same floats as a one-tensor ppipe::payload through
//                             ppipe::mpi::transport, called as the executor calls it: rank 0
//                             post_send, post_recv, complete_recv, complete_send; rank 1
//                             post_recv, complete_recv, post_send, complete_send. Like raw MPI,
//                             each receive is handed a buffer of the right shape to fill (what the
//                             executor hands it from the receiving stage's pool); rank 0 alternates
//                             two payloads, as the one it sends is still being read.
//   pingpong/ppipe_new_buffers/<bytes>  the same, but every receive is handed an empty payload,
//                             so the transport allocates new zero-filled tensors (what a transport
//                             that does not fill given buffers costs; the reference for the fix).
// Sizes: 8 B and 1 KiB (latency; ppipe sends them inline, one message with the shapes), 64 KiB
// and 4 MiB (bandwidth; ppipe sends a header of shapes, then the tensor from its own memory).
// One iteration is one round trip, timed on rank 0 in real time. Counters: one_way_us (the round
// trip / 2) and gb_per_s (2 x bytes per round trip / its time; 1 GB = 1e9 B).
//
// Two processes, each iteration count fixed, so both ranks run the same sequence of round trips;
// only rank 0 reports (rank 1 ignores --benchmark_out*). Each repetition starts with a few untimed
// round trips and a barrier. ppipe's runs: reset() at the start of each repetition, conclude() at
// its end, on both ranks. Run:
//   mpirun -np 2 build/release/benchmarks/ppipe_bench_mpi --benchmark_repetitions=5
// (as root, or with more processes than cores, Open MPI needs the OMPI_* variables that
// scripts/bench.sh sets; PPIPE_BENCHES=mpi bash scripts/bench.sh records docs/benchmarks/mpi.json).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include <ppipe/mpi.hpp>

namespace {

int me = 0;                                    // this process's rank: 0 times, 1 echoes
MPI_Comm raw_comm = MPI_COMM_NULL;             // raw MPI's own communicator
std::unique_ptr<ppipe::mpi::transport> net;    // built after MPI_Init, freed before MPI_Finalize
constexpr int warmup_round_trips = 16;

// Every wait of a repetition shares one deadline, taken when the repetition starts: reading the
// clock costs about 24 ns on the project's VM, a sixth of raw MPI's 8-byte latency, and raw MPI
// is timed without one. (The executor takes one per wait; that is part of its per-action overhead,
// which ppipe_bench_runtime measures.)
ppipe::deadline_clock::time_point deadline;

void add_counters(benchmark::State& state, std::int64_t bytes) {
  // kIsIterationInvariantRate: value x iterations / seconds; kInvert then gives seconds / (value x
  // iterations), which with value 2e-6 is half the round trip in microseconds.
  state.counters["one_way_us"] =
      benchmark::Counter(2e-6, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["gb_per_s"] =
      benchmark::Counter(2.0 * static_cast<double>(bytes) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetBytesProcessed(2 * bytes * state.iterations());
}

void raw_round_trip(std::vector<float>& buffer) {
  const int n = static_cast<int>(buffer.size());
  if (me == 0) {
    MPI_Send(buffer.data(), n, MPI_FLOAT, 1, 0, raw_comm);
    MPI_Recv(buffer.data(), n, MPI_FLOAT, 1, 0, raw_comm, MPI_STATUS_IGNORE);
  } else {
    MPI_Recv(buffer.data(), n, MPI_FLOAT, 0, 0, raw_comm, MPI_STATUS_IGNORE);
    MPI_Send(buffer.data(), n, MPI_FLOAT, 0, 0, raw_comm);
  }
}

void raw_mpi(benchmark::State& state, std::int64_t bytes) {
  std::vector<float> buffer(static_cast<std::size_t>(bytes / 4), 1.0f);
  for (int i = 0; i < warmup_round_trips; ++i) raw_round_trip(buffer);
  MPI_Barrier(raw_comm);
  for (auto _ : state) raw_round_trip(buffer);
  benchmark::DoNotOptimize(buffer.data());
  add_counters(state, bytes);
}

// One round trip through the transport; false (and the benchmark skipped) when a wait fails.
// `spare` is rank 0's second payload (handed to its receive while `data` is being sent), or,
// with `fresh`, each receive gets an empty payload.
bool ppipe_round_trip(benchmark::State& state, ppipe::payload& data, ppipe::payload& spare, bool fresh) {
  const auto ok = [&](ppipe::wait_status st) {
    if (st == ppipe::wait_status::ready) return true;
    state.SkipWithError("a transfer did not complete");
    return false;
  };
  if (me == 0) {
    auto sent = net->post_send(0, 1, data);
    auto back = net->post_recv(1, 0);
    if (fresh) spare.clear();
    if (!ok(net->complete_recv(back, spare, deadline)) || !ok(net->complete_send(sent, deadline))) return false;
    std::swap(data, spare);
  } else {
    auto in = net->post_recv(0, 1);
    if (fresh) data.clear();
    if (!ok(net->complete_recv(in, data, deadline))) return false;
    auto out = net->post_send(1, 0, data);
    if (!ok(net->complete_send(out, deadline))) return false;
  }
  return true;
}

void ppipe_transport(benchmark::State& state, std::int64_t bytes, bool fresh) {
  ppipe::payload data{ppipe::host_tensor(ppipe::shape{bytes / 4})};
  ppipe::payload spare{ppipe::host_tensor(ppipe::shape{bytes / 4})};
  deadline = ppipe::deadline_after(std::chrono::minutes(2));
  net->reset();
  bool fine = true;
  for (int i = 0; i < warmup_round_trips && fine; ++i) fine = ppipe_round_trip(state, data, spare, fresh);
  MPI_Barrier(raw_comm);
  for (auto _ : state) {
    if (!fine || !ppipe_round_trip(state, data, spare, fresh)) {
      fine = false;
      break;
    }
  }
  const ppipe::run_verdict verdict = net->conclude(ppipe::rank_outcome{}, deadline);
  if (fine && !verdict.ok) state.SkipWithError(("the ranks' run failed: " + verdict.message).c_str());
  add_counters(state, bytes);
}

// What rank 1 reports: nothing.
class silent_reporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

void register_all() {
  struct size {
    std::int64_t bytes;
    benchmark::IterationCount round_trips;
  };
  // About 0.3 to 0.7 s per repetition on the project's 2-core VM.
  for (const size s : {size{8, 1000000}, size{1024, 500000}, size{64 * 1024, 8000}, size{4 * 1024 * 1024, 200}}) {
    const std::string bytes = std::to_string(s.bytes);
    benchmark::RegisterBenchmark(("pingpong/raw_mpi/" + bytes).c_str(), raw_mpi, s.bytes)
        ->Iterations(s.round_trips)->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("pingpong/ppipe/" + bytes).c_str(), ppipe_transport, s.bytes, false)
        ->Iterations(s.round_trips)->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("pingpong/ppipe_new_buffers/" + bytes).c_str(), ppipe_transport, s.bytes, true)
        ->Iterations(s.round_trips)->UseRealTime()->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const ppipe::mpi::session mpi(&argc, &argv);
  if (mpi.size() != 2) {
    if (mpi.rank() == 0) {
      std::fprintf(stderr, "ppipe_bench_mpi: run it with 2 processes (mpirun -np 2), not %d\n", mpi.size());
    }
    return 2;
  }
  me = mpi.rank();
  if (me != 0) {
    // Only rank 0 writes --benchmark_out; rank 1 drops the flags so that it writes no file.
    int kept = 1;
    for (int i = 1; i < argc; ++i) {
      if (std::strncmp(argv[i], "--benchmark_out", 15) != 0) argv[kept++] = argv[i];
    }
    argc = kept;
    argv[argc] = nullptr;
  }
  MPI_Comm_dup(MPI_COMM_WORLD, &raw_comm);
  net = std::make_unique<ppipe::mpi::transport>(MPI_COMM_WORLD);
  benchmark::Initialize(&argc, argv);
  register_all();
  if (me == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    silent_reporter quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
  net.reset();
  MPI_Comm_free(&raw_comm);
  return 0;
}
