// The MPI transport against raw MPI point-to-point, in the same run (target: ppipe
// within 10% of raw MPI, in latency for small payloads and in bandwidth for 4 MiB).
//
// pingpong/<bytes>: one iteration is four blocks of round trips of <bytes>/4 floats between the
// two processes, one after the other, each timed on rank 0:
//   raw          MPI_Send then MPI_Recv (MPI_FLOAT, blocking) on a duplicate of MPI_COMM_WORLD;
//                rank 1 receives, then sends back. Rank 0 sends from one buffer and receives
//                into another, then swaps them; rank 1 receives into and sends from one. The
//                buffers are the memory of the tensors ppipe sends, so that every block moves
//                the same memory (at 4 MiB, what the cache holds shows in the times).
//   ppipe        the same floats as a one-tensor ppipe::payload through ppipe::mpi::transport,
//                called as the executor calls it in a pipeline, whose boundary shapes both ranks
//                know ahead (ppipe::agreed_shapes): rank 0 post_send, post_recv, complete_recv,
//                complete_send; rank 1 post_recv, complete_recv, post_send, complete_send. Each
//                receive is posted with a buffer of the agreed shape (what the executor takes
//                from the receiving stage's pool), and the tensor travels as its values alone;
//                rank 0 alternates two payloads (the one it sends is still being read), as raw
//                does its buffers.
//   described    the same, with the payload described: a header of its shapes goes with it (the
//                values in the same message up to 16 KiB, in a message of their own above), as
//                when the receiver does not know the shapes ahead; each receive is still handed
//                a buffer of the right shape to fill.
//   raw_one_buffer  raw again, rank 0 sending from and receiving into one buffer: what a
//                ping-pong with blocking calls may do, though a pipeline never receives into the
//                buffer it sends (a non-blocking send's buffer is in use until it completes).
// The blocks are short (a few milliseconds) and interleaved, so the four see the same state of a
// shared machine; on the project's VM raw MPI's latency moves by 2 to 4x for tens of seconds at a
// time, which separate benchmarks would compare against each other.
// Counters (per repetition, over all its blocks): raw_us, ppipe_us, described_us and
// raw_one_buffer_us (one way: half a round trip, in microseconds); ppipe_vs_raw,
// described_vs_raw and ppipe_vs_raw_one_buffer (the time ratios; 1.10 is the target); and
// raw_gb_per_s and ppipe_gb_per_s (2 x bytes per round trip / its time; 1 GB = 1e9 B).
//
// Two processes, each iteration count fixed, so both ranks run the same sequence of round trips;
// only rank 0 reports (rank 1 ignores --benchmark_out*). Each repetition starts with a few untimed
// round trips of each kind and a barrier. Every wait of a repetition shares one deadline, taken
// when it starts: a clock read costs about 24 ns on the project's VM, a sixth of raw MPI's 8-byte
// latency, and raw MPI is timed without one. (The executor takes one per wait; that is part of its
// per-action overhead, which ppipe_bench_runtime measures.) ppipe's runs: reset() at the start of
// each repetition, conclude() at its end, on both ranks. Run:
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

using clock_type = std::chrono::steady_clock;

int me = 0;                                    // this process's rank: 0 times, 1 echoes
MPI_Comm raw_comm = MPI_COMM_NULL;             // raw MPI's own communicator
std::unique_ptr<ppipe::mpi::transport> net;    // built after MPI_Init, freed before MPI_Finalize
ppipe::deadline_clock::time_point deadline;    // of every wait of the running repetition
constexpr int warmup_round_trips = 16;

// Rank 0 sends `data` and receives into `spare`, then swaps them, as ppipe's round trip does
// (with `one_buffer`, it sends from and receives into `data`); rank 1 receives into and sends
// from `data`. Raw MPI moves the same tensors' memory as ppipe does: at 4 MiB, a block that
// found its buffers in the cache would be faster for that reason alone.
void raw_round_trip(ppipe::payload& data, ppipe::payload& spare, bool one_buffer) {
  float* out = data.front().data();
  float* in = one_buffer ? out : spare.front().data();
  const int n = static_cast<int>(data.front().size());
  if (me == 0) {
    MPI_Send(out, n, MPI_FLOAT, 1, 0, raw_comm);
    MPI_Recv(in, n, MPI_FLOAT, 1, 0, raw_comm, MPI_STATUS_IGNORE);
    if (!one_buffer) std::swap(data, spare);
  } else {
    MPI_Recv(out, n, MPI_FLOAT, 0, 0, raw_comm, MPI_STATUS_IGNORE);
    MPI_Send(out, n, MPI_FLOAT, 0, 0, raw_comm);
  }
}

