// The CUDA backend on one GPU (nvcc; run by scripts/gpu-check.sh, skipped without a GPU):
//   cuda/bf16_overhead/...: 4 ranks on one GPU with GEMM-heavy bf16 layers (linear, GELU, linear
//                  blocks of hidden H), 1F1B with m = 16 >= 4p, against the same layers on one rank
//                  (every kernel on one stream), alternating in one run. Target: the pipelined
//                  step within 3% of the one-stream step (overhead_pct). tflops is the model's
//                  flops per pipelined step (3 times the forward GEMMs') over its time, for
//                  comparison with the GPU's bf16 peak.
//   cuda/enqueue/...: small f32 blocks, so a step is the host's work: the slowest rank's host
//                  time to enqueue its actions, per action (enqueue_us_per_rank_action), and the
//                  step over every action (us_per_action).
//   cuda/graphs/...: the same blocks, each step enqueued action by action and launched from a
//                  captured graph, alternating: the step times and their ratio (speedup; target:
//                  3 or more, since a graph's launch replaces the host's enqueueing).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include <benchmark/benchmark.h>

#include <ppipe/cuda_kit.cuh>
#include <ppipe/ppipe.hpp>

namespace {

using clock_type = std::chrono::steady_clock;
using layer = std::variant<ppipe::cuda::linear_bf16, ppipe::cuda::gelu, ppipe::cuda::mlp_block>;
using model = ppipe::layer_stack<std::vector<layer>>;
using gpu_pipeline = ppipe::pipeline<model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced,
                                     ppipe::cuda::backend>;
using hook_info = ppipe::basic_stage_info<ppipe::cuda::device>;

double seconds(clock_type::duration d) { return std::chrono::duration<double>(d).count(); }

bool skipped_without_gpu(benchmark::State& state) {
  if (ppipe::cuda::device_count() > 0) return false;
  state.SkipWithError("no CUDA device");
  return true;
}

// `blocks` bf16 blocks: linear H -> H, GELU, linear H -> H.
model bf16_blocks(int blocks, int hidden) {
  return model(ppipe::repeat(3 * blocks, [hidden](int i) -> layer {
    if (i % 3 == 1) return ppipe::cuda::gelu(hidden, ppipe::dtype::bf16);
    return ppipe::cuda::linear_bf16(hidden, hidden, static_cast<std::uint64_t>(50 + i));
  }));
}

ppipe::payload filled(std::int64_t rows, int width, ppipe::dtype type, float salt) {
  ppipe::payload p{ppipe::host_tensor(ppipe::shape({rows, width}, type))};
  const std::size_t n = p[0].shape().elements();
  for (std::size_t i = 0; i < n; ++i) {
    const float v = 0.5f * std::sin(0.37f * static_cast<float>(i % 9973) + salt);
    if (type == ppipe::dtype::bf16) {
      p[0].values<ppipe::bfloat16>()[i] = ppipe::bfloat16(v);
    } else {
      p[0].values()[i] = v;
    }
  }
  return p;
}

ppipe::pipeline_options options(int p, int m) {
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.record_trace = false;
  return o;
}

// ---------------------------------------------------------------------------------------------
// Args: hidden, rows per microbatch. p = 4, m = 16, 2 blocks per rank.
void bf16_overhead(benchmark::State& state) {
  if (skipped_without_gpu(state)) return;
  const int hidden = static_cast<int>(state.range(0));
  const std::int64_t rows = state.range(1);
  const int p = 4;
  const int m = 16;
  const int blocks = 2 * p;
  model piped_model = bf16_blocks(blocks, hidden);
  model alone_model = bf16_blocks(blocks, hidden);
  const ppipe::cuda::sgd opt(1e-4f);
  gpu_pipeline piped(piped_model, options(p, m), ppipe::cuda::mse_loss(),
                     [&](const hook_info& s) { opt.step(piped_model, s); });
  gpu_pipeline alone(alone_model, options(1, m), ppipe::cuda::mse_loss(),
                     [&](const hook_info& s) { opt.step(alone_model, s); });
  const ppipe::payload x = filled(rows * m, hidden, ppipe::dtype::bf16, 0.1f);
  const ppipe::payload y = filled(rows * m, hidden, ppipe::dtype::bf16, 2.0f);
  piped.train_step(x, y);  // allocation and cuBLAS's first calls, out of the timing
  alone.train_step(x, y);

  std::vector<double> piped_s, alone_s;
  for (auto _ : state) {
    auto t0 = clock_type::now();
    benchmark::DoNotOptimize(piped.train_step(x, y));
    piped_s.push_back(seconds(clock_type::now() - t0));
    state.SetIterationTime(piped_s.back());
    t0 = clock_type::now();
    benchmark::DoNotOptimize(alone.train_step(x, y));
    alone_s.push_back(seconds(clock_type::now() - t0));
  }
  std::sort(piped_s.begin(), piped_s.end());
  std::sort(alone_s.begin(), alone_s.end());
  const double piped_med = piped_s[piped_s.size() / 2];
  const double alone_med = alone_s[alone_s.size() / 2];
  const double flops = 3.0 * 2.0 * static_cast<double>(rows * m) * hidden * static_cast<double>(hidden) * 2.0 * blocks;
  state.counters["pipelined_ms"] = piped_med * 1e3;
  state.counters["one_stream_ms"] = alone_med * 1e3;
  state.counters["overhead_pct"] = 100.0 * (piped_med / alone_med - 1.0);
  state.counters["tflops"] = flops / piped_med / 1e12;
  state.counters["one_stream_tflops"] = flops / alone_med / 1e12;
  state.SetLabel("p=4 ranks on GPU 0, m=16, 1F1B, " + std::to_string(3 * blocks) + " bf16 layers");
}
BENCHMARK(bf16_overhead)
    ->Name("cuda/bf16_overhead")
    ->ArgNames({"hidden", "rows"})
    ->Args({8192, 512})
    ->Args({4096, 512})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(10);

// ---------------------------------------------------------------------------------------------
// Args: p, m. Two small f32 mlp_blocks per rank, 8 rows per microbatch.
void enqueue(benchmark::State& state) {
  if (skipped_without_gpu(state)) return;
  const int p = static_cast<int>(state.range(0));
  const int m = static_cast<int>(state.range(1));
  const int width = 64;
  model small(ppipe::repeat(2 * p, [](int i) -> layer {
    return ppipe::cuda::mlp_block(width, 4 * width, static_cast<std::uint64_t>(i));
  }));
  const ppipe::cuda::sgd opt(1e-3f);
  ppipe::pipeline_options o = options(p, m);
  o.record_trace = true;  // the trace says when each rank's host had enqueued its last action
  gpu_pipeline pipe(small, o, ppipe::cuda::mse_loss(), [&](const hook_info& s) { opt.step(small, s); });
  const ppipe::payload x = filled(8 * m, width, ppipe::dtype::f32, 0.3f);
  pipe.train_step(x, x);
  const ppipe::schedule& s = pipe.training_schedule();
  std::size_t longest = 0;
  for (const auto& list : s.ranks) longest = std::max(longest, list.size());

  std::vector<double> steps, enqueued;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    benchmark::DoNotOptimize(pipe.train_step(x, x));
    steps.push_back(seconds(clock_type::now() - t0));
    state.SetIterationTime(steps.back());
    const auto& e = pipe.last_trace().enqueued;
    enqueued.push_back(e.empty() ? 0.0 : *std::max_element(e.begin(), e.end()));
  }
  std::sort(steps.begin(), steps.end());
  std::sort(enqueued.begin(), enqueued.end());
  state.counters["us_per_action"] = steps[steps.size() / 2] * 1e6 / static_cast<double>(s.size());
  state.counters["enqueue_us_per_rank_action"] = enqueued[enqueued.size() / 2] / static_cast<double>(longest);
  state.SetLabel("1F1B, 2 mlp_blocks of width 64 per rank, 8 rows per microbatch");
}
BENCHMARK(enqueue)
    ->Name("cuda/enqueue")
    ->ArgNames({"p", "m"})
    ->Args({1, 8})
    ->Args({4, 16})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(0.5);

