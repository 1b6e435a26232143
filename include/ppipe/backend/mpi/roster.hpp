#pragma once
/// @file
/// @brief Who the processes of an MPI pipeline job are: the communicators ppipe duplicated (the
/// pipeline's, the replicas', the whole job's), where this process sits in each, and how messages
/// name a process so that a user can find it.

#include <mpi.h>

#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "ppipe/backend/mpi/communicator.hpp"
#include "ppipe/backend/mpi/error.hpp"
#include "ppipe/error.hpp"

namespace ppipe::mpi::detail {

/// The communicators of one process of a pipeline job and the names of their processes.
class roster {
 public:
  /// `pipeline`: the processes of one pipeline, rank r running pipeline rank r; `replicas`: the
  /// processes running this pipeline rank in every replica, or MPI_COMM_NULL. Both are duplicated;
  /// collective over both.
  roster(MPI_Comm pipeline, MPI_Comm replicas) {
    int initialized = 0;
    int finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized == 0 || finalized != 0) {
      ppipe::detail::fail(errc::invalid_argument, "the MPI transport needs MPI initialised (and not finalised); "
                          "construct a ppipe::mpi::session, or call MPI_Init_thread, first");
    }
    if (pipeline == MPI_COMM_NULL) {
      ppipe::detail::fail(errc::invalid_argument, "the MPI transport was given MPI_COMM_NULL as the pipeline's "
                          "communicator; pass MPI_COMM_WORLD or the communicator of one pipeline replica");
    }
    pipeline_ = duplicate(pipeline);
    PPIPE_MPI_CHECK(MPI_Comm_rank(pipeline_, &rank_));
    PPIPE_MPI_CHECK(MPI_Comm_size(pipeline_, &size_));
    world_of_ = world_ranks(pipeline_);
    if (replicas != MPI_COMM_NULL) {
      replicas_ = duplicate(replicas);
      PPIPE_MPI_CHECK(MPI_Comm_rank(replicas_, &replica_));
      PPIPE_MPI_CHECK(MPI_Comm_size(replicas_, &replica_count_));
      replica_world_of_ = world_ranks(replicas_);
      join_job();
    }
  }

  [[nodiscard]] MPI_Comm pipeline() const noexcept { return pipeline_; }
  /// The replicas' communicator; MPI_COMM_NULL with one replica.
  [[nodiscard]] MPI_Comm replica_comm() const noexcept { return replicas_; }
  [[nodiscard]] int rank() const noexcept { return rank_; }
  [[nodiscard]] int size() const noexcept { return size_; }
  [[nodiscard]] int replica() const noexcept { return replica_; }
  [[nodiscard]] int replica_count() const noexcept { return replica_count_; }

  /// Pipeline rank `r`: "rank 2", and where that is not the process's rank in MPI_COMM_WORLD, or
  /// with replicas, the process and the replica: "rank 1 of replica 2 (process 5)".
  [[nodiscard]] std::string describe_rank(int r) const {
    const bool known = r >= 0 && static_cast<std::size_t>(r) < world_of_.size();
    const int world = known ? world_of_[static_cast<std::size_t>(r)] : r;
    if (replica_count_ > 1) {
      return ppipe::detail::concat("rank ", r, " of replica ", replica_, " (process ", world, ")");
    }
    if (world == r) return ppipe::detail::concat("rank ", r);
    return ppipe::detail::concat("rank ", r, " (process ", world, ")");
  }

  /// This process's pipeline rank in replica `k`.
  [[nodiscard]] std::string describe_replica(int k) const {
    const bool known = k >= 0 && static_cast<std::size_t>(k) < replica_world_of_.size();
    return ppipe::detail::concat("rank ", rank_, " of replica ", k, " (process ",
                                 known ? replica_world_of_[static_cast<std::size_t>(k)] : -1, ")");
  }

  // Where inquiries travel after a timeout: the job's communicator with replicas, else the
  // pipeline's; this process's rank there, their number, and how a process there is named.
  [[nodiscard]] MPI_Comm inquiry_comm() const { return replica_count_ > 1 ? MPI_Comm(job_) : MPI_Comm(pipeline_); }
  [[nodiscard]] int inquiry_rank() const { return replica_count_ > 1 ? replica_ * size_ + rank_ : rank_; }
  [[nodiscard]] int inquiry_size() const { return size_ * replica_count_; }
  [[nodiscard]] std::string describe_process(int i) const {
    if (replica_count_ <= 1) return describe_rank(i);
    return ppipe::detail::concat("rank ", i % size_, " of replica ", i / size_, " (process ",
                                 job_world_[static_cast<std::size_t>(i)], ")");
  }

 private:
  // With replicas: a communicator of every process of the job, replica after replica (process
  // k * size_ + r runs pipeline rank r of replica k), for inquiries after a timeout, which must
  // reach a dead process in another replica and another pipeline rank.
  void join_job() {
    const int n = size_ * replica_count_;
    std::vector<int> gathered(static_cast<std::size_t>(n));
    PPIPE_MPI_CHECK(MPI_Allgather(replica_world_of_.data(), replica_count_, MPI_INT, gathered.data(), replica_count_,
                                  MPI_INT, pipeline_));
    job_world_.assign(static_cast<std::size_t>(n), -1);
    for (int r = 0; r < size_; ++r) {
      for (int k = 0; k < replica_count_; ++k) {
        job_world_[static_cast<std::size_t>(k * size_ + r)] =
            gathered[static_cast<std::size_t>(r * replica_count_ + k)];
      }
    }
    MPI_Group world = MPI_GROUP_NULL;
    MPI_Group job = MPI_GROUP_NULL;
    PPIPE_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world));
    const int code = MPI_Group_incl(world, n, job_world_.data(), &job);
    MPI_Group_free(&world);
    PPIPE_MPI_CHECK(code);
    MPI_Comm c = MPI_COMM_NULL;
    const int created = MPI_Comm_create_group(MPI_COMM_WORLD, job, 0, &c);
    MPI_Group_free(&job);
    PPIPE_MPI_CHECK(created);
    job_ = owned_comm(c);
    PPIPE_MPI_CHECK(MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN));
    int me = -1;
    PPIPE_MPI_CHECK(MPI_Comm_rank(c, &me));
    if (me != inquiry_rank()) {
      ppipe::detail::fail(errc::invalid_argument, "the replica communicator numbers the replicas differently on "
                          "different pipeline ranks (process ", job_world_[static_cast<std::size_t>(inquiry_rank())],
                          " is ", me, " in the job); give every pipeline rank a replica communicator whose rank k "
                          "is replica k, as ppipe::mpi::replicated() does");
    }
  }

  owned_comm pipeline_;
  owned_comm replicas_;                // or none (one replica)
  owned_comm job_;                     // with replicas: every process of the job (see join_job())
  std::vector<int> world_of_;          // per pipeline rank: its process's rank in MPI_COMM_WORLD
  std::vector<int> replica_world_of_;  // per replica: the MPI_COMM_WORLD rank running this pipeline rank
  std::vector<int> job_world_;         // per process of the job: its rank in MPI_COMM_WORLD
  int rank_ = 0;
  int size_ = 0;
  int replica_ = 0;
  int replica_count_ = 1;
};

static_assert(std::is_nothrow_move_constructible_v<roster> && std::is_nothrow_move_assignable_v<roster>);

}  // namespace ppipe::mpi::detail