// One round trip through the transport; false when a wait fails. `spare` is rank 0's second
// payload (the buffer of its receive while `data` is being sent). With `described`, the payloads
// go with their headers instead of in the agreed form.
bool ppipe_round_trip(ppipe::payload& data, ppipe::payload& spare, bool described) {
  const auto ok = [](ppipe::wait_status st) { return st == ppipe::wait_status::ready; };
  const auto send = [&](int from, int to, const ppipe::payload& p) {
    return described ? net->post_send(from, to, p) : net->post_send(from, to, p, ppipe::agreed_shapes);
  };
  const auto recv = [&](int from, int to, ppipe::payload& into) {
    return described ? net->post_recv(from, to) : net->post_recv(from, to, ppipe::agreed_shapes, std::move(into));
  };
  if (me == 0) {
    auto sent = send(0, 1, data);
    auto back = recv(1, 0, spare);
    if (!ok(net->complete_recv(back, spare, deadline)) || !ok(net->complete_send(sent, deadline))) return false;
    std::swap(data, spare);
  } else {
    auto in = recv(0, 1, data);
    if (!ok(net->complete_recv(in, data, deadline))) return false;
    auto out = send(1, 0, data);
    if (!ok(net->complete_send(out, deadline))) return false;
  }
  return true;
}

void pingpong(benchmark::State& state, std::int64_t bytes, int block) {
  ppipe::payload data{ppipe::host_tensor(ppipe::shape{bytes / 4})};
  ppipe::payload spare{ppipe::host_tensor(ppipe::shape{bytes / 4})};
  deadline = ppipe::deadline_after(std::chrono::minutes(2));
  net->reset();
  bool fine = true;
  for (int i = 0; i < warmup_round_trips; ++i) {
    raw_round_trip(data, spare, false);
    fine = fine && ppipe_round_trip(data, spare, false) && ppipe_round_trip(data, spare, true);
  }
  MPI_Barrier(raw_comm);
  double raw_s = 0;
  double ppipe_s = 0;
  double described_s = 0;
  double one_buffer_s = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    for (int i = 0; i < block; ++i) raw_round_trip(data, spare, false);
    const auto t1 = clock_type::now();
    for (int i = 0; i < block && fine; ++i) fine = ppipe_round_trip(data, spare, false);
    const auto t2 = clock_type::now();
    for (int i = 0; i < block && fine; ++i) fine = ppipe_round_trip(data, spare, true);
    const auto t3 = clock_type::now();
    for (int i = 0; i < block; ++i) raw_round_trip(data, spare, true);
    const auto t4 = clock_type::now();
    if (!fine) break;
    one_buffer_s += std::chrono::duration<double>(t4 - t3).count();
    raw_s += std::chrono::duration<double>(t1 - t0).count();
    ppipe_s += std::chrono::duration<double>(t2 - t1).count();
    described_s += std::chrono::duration<double>(t3 - t2).count();
  }
  const ppipe::run_verdict verdict = net->conclude(ppipe::rank_outcome{}, deadline);
  benchmark::DoNotOptimize(data.front().data());
  if (!fine) {
    state.SkipWithError("a transfer through the transport did not complete");
    return;
  }
  if (!verdict.ok) {
    state.SkipWithError(("the ranks' run failed: " + verdict.message).c_str());
    return;
  }
  const double trips = static_cast<double>(state.iterations()) * block;
  const auto one_way_us = [&](double seconds) { return seconds / trips / 2 * 1e6; };
  const auto gb_per_s = [&](double seconds) { return 2.0 * static_cast<double>(bytes) * trips / seconds / 1e9; };
  state.counters["raw_us"] = one_way_us(raw_s);
  state.counters["ppipe_us"] = one_way_us(ppipe_s);
  state.counters["described_us"] = one_way_us(described_s);
  state.counters["ppipe_vs_raw"] = ppipe_s / raw_s;
  state.counters["described_vs_raw"] = described_s / raw_s;
  state.counters["raw_one_buffer_us"] = one_way_us(one_buffer_s);
  state.counters["ppipe_vs_raw_one_buffer"] = ppipe_s / one_buffer_s;
  state.counters["raw_gb_per_s"] = gb_per_s(raw_s);
  state.counters["ppipe_gb_per_s"] = gb_per_s(ppipe_s);
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
    int block;  // round trips per block: a few milliseconds
    benchmark::IterationCount blocks;
  };
  // About 1 to 2 s per repetition on the project's 2-core VM.
  for (const size s : {size{8, 5000, 100}, size{1024, 5000, 60}, size{64 * 1024, 100, 60}, size{4 * 1024 * 1024, 4, 60}}) {
    benchmark::RegisterBenchmark(("pingpong/" + std::to_string(s.bytes)).c_str(), pingpong, s.bytes, s.block)
        ->Iterations(s.blocks)->UseRealTime()->Unit(benchmark::kMillisecond);
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
