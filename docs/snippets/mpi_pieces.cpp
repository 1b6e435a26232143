// The pieces of a pipeline over MPI that docs/mpi.md shows, as a program the test suite runs with
// 2 processes (one pipeline) and 4 (two replicas of it): each process trains its own stages.
#include <cstdio>
#include <utility>

#include <ppipe/layers/layers.hpp>
#include <ppipe/mpi.hpp>
#include <ppipe/ppipe.hpp>

int main(int argc, char** argv) {
  ppipe::mpi::session mpi(&argc, &argv);  // MPI_Init_thread(FUNNELED) ... MPI_Finalize
  try {
    const int replicas = mpi.size() % 2 == 0 && mpi.size() > 2 ? 2 : 1;
    // Pipeline rank = rank in the communicator; with replicas > 1, that many data-parallel copies.
    ppipe::mpi::transport net = ppipe::mpi::replicated(MPI_COMM_WORLD, replicas);
    // Each process allocates only the weights of the layers it runs.
    auto model = ppipe::layers::sequential::mlp({8, 32, 32, 4}, 7, ppipe::layers::activation_kind::relu,
                                                ppipe::layers::deferred);
    const ppipe::layers::sgd sgd(0.05f);
    ppipe::pipeline_options options;
    options.ranks = 0;  // one per process of the pipeline's communicator
    options.microbatches = 4;
    ppipe::mpi::pipeline<ppipe::layers::sequential> pipe(
        model, options, ppipe::layers::mse_loss{}, [&](const ppipe::stage_info& s) { sgd.step(model, s); },
        std::move(net));
    for (int stage = 0; stage < pipe.split().num_stages(); ++stage) {
      if (pipe.is_local(stage)) std::printf("process %d runs stage %d\n", mpi.rank(), stage);
    }
    ppipe::payload x{ppipe::host_tensor(ppipe::shape{16, 8})};
    ppipe::payload y{ppipe::host_tensor(ppipe::shape{16, 4})};
    for (std::size_t i = 0; i < x[0].size(); ++i) x[0][i] = 0.1f * static_cast<float>(i % 7);
    for (std::size_t i = 0; i < y[0].size(); ++i) y[0][i] = 0.25f;
    double first = 0.0, last = 0.0;
    for (int step = 0; step < 20; ++step) {
      last = pipe.train_step(x, y);  // every process gets the batch loss
      if (step == 0) first = last;
    }
    std::printf("process %d: loss %.4f -> %.4f\n", mpi.rank(), first, last);
    return last < first ? 0 : 1;
  } catch (const ppipe::error& e) {
    std::fprintf(stderr, "process %d: %s\n", mpi.rank(), e.what());
    return 1;
  }
}
