// g++ compiles the installed NCCL and MPI umbrellas; neither call below needs a GPU or mpiexec.
#include <cstdio>

#include <ppipe/mpi.hpp>
#include <ppipe/nccl.hpp>

int run_kernel();

int main() {
  try {
    ppipe::mpi::check(MPI_SUCCESS, "MPI_Barrier");
    const int nccl = ppipe::nccl::version();
    std::printf("NCCL %d (header %d), MPI %d.%d\n", nccl, NCCL_VERSION_CODE, MPI_VERSION, MPI_SUBVERSION);
    return run_kernel();
  } catch (const ppipe::error& e) {
    std::printf("%s\n", e.what());
    return 1;
  }
}
