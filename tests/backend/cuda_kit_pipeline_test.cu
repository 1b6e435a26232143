// The CUDA kit in a pipeline, on the GPU: MLP blocks of kit layers (layer_norm, linear, gelu,
// linear) trained with each schedule across several ranks on GPU 0, against the same layers run
// unpipelined on one rank (microbatch by microbatch, one stream). Every kernel sees the same
// inputs and every gradient accumulates in microbatch order, and each stage's cuBLAS handle
// serves one stream (cuBLAS is then deterministic), so losses and weights must agree bit for bit.
// Skipped without a GPU.

#include <cstdint>
#include <variant>
#include <vector>

#include <ppipe/cuda_kit.cuh>
#include <ppipe/model/layer_stack.hpp>
#include <ppipe/pipeline/pipeline.hpp>
#include <ppipe/schedule/gpipe.hpp>
#include <ppipe/schedule/interleaved_1f1b.hpp>
#include <ppipe/schedule/zero_bubble.hpp>

#include "catch.hpp"
#include "cuda_layer_testing.hpp"

namespace {

using kit_layer = std::variant<ppipe::cuda::layer_norm, ppipe::cuda::linear, ppipe::cuda::gelu>;
using kit_model = ppipe::layer_stack<std::vector<kit_layer>>;

// `blocks` MLP blocks of width `width`, hidden 2 * width; the same weights every time.
kit_model mlp(int blocks, int width) {
  return kit_model(ppipe::repeat(4 * blocks, [width](int i) -> kit_layer {
    const auto seed = static_cast<std::uint64_t>(100 + i);
    switch (i % 4) {
      case 0: return ppipe::cuda::layer_norm(width);
      case 1: return ppipe::cuda::linear(width, 2 * width, seed);
      case 2: return ppipe::cuda::gelu(2 * width);
      default: return ppipe::cuda::linear(2 * width, width, seed);
    }
  }));
}

// Every weight of the model, layer by layer, once the GPU is done.
std::vector<float> weights(const kit_model& model) {
  std::vector<float> out;
  for (int l = 0; l < model.num_layers(); ++l) {
    model.visit(l, [&](const auto& layer) {
      if constexpr (requires { layer.download(); }) {
        const std::vector<float> w = layer.download();
        out.insert(out.end(), w.begin(), w.end());
      }
    });
  }
  return out;
}

template <class Schedule>
using on_gpu = ppipe::pipeline<kit_model, Schedule, ppipe::partitioners::balanced, ppipe::cuda::backend>;

ppipe::pipeline_options options(int p, int m, int v) {
  ppipe::pipeline_options o;
  o.ranks = p, o.microbatches = m, o.virtual_stages = v;
  return o;
}

template <class Schedule>
void trains_as_unpipelined(int p, int v, int blocks) {
  const int m = 2 * p;
  const int width = 24;
  const std::int64_t rows = 4 * m + 1;  // microbatches of unequal rows
  INFO(Schedule::name << " p=" << p << " v=" << v << " m=" << m << " blocks=" << blocks);
  kit_model piped_model = mlp(blocks, width);
  kit_model plain_model = mlp(blocks, width);
  const ppipe::cuda::sgd opt(0.05f);
  using hook_info = ppipe::basic_stage_info<ppipe::cuda::device>;
  on_gpu<Schedule> piped(piped_model, options(p, m, v), ppipe::cuda::mse_loss(),
                         [&](const hook_info& s) { opt.step(piped_model, s); });
  on_gpu<ppipe::schedules::one_f_one_b> plain(plain_model, options(1, m, 1), ppipe::cuda::mse_loss(),
                                              [&](const hook_info& s) { opt.step(plain_model, s); });
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    const ppipe::payload x = cuda_testing::values(rows, width, 0.3f * static_cast<float>(step));
    const ppipe::payload y = cuda_testing::values(rows, width, 5.0f + static_cast<float>(step));
    CHECK(piped.train_step(x, y) == plain.train_step(x, y));
  }
  CHECK(weights(piped_model) == weights(plain_model));
  for (int r = 0; r < p; ++r) CHECK(piped.device_memory(r).bytes_in_use == 0);
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
