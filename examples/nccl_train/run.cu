// ppipe-nccl-train's training half, compiled by nvcc: residual MLP blocks of the CUDA kit trained
// through ppipe::nccl::backend, one pipeline rank per MPI process on its own GPU.

#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <utility>
#include <vector>

#include <ppipe/cuda_kit.cuh>
#include <ppipe/mpi.hpp>
#include <ppipe/nccl.hpp>
#include <ppipe/ppipe.hpp>

#include "../support/regression.hpp"
#include "run.hpp"

namespace nccl_train {
namespace {

using model = ppipe::layer_stack<std::vector<ppipe::cuda::mlp_block>>;
using control = ppipe::mpi::transport;
using nccl_pipeline = ppipe::pipeline<model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced,
                                      ppipe::nccl::backend<control>>;
using hook_info = ppipe::basic_stage_info<ppipe::cuda::device>;

model make_model(const settings& s) {
  const int w = s.width;
  return model(ppipe::repeat(s.blocks, [w](int i) {
    return ppipe::cuda::mlp_block(w, 4 * w, static_cast<std::uint64_t>(1000 + 2 * i));
  }));
}

}  // namespace

int run(const settings& s, ppipe::schedule plan) {
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int have = ppipe::cuda::device_count() > 0 ? 1 : 0;
  int all = 0;
  MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (all == 0) {
    if (rank == 0) {
      std::cout << "ppipe-nccl-train: no CUDA device here, in some process of the job (nvidia-smi lists none, or "
                   "CUDA_VISIBLE_DEVICES hides them); nothing was trained\n";
    }
    return exit_no_gpu;
  }
  const int gpu = ppipe::nccl::process_gpu();
  ppipe::nccl::transport<control> net(control(MPI_COMM_WORLD), gpu);
  // NCCL connects a pair on its first transfer: done here, before any step is timed.
  double first_ms = 0.0;
  {
    ppipe::cuda::device warm(ppipe::cuda::device_options{gpu, rank});
    warm.bind();
    const auto stream = warm.create_stream("warm-up");
    first_ms = net.warm_up(warm, stream, ppipe::nccl::neighbours(rank, size),
                           ppipe::deadline_after(std::chrono::milliseconds(s.timeout_ms)));
  }
  const examples::regression d = examples::make_row_regression(s.batch, s.width);
  model m = make_model(s);
  const ppipe::cuda::sgd opt(s.lr);
  ppipe::pipeline_options o;
  o.ranks = 0;  // the job's size
  o.microbatches = s.microbatches;
  o.virtual_stages = s.virtual_stages;
  o.timeout = std::chrono::milliseconds(s.timeout_ms);
  o.schedule = std::move(plan);
  nccl_pipeline pipe(m, o, ppipe::cuda::mse_loss(), [&](const hook_info& st) { opt.step(m, st); }, std::move(net));

  if (rank == 0) {
    std::cout << "ppipe-nccl-train: residual MLP blocks x" << s.blocks << ", width " << s.width << ", " << size
              << " processes (one rank and one GPU each), schedule " << pipe.training_schedule().name
              << ", m=" << s.microbatches << ", batch " << s.batch << " rows\n"
              << "first transfer (NCCL connecting the neighbours): " << first_ms << " ms\n\n";
    std::printf("%6s %14s %10s %14s\n", "step", "loss", "ms", "samples/s");
  }
  std::vector<double> losses;
  double total_ms = 0.0;
  for (int step = 1; step <= s.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    losses.push_back(pipe.train_step(d.inputs, d.targets));
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (step > 1) total_ms += ms;
    if (rank == 0 && (step <= 3 || step % 5 == 0 || step == s.steps)) {
      std::printf("%6d %14.6f %10.2f %14.0f\n", step, losses.back(), ms, static_cast<double>(s.batch) / ms * 1e3);
    }
  }
  if (rank == 0 && s.steps > 1) {
    const double mean = total_ms / (s.steps - 1);
    std::printf("\nthroughput: %.0f samples/s (mean step %.2f ms over steps 2..%d)\n",
                static_cast<double>(s.batch) / mean * 1e3, mean, s.steps);
  }
  if (!s.check) return 0;
  // Rank 0 trains the same layers on its GPU alone (the CUDA backend, one rank) and compares.
  int same = 1;  // an int, for MPI_Bcast
  if (rank == 0) {
    model alone_model = make_model(s);
    ppipe::pipeline_options one;
    one.ranks = 1;
    one.microbatches = s.microbatches;
    one.timeout = o.timeout;
    ppipe::pipeline<model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, ppipe::cuda::backend> alone(
        alone_model, one, ppipe::cuda::mse_loss(), [&](const hook_info& st) { opt.step(alone_model, st); });
    for (int step = 0; step < s.steps; ++step) {
      if (alone.train_step(d.inputs, d.targets) != losses[static_cast<std::size_t>(step)]) same = 0;
    }
  }
  MPI_Bcast(&same, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    std::cout << (same != 0 ? "check: the losses match the same layers on one GPU, bit for bit\n"
                            : "check: FAILED: the losses differ from the same layers on one GPU\n");
  }
  return same != 0 ? 0 : 1;
}

}  // namespace nccl_train
