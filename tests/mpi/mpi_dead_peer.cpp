// A process that dies in the middle of a step (SIGKILL, as `kill -9` does), under
// `mpirun --enable-recovery`, which lets the others run on: the rank whose wait times out first
// may have waited for a live neighbour (itself waiting for the dead one), and its message must
// still name the process that does not answer, with its replica and pipeline rank.
//   mpi_dead_peer pipeline[-large]   one pipeline: process 2 dies (process 1 with 2 processes)
//   mpi_dead_peer replicas[-large]   4 processes, 2 replicas of a 2-rank pipeline: process 3
//                                    (replica 1, pipeline rank 1) dies
// With `-large` the payloads are 1 MiB (activations 2^16 wide), else a few dozen bytes.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string_view>
#include <vector>

#include <ppipe/mpi.hpp>

#include "faulty_model.hpp"
#include "world.hpp"

namespace {

ppipe::layers::sequential model_for(bool large, int p) {
  if (!large) return ppipe::layers::sequential::mlp({4, 8, 8, 8, 8, 2}, 3);
  std::vector<ppipe::layers::any_layer> layers;
  for (int i = 0; i < 2 * p; ++i) layers.emplace_back(ppipe::layers::activation(ppipe::layers::activation_kind::relu));
  return ppipe::layers::sequential(std::move(layers));
}

}  // namespace

int main(int argc, char** argv) {
  const ppipe::mpi::session mpi(&argc, &argv);
  const std::string_view mode = argc > 1 ? argv[1] : "pipeline";
  const bool replicas = mode.starts_with("replicas");
  const bool large = mode.ends_with("-large");
  const int victim = replicas ? 3 : (mpi_test::world_size() > 2 ? 2 : 1);
  const std::int64_t width = large ? std::int64_t{1} << 16 : 4;
  const std::int64_t rows = large ? 16 : 8;  // 4 microbatches: 1 MiB each when large
  mpi_test::faulty model(model_for(large, mpi_test::world_size()));
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
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{rows, width})};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{rows, large ? width : 2})};
  pipe.train_step(x, y);  // a step everybody finishes: connections are up
  pipe.train_step(x, y);
  std::printf("process %d: the step returned, but process %d died in it\n", mpi.rank(), victim);
  return 0;
}
