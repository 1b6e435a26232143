// The CUDA kit in a pipeline, on the GPU: blocks of kit layers (layer_norm, linear, gelu, linear,
// and a residual mlp_block) trained with each schedule across several ranks on GPU 0, against the same layers run
// unpipelined on one rank (microbatch by microbatch, one stream). Every kernel sees the same
// inputs and every gradient accumulates in microbatch order, and each stage's cuBLAS handle
// serves one stream (cuBLAS is then deterministic), so losses and weights must agree bit for bit;
// and each stage's activations peak at the microbatches the simulator predicts. Skipped without a
// GPU.

#include <cstdint>
#include <variant>
#include <vector>

#include <ppipe/cuda_kit.cuh>
#include <ppipe/model/layer_stack.hpp>
#include <ppipe/pipeline/pipeline.hpp>
#include <ppipe/schedule/gpipe.hpp>
#include <ppipe/schedule/interleaved_1f1b.hpp>
#include <ppipe/schedule/simulate.hpp>
#include <ppipe/schedule/zero_bubble.hpp>

#include "catch.hpp"
#include "cuda_layer_testing.hpp"

namespace {

using kit_layer = std::variant<ppipe::cuda::layer_norm, ppipe::cuda::linear, ppipe::cuda::gelu, ppipe::cuda::mlp_block>;
using kit_model = ppipe::layer_stack<std::vector<kit_layer>>;

// `blocks` blocks of 5 layers, width `width`, hidden 2 * width; the same weights every time.
kit_model mlp(int blocks, int width) {
  return kit_model(ppipe::repeat(5 * blocks, [width](int i) -> kit_layer {
    const auto seed = static_cast<std::uint64_t>(100 + 2 * i);
    switch (i % 5) {
      case 0: return ppipe::cuda::layer_norm(width);
      case 1: return ppipe::cuda::linear(width, 2 * width, seed);
      case 2: return ppipe::cuda::gelu(2 * width);
      case 3: return ppipe::cuda::linear(2 * width, width, seed);
      default: return ppipe::cuda::mlp_block(width, 2 * width, seed);
    }
  }));
}

template <class Schedule>
using on_gpu = ppipe::pipeline<kit_model, Schedule, ppipe::partitioners::balanced, ppipe::cuda::backend>;

ppipe::pipeline_options options(int p, int m, int v) {
  ppipe::pipeline_options o;
  o.ranks = p, o.microbatches = m, o.virtual_stages = v;
  return o;
}

// With `graphs`, the pipelined steps after the first are captured into a CUDA graph and launched
// (pipeline_options::capture_graphs): cuBLAS calls and the blocks' stream-ordered scratch memory
// then run as graph nodes.
template <class Schedule>
void trains_as_unpipelined(int p, int v, int blocks, bool graphs = false) {
  const int m = 2 * p;
  const int width = 24;
  const std::int64_t rows = 4 * m + 1;  // microbatches of unequal rows
  INFO(Schedule::name << " p=" << p << " v=" << v << " m=" << m << " blocks=" << blocks << (graphs ? " from graphs" : ""));
  kit_model piped_model = mlp(blocks, width);
  kit_model plain_model = mlp(blocks, width);
  const ppipe::cuda::sgd opt(0.05f);
  using hook_info = ppipe::basic_stage_info<ppipe::cuda::device>;
  ppipe::pipeline_options o = options(p, m, v);
  o.capture_graphs = graphs;
  on_gpu<Schedule> piped(piped_model, o, ppipe::cuda::mse_loss(), [&](const hook_info& s) { opt.step(piped_model, s); });
  on_gpu<ppipe::schedules::one_f_one_b> plain(plain_model, options(1, m, 1), ppipe::cuda::mse_loss(),
                                              [&](const hook_info& s) { opt.step(plain_model, s); });
  const std::vector<float> initial = ppipe::cuda::download_weights(plain_model);
  const int steps = graphs ? 5 : 3;
  for (int step = 0; step < steps; ++step) {
    INFO("step " << step);
    const ppipe::payload x = cuda_testing::values(rows, width, 0.3f * static_cast<float>(step));
    const ppipe::payload y = cuda_testing::values(rows, width, 5.0f + static_cast<float>(step));
    CHECK(piped.train_step(x, y) == plain.train_step(x, y));
  }
  if (graphs) CHECK(piped.graph_steps() == 4);  // captured at step 1, launched again at 2 to 4
  const std::vector<float> trained = ppipe::cuda::download_weights(plain_model);
  CHECK(trained != initial);  // the optimizer reached the layers
  CHECK(ppipe::cuda::download_weights(piped_model) == trained);
  for (int r = 0; r < p; ++r) CHECK(piped.device_memory(r).bytes_in_use == 0);
  // Each stage's activations in GPU memory peaked at the microbatches the simulator predicts.
  const ppipe::simulation sim = ppipe::simulate(piped.training_schedule(), ppipe::cost_model::uniform(1, 2));
  for (int st = 0; st < p * v; ++st) {
    INFO("stage " << st);
    CHECK(piped.memory(st).peak_microbatches == sim.peak_stage_activations[static_cast<std::size_t>(st)]);
    CHECK(piped.memory(st).peak_bytes > 0);
    CHECK(piped.memory(st).live_bytes == 0);
  }
}

}  // namespace

