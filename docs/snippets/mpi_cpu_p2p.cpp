// The MPI model of the NCCL backend that docs/mpi.md shows, as a program the test suite runs with
// 2 and 4 processes: one pipeline rank per process, every transfer an NCCL-like operation on the rank's
// transfer stream. The kit's layers compute on host tensors, as host work on the stage's stream.
#include <cstdio>

#include <ppipe/layers/layers.hpp>
#include <ppipe/mpi.hpp>
#include <ppipe/ppipe.hpp>

int main(int argc, char** argv) {
  ppipe::mpi::session mpi(&argc, &argv, MPI_THREAD_SERIALIZED);
  try {
    auto model = ppipe::layers::sequential::mlp({8, 32, 32, 4}, 7);
    const ppipe::layers::sgd sgd(0.05f);
    const auto hook = [&](const ppipe::stage_info& s) { sgd.step(model, s); };
    ppipe::pipeline_options options;
    options.ranks = 0;  // one per process
    options.microbatches = 4;
    const ppipe::layers::mse_loss loss;
    using backend = ppipe::cpu_stream_backend_with<ppipe::mpi::cpu_p2p_config>;
    ppipe::pipeline<ppipe::layers::sequential, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, backend>
        pipe(model, options, loss, hook, ppipe::mpi::p2p_transport(MPI_COMM_WORLD));
    ppipe::payload x{ppipe::host_tensor(ppipe::shape{16, 8})};
    ppipe::payload y{ppipe::host_tensor(ppipe::shape{16, 4})};
    for (std::size_t i = 0; i < x[0].size(); ++i) x[0][i] = 0.1f * static_cast<float>(i % 7);
    for (std::size_t i = 0; i < y[0].size(); ++i) y[0][i] = 0.25f;
    double first = 0.0, last = 0.0;
    for (int step = 0; step < 20; ++step) {
      last = pipe.train_step(x, y);
      if (step == 0) first = last;
    }
    std::printf("process %d: loss %.4f -> %.4f\n", mpi.rank(), first, last);
    return last < first ? 0 : 1;
  } catch (const ppipe::error& e) {
    std::fprintf(stderr, "process %d: %s\n", mpi.rank(), e.what());
    return 1;
  }
}
