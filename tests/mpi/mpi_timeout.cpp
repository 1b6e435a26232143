// A rank whose peer never answers: rank 0's first layer sleeps for 30 s in its first forward, and
// rank 1, waiting for that activation with a 400 ms timeout, must name rank 0 and the action, and
// then end the job rather than hang.
//   mpi_timeout abort   the default policy: rank 1 prints the error and calls MPI_Abort
//   mpi_timeout throw   on_timeout = throw_error: rank 1 catches the ppipe::error, checks that the
//                       pipeline refuses to run again, prints both, and ends the job itself
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

#include <ppipe/mpi.hpp>

#include "faulty_model.hpp"

int main(int argc, char** argv) {
  const ppipe::mpi::session mpi(&argc, &argv);
  const bool throw_mode = argc > 1 && std::string_view(argv[1]) == "throw";
  mpi_test::faulty model(ppipe::layers::sequential::mlp({4, 8, 8, 2}, 3));
  model.arm(mpi_test::faulty::fault::sleep_in_forward, 0, 0);
  ppipe::mpi::transport_options net_options;
  if (throw_mode) net_options.on_timeout = ppipe::mpi::timeout_policy::throw_error;
  ppipe::pipeline_options o;
  o.ranks = 0;
  o.microbatches = 2;
  o.timeout = std::chrono::milliseconds(400);
  ppipe::mpi::pipeline<mpi_test::faulty> pipe(model, o, ppipe::layers::mse_loss{}, {},
                                              ppipe::mpi::transport(MPI_COMM_WORLD, MPI_COMM_NULL, net_options));
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{4, 4})};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{4, 2})};
  try {
    pipe.train_step(x, y);
    std::printf("rank %d: the step returned, but rank 0 never answered\n", pipe.transport().rank());
  } catch (const ppipe::error& e) {
    std::printf("rank %d caught: %s\n", pipe.transport().rank(), e.what());
    try {
      pipe.train_step(x, y);
    } catch (const ppipe::error& again) {
      std::printf("rank %d, next step: %s\n", pipe.transport().rank(), again.what());
    }
    std::fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, 5);
  }
  return 0;
}
