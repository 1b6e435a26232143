// ppipe::nccl::transport and ppipe::nccl::backend over ppipe::mpi::transport, run under mpiexec as
// one process: what holds without a GPU (the concepts, the peers a rank warms up, the launcher's
// local rank), and, with one, a one-rank communicator that sends to itself through NCCL.

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <ppipe/mpi.hpp>
#include <ppipe/nccl.hpp>

#include "catch.hpp"

using ppipe_test::contains;
using nccl_transport = ppipe::nccl::transport<ppipe::mpi::transport>;

static_assert(ppipe::stream_transport<nccl_transport>);
static_assert(ppipe::distributed_transport<nccl_transport>);
static_assert(ppipe::transfer_model_of<nccl_transport> == ppipe::transfer_model::rendezvous);
static_assert(ppipe::stream_replicas<nccl_transport>);
// Every member compiles, those no case here calls (the replicas' split and all-reduce) included.
template class ppipe::nccl::transport<ppipe::mpi::transport>;
static_assert(ppipe::backend<ppipe::nccl::backend<ppipe::mpi::transport>>);

TEST_CASE("nccl::neighbours: the ranks before and after, wrapping, each once", "[nccl]") {
  CHECK(ppipe::nccl::neighbours(0, 1).empty());
  CHECK(ppipe::nccl::neighbours(0, 2) == std::vector<int>{1});
  CHECK(ppipe::nccl::neighbours(1, 2) == std::vector<int>{0});
  CHECK(ppipe::nccl::neighbours(0, 4) == std::vector<int>{3, 1});
  CHECK(ppipe::nccl::neighbours(2, 4) == std::vector<int>{1, 3});
}

namespace {

// Sets an environment variable for a scope, restoring what it was.
class scoped_env {
 public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (const char* was = std::getenv(name)) was_ = was;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~scoped_env() {
    if (was_) {
      setenv(name_, was_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  const char* name_;
  std::optional<std::string> was_;
};

}  // namespace

TEST_CASE("nccl::local_rank: what the launcher says, Open MPI's first, then Slurm's", "[nccl]") {
  const scoped_env ompi("OMPI_COMM_WORLD_LOCAL_RANK", nullptr);
  const scoped_env mpich("MPI_LOCALRANKID", nullptr);
  const scoped_env torch("LOCAL_RANK", nullptr);
  {
    const scoped_env slurm("SLURM_LOCALID", nullptr);
    CHECK(ppipe::nccl::local_rank() == 0);
  }
  {
    const scoped_env slurm("SLURM_LOCALID", "3");
    CHECK(ppipe::nccl::local_rank() == 3);
    const scoped_env open("OMPI_COMM_WORLD_LOCAL_RANK", "1");
    CHECK(ppipe::nccl::local_rank() == 1);
  }
  const scoped_env bad("SLURM_LOCALID", "two");
  CHECK_THROWS_WITH(ppipe::nccl::local_rank(), contains("SLURM_LOCALID is \"two\", not a local rank"));
}

TEST_CASE("nccl::transport: one rank sends to itself through NCCL, and a failed run makes a new communicator",
          "[gpu]") {
  if (ppipe::cuda::device_count() < 1) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  nccl_transport net(ppipe::mpi::transport(MPI_COMM_WORLD), 0);
  REQUIRE(net.num_ranks() == 1);
  ppipe::cuda::device d(ppipe::cuda::device_options{0, 0});
  d.bind();
  const auto s = d.create_stream("rank 0 transfers");
  CHECK(net.warm_up(d, s, ppipe::nccl::neighbours(0, 1), ppipe::deadline_after(std::chrono::seconds(30))) >= 0.0);
  std::vector<std::byte> host(64);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<std::byte>(i * 7 + 1);
  auto* from = static_cast<std::byte*>(d.allocate(host.size(), s));
  auto* into = static_cast<std::byte*>(d.allocate(host.size(), s));
  auto* pinned = static_cast<std::byte*>(d.allocate_host(host.size()));
  std::memcpy(pinned, host.data(), host.size());
  d.copy_async(s, from, pinned, host.size());
  d.zero_async(s, into, host.size());
  net.begin_group(0);
  net.send(0, 0, from, host.size(), d, s, "to itself");
  net.recv(0, 0, into, host.size(), d, s, "from itself");
  net.end_group(0);
  std::memset(pinned, 0, host.size());
  d.copy_async(s, pinned, into, host.size());
  REQUIRE(d.synchronize(s, ppipe::deadline_after(std::chrono::seconds(30))) == ppipe::wait_status::ready);
  CHECK(std::memcmp(pinned, host.data(), host.size()) == 0);
  CHECK(net.poll_failure() == nullptr);
  // A failed run: abort() asks, the watchdog's poll aborts the communicator, and the conclusion
  // makes a new one that carries the next transfers.
  net.abort();
  CHECK(net.poll_failure() == nullptr);
  CHECK(net.communicator() == nullptr);
  ppipe::rank_outcome failed;
  failed.what = ppipe::rank_outcome::outcome::failed;
  failed.message = "a test failure";
  const ppipe::run_verdict verdict = net.conclude(failed, ppipe::deadline_after(std::chrono::seconds(30)));
  CHECK_FALSE(verdict.ok);
  CHECK(net.communicator() == nullptr);
  net.reset();  // the next run makes a new communicator
  CHECK(net.communicator() != nullptr);
  net.begin_group(0);
  net.send(0, 0, from, host.size(), d, s, "to itself");
  net.recv(0, 0, into, host.size(), d, s, "from itself");
  net.end_group(0);
  REQUIRE(d.synchronize(s, ppipe::deadline_after(std::chrono::seconds(30))) == ppipe::wait_status::ready);
  d.release(from, s);
  d.release(into, s);
  REQUIRE(d.synchronize(s, ppipe::deadline_after(std::chrono::seconds(30))) == ppipe::wait_status::ready);
  d.release_host(pinned);
}
