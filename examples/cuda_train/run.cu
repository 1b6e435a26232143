// ppipe-cuda-train's training half, compiled by nvcc: residual MLP blocks of the CUDA kit (or bf16
// blocks) trained through ppipe::cuda::multi_gpu_backend, the ranks spread over the visible GPUs.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <ppipe/cuda_kit.cuh>
#include <ppipe/ppipe.hpp>

#include "../support/last_step.hpp"
#include "../support/regression.hpp"
#include "run.hpp"

namespace cuda_train {
namespace {

using layer = std::variant<ppipe::cuda::mlp_block, ppipe::cuda::linear_bf16, ppipe::cuda::gelu>;
using model = ppipe::layer_stack<std::vector<layer>>;
using gpu_pipeline = ppipe::pipeline<model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced,
                                     ppipe::cuda::multi_gpu_backend>;
using hook_info = ppipe::basic_stage_info<ppipe::cuda::device>;

model make_model(const settings& s) {
  const int w = s.width;
  if (!s.bf16) {
    return model(ppipe::repeat(s.blocks, [w](int i) -> layer {
      return ppipe::cuda::mlp_block(w, 4 * w, static_cast<std::uint64_t>(1000 + 2 * i));
    }));
  }
  return model(ppipe::repeat(3 * s.blocks, [w](int i) -> layer {
    const auto seed = static_cast<std::uint64_t>(1000 + i);
    switch (i % 3) {
      case 0: return ppipe::cuda::linear_bf16(w, 4 * w, seed);
      case 1: return ppipe::cuda::gelu(4 * w, ppipe::dtype::bf16);
      default: return ppipe::cuda::linear_bf16(4 * w, w, seed);
    }
  }));
}

// The model's flops for one training step: 3 times the GEMMs' forward (the blocks' recomputed
// forward is the hardware's extra work, not counted).
double model_flops(const settings& s) {
  const double gemm = 2.0 * static_cast<double>(s.batch) * s.width * (4.0 * s.width);
  return 3.0 * 2.0 * gemm * s.blocks;
}

ppipe::pipeline_options options_of(const settings& s, ppipe::schedule plan) {
  ppipe::pipeline_options o;
  o.ranks = s.ranks;
  o.microbatches = s.microbatches;
  o.virtual_stages = s.virtual_stages;
  o.timeout = std::chrono::milliseconds(s.timeout_ms);
  o.capture_graphs = s.graphs;
  o.schedule = std::move(plan);
  return o;
}

}  // namespace

int run(const settings& s, ppipe::schedule plan) {
  if (ppipe::cuda::device_count() == 0) {
    std::cout << "ppipe-cuda-train: no CUDA device here (nvidia-smi lists none, or CUDA_VISIBLE_DEVICES hides "
                 "them); nothing was trained\n";
    return exit_no_gpu;
  }
  const examples::regression d =
      examples::make_row_regression(s.batch, s.width, s.bf16 ? ppipe::dtype::bf16 : ppipe::dtype::f32);
  model m = make_model(s);
  const ppipe::cuda::sgd opt(s.lr);
  const ppipe::pipeline_options o = options_of(s, std::move(plan));
  gpu_pipeline pipe(m, o, ppipe::cuda::mse_loss(), [&](const hook_info& st) { opt.step(m, st); });

  std::cout << "ppipe-cuda-train: " << (s.bf16 ? "bf16 blocks (linear, GELU, linear)" : "residual MLP blocks") << " x"
            << s.blocks << ", width " << s.width << ", hidden " << 4 * s.width << ", " << m.num_layers()
            << " layers, " << s.ranks << " ranks on " << std::min(s.ranks, ppipe::cuda::device_count())
            << " GPU(s), schedule " << pipe.training_schedule().name
            << ", m=" << s.microbatches << ", batch " << s.batch << " rows\nlayers per stage:";
  for (const int n : pipe.split().sizes()) std::cout << " " << n;
  std::cout << "\n\n";
  std::printf("%6s %14s %10s %14s %10s\n", "step", "loss", "ms", "samples/s", "TFLOP/s");

  std::vector<double> losses;
  double total_ms = 0.0;
  int timed = 0;
  for (int step = 1; step <= s.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    losses.push_back(pipe.train_step(d.inputs, d.targets));
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (step > 1) {  // the first step allocates and warms up cuBLAS; leave it out
      total_ms += ms;
      ++timed;
    }
    if (step <= 3 || step % 5 == 0 || step == s.steps) {
      std::printf("%6d %14.6f %10.2f %14.0f %10.2f\n", step, losses.back(), ms,
                  static_cast<double>(s.batch) / ms * 1e3, model_flops(s) / (ms * 1e-3) / 1e12);
    }
  }
  const double mean_ms = timed > 0 ? total_ms / timed : 0.0;
  if (timed > 0) {
    std::printf("\nthroughput: %.0f samples/s, %.2f model TFLOP/s (mean step %.2f ms over steps 2..%d)\n",
                static_cast<double>(s.batch) / mean_ms * 1e3, model_flops(s) / (mean_ms * 1e-3) / 1e12, mean_ms,
                s.steps);
  }
  // Each GPU's pool: activations, gradients and payloads in flight, not weights. Ranks on one GPU
  // share its pool; the last rank of each GPU says it.
  const int gpus = std::min(s.ranks, ppipe::cuda::device_count());
  for (int g = 0; g < gpus; ++g) {
    const int last = ((g + 1) * s.ranks - 1) / gpus;  // the last rank r with r * gpus / ranks == g
    std::printf("GPU %d's pool: at most %.1f MiB in use\n", g,
                static_cast<double>(pipe.device_memory(last).peak_bytes_in_use) / (1024.0 * 1024.0));
  }
  if (pipe.graph_steps() > 0) {
    std::printf("bubble, last step: not measured: %zu of %d steps ran from a captured CUDA graph, whose actions are "
                "not traced (run without --graphs for the bubble, the timeline and the trace)\n",
                pipe.graph_steps(), s.steps);
  } else {
    examples::report_last_step(pipe.training_schedule(), pipe.last_trace(), s.timeline, s.trace);
  }

  if (s.check) {
    // The same layers on one rank, microbatch by microbatch: the bits the pipeline must give.
    model alone_model = make_model(s);
    ppipe::pipeline_options one = o;
    one.ranks = 1;
    one.virtual_stages = 1;
    one.schedule.reset();
    one.capture_graphs = false;  // the reference enqueues every action
    gpu_pipeline alone(alone_model, one, ppipe::cuda::mse_loss(), [&](const hook_info& st) { opt.step(alone_model, st); });
    bool same = true;
    for (int step = 0; step < s.steps; ++step) same = alone.train_step(d.inputs, d.targets) == losses[static_cast<std::size_t>(step)] && same;
    same = same && ppipe::cuda::download_weights(alone_model) == ppipe::cuda::download_weights(m);
    std::cout << (same ? "check: the pipeline matches the same layers on one rank, bit for bit (losses and weights)\n"
                       : "check: FAILED: the pipeline's losses or weights differ from the same layers on one rank\n");
    if (!same) return 1;
  }
  return 0;
}

}  // namespace cuda_train