// ---------------------------------------------------------------------------------------------
// Args: p, m. The same small blocks, each step once enqueued action by action and once launched
// from a captured graph (pipeline_options::capture_graphs), alternating in one run.
void graphs(benchmark::State& state) {
  if (skipped_without_gpu(state)) return;
  const int p = static_cast<int>(state.range(0));
  const int m = static_cast<int>(state.range(1));
  const int width = 64;
  const auto blocks = [&] {
    return model(ppipe::repeat(2 * p, [](int i) -> layer {
      return ppipe::cuda::mlp_block(width, 4 * width, static_cast<std::uint64_t>(i));
    }));
  };
  model eager_model = blocks();
  model graph_model = blocks();
  const ppipe::cuda::sgd opt(1e-3f);
  ppipe::pipeline_options o = options(p, m);
  gpu_pipeline eager(eager_model, o, ppipe::cuda::mse_loss(), [&](const hook_info& s) { opt.step(eager_model, s); });
  o.capture_graphs = true;
  gpu_pipeline captured(graph_model, o, ppipe::cuda::mse_loss(), [&](const hook_info& s) { opt.step(graph_model, s); });
  const ppipe::payload x = filled(8 * m, width, ppipe::dtype::f32, 0.3f);
  for (int warm = 0; warm < 3; ++warm) {  // the graph is captured at the second step
    eager.train_step(x, x);
    captured.train_step(x, x);
  }
  std::vector<double> eager_s, graph_s;
  for (auto _ : state) {
    auto t0 = clock_type::now();
    benchmark::DoNotOptimize(eager.train_step(x, x));
    eager_s.push_back(seconds(clock_type::now() - t0));
    t0 = clock_type::now();
    benchmark::DoNotOptimize(captured.train_step(x, x));
    graph_s.push_back(seconds(clock_type::now() - t0));
    state.SetIterationTime(graph_s.back());
  }
  std::sort(eager_s.begin(), eager_s.end());
  std::sort(graph_s.begin(), graph_s.end());
  const double e = eager_s[eager_s.size() / 2];
  const double g = graph_s[graph_s.size() / 2];
  state.counters["eager_us_per_step"] = e * 1e6;
  state.counters["graph_us_per_step"] = g * 1e6;
  state.counters["speedup"] = e / g;  // target: 3 or more
  state.counters["graph_steps"] = static_cast<double>(captured.graph_steps());
  state.SetLabel("1F1B, 2 mlp_blocks of width 64 per rank, 8 rows per microbatch, eager vs graph");
}
BENCHMARK(graphs)
    ->Name("cuda/graphs")
    ->ArgNames({"p", "m"})
    ->Args({1, 8})
    ->Args({4, 16})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(0.5);

}  // namespace

BENCHMARK_MAIN();
