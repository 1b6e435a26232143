// The NCCL transport against raw ncclSend/ncclRecv, in the same run (target: ppipe within 5% of
// raw NCCL at every size).
//
// self/<bytes>: one process, one GPU, a one-rank communicator whose rank sends to itself (what a
// single GPU allows: NCCL 2.28 refuses two ranks on one device). One iteration is two blocks of 20
// grouped exchanges of <bytes>, one after the other on the same stream and communicator, each
// timed on the host from its first call to the stream's synchronization:
//   raw    ncclGroupStart, ncclSend, ncclRecv (ncclUint8), ncclGroupEnd, polling
//          ncclCommGetAsyncError while the non-blocking communicator says ncclInProgress;
//   ppipe  ppipe::nccl::transport's begin_group, send, recv, end_group, as the executor issues a
//          group (with the transfer's name kept for hang reports).
// The blocks alternate, so that both see the same state of the GPU and its clocks.
// Counters (per repetition): raw_us and ppipe_us (per exchange), ppipe_vs_raw (the time ratio;
// 1.05 is the target) and raw_gb_per_s (bytes moved per second; 1 GB = 1e9 B).
//
// Needs a GPU: on a machine without one every case reports "no CUDA device". Run it as one
// process (MPI starts as a singleton, or mpirun -np 1):
//   build/gpu/benchmarks/ppipe_bench_nccl --benchmark_repetitions=3
// scripts/gpu-check.sh runs it where NCCL and MPI are installed.
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>

#include <benchmark/benchmark.h>

#include <ppipe/mpi.hpp>
#include <ppipe/nccl.hpp>

namespace {

using clock_type = std::chrono::steady_clock;
using nccl_transport = ppipe::nccl::transport<ppipe::mpi::transport>;
constexpr int block = 20;

// The GPU, its stream, the transport and two buffers of the largest size, made on first use.
struct rig {
  ppipe::cuda::device device{ppipe::cuda::device_options{0, 0}};
  ppipe::cuda::device::stream stream;
  std::optional<nccl_transport> net;
  std::byte* from = nullptr;
  std::byte* into = nullptr;

  explicit rig(std::size_t bytes) {
    device.bind();
    stream = device.create_stream("transfers");
    net.emplace(ppipe::mpi::transport(MPI_COMM_WORLD), 0);
    static_cast<void>(net->warm_up(device, stream, {}, ppipe::deadline_after(std::chrono::seconds(60))));
    from = static_cast<std::byte*>(device.allocate(bytes, stream));
    into = static_cast<std::byte*>(device.allocate(bytes, stream));
    device.zero_async(stream, from, bytes);
    wait();
  }
  rig(const rig&) = delete;
  rig& operator=(const rig&) = delete;
  ~rig() {
    device.release(from, stream);
    device.release(into, stream);
    static_cast<void>(device.synchronize(stream, ppipe::deadline_after(std::chrono::seconds(60))));
  }
  void wait() {
    if (device.synchronize(stream, ppipe::deadline_after(std::chrono::seconds(60))) != ppipe::wait_status::ready) {
      ppipe::detail::fail(ppipe::errc::timeout, "the benchmark's stream did not finish in 60 s");
    }
  }
};

constexpr std::size_t largest = std::size_t{64} << 20;
std::unique_ptr<rig> the_rig;

void check(ncclResult_t r, ncclComm_t comm) {
  while (r == ncclInProgress) ncclCommGetAsyncError(comm, &r);
  if (r != ncclSuccess) ppipe::detail::fail(ppipe::errc::backend, "NCCL: ", ncclGetErrorString(r));
}

double raw_block(rig& r, std::size_t bytes) {
  ncclComm_t comm = r.net->communicator();
  const auto start = clock_type::now();
  for (int i = 0; i < block; ++i) {
    check(ncclGroupStart(), comm);
    check(ncclSend(r.from, bytes, ncclUint8, 0, comm, r.stream.handle()), comm);
    check(ncclRecv(r.into, bytes, ncclUint8, 0, comm, r.stream.handle()), comm);
    check(ncclGroupEnd(), comm);
  }
  r.wait();
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

double ppipe_block(rig& r, std::size_t bytes) {
  const auto start = clock_type::now();
  for (int i = 0; i < block; ++i) {
    r.net->begin_group(0);
    r.net->send(0, 0, r.from, bytes, r.device, r.stream, "0SEND_F0 of stage 0");
    r.net->recv(0, 0, r.into, bytes, r.device, r.stream, "0RECV_F0 of stage 1");
    r.net->end_group(0);
  }
  r.wait();
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

void self(benchmark::State& state) {
  if (ppipe::cuda::device_count() < 1) {
    state.SkipWithError("no CUDA device");
    return;
  }
  if (!the_rig) the_rig = std::make_unique<rig>(largest);
  rig& r = *the_rig;
  const auto bytes = static_cast<std::size_t>(state.range(0));
  static_cast<void>(raw_block(r, bytes));  // untimed: both paths warm
  static_cast<void>(ppipe_block(r, bytes));
  double raw_s = 0.0;
  double ppipe_s = 0.0;
  for (auto _ : state) {
    const double raw = raw_block(r, bytes);
    const double piped = ppipe_block(r, bytes);
    raw_s += raw;
    ppipe_s += piped;
    state.SetIterationTime(raw + piped);
  }
  const double exchanges = static_cast<double>(state.iterations()) * block;
  state.counters["raw_us"] = raw_s / exchanges * 1e6;
  state.counters["ppipe_us"] = ppipe_s / exchanges * 1e6;
  state.counters["ppipe_vs_raw"] = raw_s > 0.0 ? ppipe_s / raw_s : 0.0;
  state.counters["raw_gb_per_s"] = raw_s > 0.0 ? static_cast<double>(bytes) * exchanges / raw_s / 1e9 : 0.0;
}

BENCHMARK(self)->Arg(4 << 10)->Arg(256 << 10)->Arg(4 << 20)->Arg(64 << 20)->UseManualTime()->Iterations(10);

}  // namespace

int main(int argc, char** argv) {
  const ppipe::mpi::session mpi(&argc, &argv);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  the_rig.reset();
  return 0;
}
