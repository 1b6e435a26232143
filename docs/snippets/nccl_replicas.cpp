// Data-parallel replicas over NCCL as docs/nccl.md shows them: R copies of a pipeline, one process
// per GPU, the NCCL communicators split from one of the whole job. Built where NCCL and MPI are;
// it needs a GPU per process to run (mpiexec -np 4: two replicas of a 2-rank pipeline).
#include <cstdio>
#include <utility>

#include <ppipe/mpi.hpp>
#include <ppipe/nccl.hpp>

int main(int argc, char** argv) {
  ppipe::mpi::session mpi(&argc, &argv);
  if (ppipe::cuda::device_count() == 0) {
    std::printf("no CUDA device: nothing to do\n");
    return 0;
  }
  try {
    const int R = mpi.size() % 2 == 0 && mpi.size() > 2 ? 2 : 1;
    ppipe::mpi::transport control = ppipe::mpi::replicated(MPI_COMM_WORLD, R);
    ppipe::nccl::transport<ppipe::mpi::transport> net(std::move(control), ppipe::nccl::process_gpu());
    std::printf("process %d: pipeline rank %d of %d, one of %d replicas\n", mpi.rank(), net.rank(), net.num_ranks(),
                net.replicas());
    return 0;
  } catch (const ppipe::error& e) {
    std::fprintf(stderr, "process %d: %s\n", mpi.rank(), e.what());
    return 1;
  }
}
