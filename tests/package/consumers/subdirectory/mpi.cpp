// MPI use through the ppipe::mpi target of a subproject build (links only; MPI is not started).
#include <ppipe/mpi.hpp>

int main() {
  ppipe::mpi::check(MPI_SUCCESS, "MPI_Barrier");
  return 0;
}