TEST_CASE("cuda kit: pipelined training is bitwise the unpipelined run, for GPipe, 1F1B, interleaved and ZB-H1",
          "[cuda][gpu]") {
  if (!cuda_testing::have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  using namespace ppipe::schedules;
  for (const int p : {2, 4}) {
    trains_as_unpipelined<gpipe>(p, 1, p);
    trains_as_unpipelined<one_f_one_b>(p, 1, p);
    trains_as_unpipelined<interleaved_1f1b>(p, 2, 2 * p);
    trains_as_unpipelined<zb_h1>(p, 1, p);
  }
}

TEST_CASE("cuda kit: steps launched from a captured CUDA graph are bitwise the unpipelined run", "[cuda][gpu]") {
  if (!cuda_testing::have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  using namespace ppipe::schedules;
  for (const int p : {2, 4}) {
    trains_as_unpipelined<one_f_one_b>(p, 1, p, true);
    trains_as_unpipelined<zb_h1>(p, 1, p, true);
  }
}

TEST_CASE("cuda kit: bf16 training is bitwise the unpipelined run, for 1F1B and ZB-H1", "[cuda][gpu]") {
  if (!cuda_testing::have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  using half_layer = std::variant<ppipe::cuda::linear_bf16, ppipe::cuda::gelu>;
  using half_model = ppipe::layer_stack<std::vector<half_layer>>;
  const int width = 32;
  auto make = [&] {
    return half_model(ppipe::repeat(8, [&](int i) -> half_layer {
      if (i % 2 == 1) return ppipe::cuda::gelu(width, ppipe::dtype::bf16);
      return ppipe::cuda::linear_bf16(width, width, static_cast<std::uint64_t>(7 + i));
    }));
  };
  auto check = [&]<class Schedule>(Schedule) {
    INFO(Schedule::name);
    half_model piped_model = make();
    half_model plain_model = make();
    const ppipe::cuda::sgd opt(0.05f);
    using hook_info = ppipe::basic_stage_info<ppipe::cuda::device>;
    ppipe::pipeline<half_model, Schedule, ppipe::partitioners::balanced, ppipe::cuda::backend> piped(
        piped_model, options(4, 8, 1), ppipe::cuda::mse_loss(), [&](const hook_info& s) { opt.step(piped_model, s); });
    ppipe::pipeline<half_model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, ppipe::cuda::backend> plain(
        plain_model, options(1, 8, 1), ppipe::cuda::mse_loss(), [&](const hook_info& s) { opt.step(plain_model, s); });
    const std::vector<float> initial = ppipe::cuda::download_weights(plain_model);
    for (int step = 0; step < 3; ++step) {
      INFO("step " << step);
      const ppipe::payload x = cuda_testing::to_bf16(cuda_testing::values(37, width, 0.2f * static_cast<float>(step)));
      const ppipe::payload y = cuda_testing::to_bf16(cuda_testing::values(37, width, 3.0f + static_cast<float>(step)));
      CHECK(piped.train_step(x, y) == plain.train_step(x, y));
    }
    const std::vector<float> trained = ppipe::cuda::download_weights(plain_model);
    CHECK(trained != initial);
    CHECK(ppipe::cuda::download_weights(piped_model) == trained);
  };
  check(ppipe::schedules::one_f_one_b{});
  check(ppipe::schedules::zb_h1{});
}

TEST_CASE("cuda kit: inference is bitwise the unpipelined forward", "[cuda][gpu]") {
  if (!cuda_testing::have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  kit_model piped_model = mlp(2, 16);
  kit_model plain_model = mlp(2, 16);
  ppipe::pipeline_options o = options(4, 4, 1);
  o.inference_microbatches = 3;
  on_gpu<ppipe::schedules::one_f_one_b> piped(piped_model, o);
  ppipe::pipeline_options one = options(1, 4, 1);
  one.inference_microbatches = 3;
  on_gpu<ppipe::schedules::one_f_one_b> plain(plain_model, one);
  const ppipe::payload x = cuda_testing::values(13, 16, 0.5f);
  CHECK(piped.infer(x) == plain.infer(x));
}
