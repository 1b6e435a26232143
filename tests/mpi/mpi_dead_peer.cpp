// A process that dies in the middle of a step (SIGKILL, as `kill -9` does), under
// `mpirun --enable-recovery`, which lets the others run on: the rank whose wait times out first
// may have waited for a live neighbour (itself waiting for the dead one), and its message must
// still name the process that does not answer, with its replica and pipeline rank.
//   mpi_dead_peer pipeline   4 processes, one pipeline: process 2 dies
//   mpi_dead_peer replicas   4 processes, 2 replicas of a 2-rank pipeline: process 3 (replica 1,
//                            pipeline rank 1) dies
#include <chrono>
#include <cstdio>
#include <string_view>

#include <ppipe/mpi.hpp>

#include "faulty_model.hpp"

int main(int argc, char** argv) {
  const ppipe::mpi::session mpi(&argc, &argv);
  const bool replicas = argc > 1 && std::string_view(argv[1]) == "replicas";
  const int victim = replicas ? 3 : 2;
  mpi_test::faulty model(ppipe::layers::sequential::mlp({4, 8, 8, 8, 8, 2}, 3));
  ppipe::pipeline_options o;
  o.ranks = 0;
  o.microbatches = 4;
  o.timeout = std::chrono::milliseconds(1500);
  ppipe::mpi::pipeline<mpi_test::faulty> pipe(model, o, ppipe::layers::mse_loss{}, {},
                                              ppipe::mpi::replicated(MPI_COMM_WORLD, replicas ? 2 : 1));
  if (mpi.rank() == victim) {
    const int stage = pipe.transport().rank();
    model.arm(mpi_test::faulty::fault::die_in_forward, pipe.split().first(stage), 1);
  }
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{8, 4})};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{8, 2})};
  pipe.train_step(x, y);  // a step everybody finishes: connections are up
  pipe.train_step(x, y);
  std::printf("process %d: the step returned, but process %d died in it\n", mpi.rank(), victim);
  return 0;
}
