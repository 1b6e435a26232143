#pragma once
/// @file
/// @brief MPI's lifetime (ppipe::mpi::session) and the split of a job into data-parallel
/// replicas of one pipeline (ppipe::mpi::replicated).

#include <mpi.h>

#include <cstdio>
#include <string>

#include "ppipe/backend/mpi/communicator.hpp"
#include "ppipe/backend/mpi/error.hpp"
#include "ppipe/backend/mpi/transport.hpp"
#include "ppipe/error.hpp"

namespace ppipe::mpi {

/// @brief The name of an MPI thread level, e.g. "MPI_THREAD_FUNNELED".
/// @param level an MPI thread level (MPI_THREAD_SINGLE to MPI_THREAD_MULTIPLE)
/// @return its name, or "thread level N" for a value MPI does not define
inline std::string thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
    default: return ppipe::detail::concat("thread level ", level);
  }
}

/// @brief Initialises MPI for the program's lifetime (MPI_Init_thread) and finalises it at the end
/// of its scope, unless MPI was already initialised by someone else, who then finalises it too.
/// ppipe's MPI transport is used by one thread, the one calling the pipeline, so FUNNELED (the
/// calling thread is the main thread) is enough.
class session {
 public:
  /// @brief Initialises MPI without the program's arguments, at MPI_THREAD_FUNNELED.
  /// @throws ppipe::error as the other constructor does
  session() : session(nullptr, nullptr) {}
  /// @brief Initialises MPI (MPI_Init_thread) unless it already is, and checks the thread level.
  /// @param argc the address of main's argc (or null), passed to MPI_Init_thread
  /// @param argv the address of main's argv (or null), passed to MPI_Init_thread
  /// @param required the thread level ppipe's use of MPI needs; MPI_THREAD_SERIALIZED for
  /// ppipe::mpi::p2p_transport
  /// @throws ppipe::error (errc::backend) when MPI_Init_thread fails, or when MPI provides a lower
  /// thread level than `required`
  session(int* argc, char*** argv, int required = MPI_THREAD_FUNNELED) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized != 0) {
      MPI_Query_thread(&provided_);
    } else {
      PPIPE_MPI_CHECK(MPI_Init_thread(argc, argv, required, &provided_));
      owner_ = true;
    }
    if (provided_ < required) {
      ppipe::detail::fail(errc::backend, "MPI provides ", thread_level_name(provided_), " but ",
                          thread_level_name(required), " was asked for; use an MPI built with thread support, or "
                          "ask for less");
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  session(const session&) = delete;
  session& operator=(const session&) = delete;
  ~session() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owner_ && finalized == 0) MPI_Finalize();
  }

  /// @brief This process's rank in MPI_COMM_WORLD.
  /// @return the rank, read once at construction
  [[nodiscard]] int rank() const noexcept { return rank_; }
  /// @brief The number of processes in MPI_COMM_WORLD.
  /// @return the job's process count
  [[nodiscard]] int size() const noexcept { return size_; }
  /// @brief The thread level MPI provides.
  /// @return an MPI thread level, at least the one asked for (see thread_level_name())
  [[nodiscard]] int thread_level() const noexcept { return provided_; }

 private:
  bool owner_ = false;
  int provided_ = MPI_THREAD_SINGLE;
  int rank_ = 0;
  int size_ = 1;
};

namespace detail {

/// The two communicators of a process of a replicated job: its pipeline's, and the processes that
/// run its pipeline rank in every replica.
struct replica_split {
  owned_comm pipeline;
  owned_comm same_stage;
};

/// Splits `world` (collective over it) into `replicas` pipelines as replicated() describes.
inline replica_split split_replicas(MPI_Comm world, int replicas) {
  int size = 0;
  int rank = 0;
  PPIPE_MPI_CHECK(MPI_Comm_size(world, &size));
  PPIPE_MPI_CHECK(MPI_Comm_rank(world, &rank));
  if (replicas < 1 || size % replicas != 0) {
    ppipe::detail::fail(errc::invalid_argument, "cannot split ", size, " processes into ", replicas,
                        " replicas of one pipeline; give a number of replicas that divides the process count");
  }
  replica_split out;
  MPI_Comm split = MPI_COMM_NULL;
  PPIPE_MPI_CHECK(MPI_Comm_split(world, rank % replicas, rank / replicas, &split));
  out.pipeline = owned_comm(split);
  PPIPE_MPI_CHECK(MPI_Comm_split(world, rank / replicas, rank % replicas, &split));
  out.same_stage = owned_comm(split);
  return out;
}

}  // namespace detail

/// @brief A transport for one of `replicas` data-parallel copies of a pipeline, splitting `world`
/// (collective over it) as Megatron-LM does: process w runs pipeline rank w / replicas of replica
/// w % replicas, so the processes that all-reduce the same stage's gradients are neighbours (on one
/// node, when a node's processes are consecutive ranks) and each pipeline spans the job.
/// @tparam Transport the transport to make: ppipe::mpi::transport, or ppipe::mpi::p2p_transport
/// (the CPU model of NCCL), built from (pipeline, replicas, options)
/// @param world the job's processes
/// @param replicas how many copies of the pipeline; divides world's size
/// @param options the transport's options
/// @return this process's transport
template <class Transport = transport>
Transport replicated(MPI_Comm world, int replicas, transport_options options = {}) {
  // The transport duplicates both, so the split ones are freed on return.
  const detail::replica_split split = detail::split_replicas(world, replicas);
  return Transport(split.pipeline, replicas > 1 ? MPI_Comm(split.same_stage) : MPI_COMM_NULL, options);
}

}  // namespace ppipe::mpi
