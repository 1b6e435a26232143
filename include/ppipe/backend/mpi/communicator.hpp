#pragma once
/// @file
/// @brief A communicator that ppipe owns: duplicated from the program's, freed with its owner, and
/// the MPI_COMM_WORLD rank of each of its processes (what messages name).

#include <mpi.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "ppipe/backend/mpi/error.hpp"

namespace ppipe::mpi::detail {

/// An MPI communicator that ppipe frees (unless MPI is finalised by then). The one hand-written
/// move in the backend: a class that holds these moves by default.
class owned_comm {
 public:
  owned_comm() = default;
  explicit owned_comm(MPI_Comm c) : comm_(c) {}
  owned_comm(owned_comm&& other) noexcept : comm_(std::exchange(other.comm_, MPI_COMM_NULL)) {}
  owned_comm& operator=(owned_comm&& other) noexcept {
    if (this != &other) {
      release();
      comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
    }
    return *this;
  }
  owned_comm(const owned_comm&) = delete;
  owned_comm& operator=(const owned_comm&) = delete;
  ~owned_comm() { release(); }
  operator MPI_Comm() const noexcept { return comm_; }  // a handle, used where MPI takes the communicator

 private:
  void release() noexcept {
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (comm_ != MPI_COMM_NULL && finalized == 0) MPI_Comm_free(&comm_);
    comm_ = MPI_COMM_NULL;
  }
  MPI_Comm comm_ = MPI_COMM_NULL;
};

/// A duplicate of `c` whose errors are returned, not fatal.
inline owned_comm duplicate(MPI_Comm c) {
  MPI_Comm dup = MPI_COMM_NULL;
  PPIPE_MPI_CHECK(MPI_Comm_dup(c, &dup));
  owned_comm out(dup);
  PPIPE_MPI_CHECK(MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN));
  return out;
}

/// The rank in MPI_COMM_WORLD of each process of `c`: what messages name, so that a user finds it.
inline std::vector<int> world_ranks(MPI_Comm c) {
  MPI_Group group = MPI_GROUP_NULL;
  MPI_Group world = MPI_GROUP_NULL;
  PPIPE_MPI_CHECK(MPI_Comm_group(c, &group));
  PPIPE_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world));
  int n = 0;
  MPI_Group_size(group, &n);
  std::vector<int> mine(static_cast<std::size_t>(n));
  std::vector<int> out(mine.size());
  for (int i = 0; i < n; ++i) mine[static_cast<std::size_t>(i)] = i;
  const int code = MPI_Group_translate_ranks(group, n, mine.data(), world, out.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  PPIPE_MPI_CHECK(code);
  return out;
}

}  // namespace ppipe::mpi::detail
