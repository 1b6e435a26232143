#pragma once
// This process's rank in MPI_COMM_WORLD and the job's size, for the multi-process tests.

#include <mpi.h>

namespace mpi_test {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

inline int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

}  // namespace mpi_test
