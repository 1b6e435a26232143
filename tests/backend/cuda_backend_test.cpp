// The CUDA backend end to end, on the GPU: a pipeline of the toy model's CUDA kernels
// (cuda_toy.hpp) against the same model on the host backend: every rank on GPU 0, ranks on two
// devices of GPU 0, and ranks on every GPU; stages hand payloads over by copies on the GPUs. Each
// case reports itself skipped without the GPUs it needs.

#include <cstdint>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include <ppipe/cuda.hpp>
#include <ppipe/pipeline/pipeline.hpp>
#include <ppipe/schedule/gpipe.hpp>
#include <ppipe/schedule/interleaved_1f1b.hpp>

#include "catch.hpp"
#include "cuda_toy.hpp"
#include "toy_model.hpp"

namespace {

bool have_gpu() { return ppipe::cuda::device_count() > 0; }

ppipe::pipeline_options options(int p, int m, int v = 1) {
  ppipe::pipeline_options o;
  o.ranks = p, o.microbatches = m, o.virtual_stages = v;
  return o;
}

template <class Schedule, class Backend = ppipe::cuda::backend>
using on_gpu = ppipe::pipeline<cuda_toy::model, Schedule, ppipe::partitioners::balanced, Backend>;

// Three steps on the GPU and on the host backend: losses and parameters bitwise equal.
template <class Schedule, class Backend = ppipe::cuda::backend>
void trains_as_on_the_host(int p, int m, int v, std::int64_t rows, int layers, bool graphs = false) {
  INFO(Schedule::name << " p=" << p << " m=" << m << " v=" << v << " rows=" << rows << " layers=" << layers
                      << (graphs ? " from graphs" : ""));
  cuda_toy::model gpu(layers);
  toy::model host(layers);
  const float lr = 0.02f;
  ppipe::pipeline_options o = options(p, m, v);
  o.capture_graphs = graphs;
  on_gpu<Schedule, Backend> piped(gpu, o, cuda_toy::device_loss(),
                                  [&](const ppipe::stage_info& s) { gpu.sgd(s.first_layer, s.end_layer, lr); });
  ppipe::pipeline<toy::model, Schedule> plain(host, options(p, m, v), toy::loss,
                                              [&](const ppipe::stage_info& s) { host.sgd(s.first_layer, s.end_layer, lr); });
  const int steps = graphs ? 5 : 3;
  for (int step = 0; step < steps; ++step) {
    INFO("step " << step);
    const auto x = toy::batch(rows, 3, static_cast<float>(step));
    const auto y = toy::batch(rows, 3, 10.0f + static_cast<float>(step));
    CHECK(piped.train_step(x, y) == plain.train_step(x, y));
  }
  if (graphs) CHECK(piped.graph_steps() == 4);  // captured at step 1, launched again at 2 to 4
  CHECK(gpu.a() == host.a());
  CHECK(gpu.b() == host.b());
  for (int r = 0; r < p; ++r) CHECK(piped.device_memory(r).bytes_in_use == 0);
}

}  // namespace

TEST_CASE("cuda backend: training is bitwise the host backend's, for GPipe, 1F1B and interleaved", "[cuda][gpu]") {
  if (!have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  using namespace ppipe::schedules;
  for (const int p : {1, 2, 4}) {
    trains_as_on_the_host<gpipe>(p, p + 2, 1, 2 * (p + 2) + 1, 2 * p + 1);
    trains_as_on_the_host<one_f_one_b>(p, 2 * p, 1, 8 * p, 2 * p);
    if (p > 1) trains_as_on_the_host<interleaved_1f1b>(p, 2 * p, 2, 4 * p + 1, 4 * p);
  }
}

TEST_CASE("cuda backend: steps launched from a captured CUDA graph train bitwise as the host backend",
          "[cuda][gpu]") {
  if (!have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  using namespace ppipe::schedules;
  for (const int p : {1, 2, 4}) {
    trains_as_on_the_host<one_f_one_b>(p, 2 * p, 1, 8 * p, 2 * p, true);
    trains_as_on_the_host<gpipe>(p, p + 2, 1, 2 * (p + 2) + 1, 2 * p + 1, true);
  }
}

TEST_CASE("cuda backend: inference returns the host backend's outputs", "[cuda][gpu]") {
  if (!have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  for (const int p : {1, 2, 4}) {
    INFO("p=" << p);
    cuda_toy::model gpu(2 * p);
    toy::model host(2 * p);
    ppipe::pipeline_options o = options(p, 3);
    o.inference_microbatches = p + 1;
    on_gpu<ppipe::schedules::one_f_one_b> piped(gpu, o);
    ppipe::pipeline<toy::model> plain(host, o);
    const auto x = toy::batch(2 * p + 3, 3, 0.5f);
    CHECK(piped.infer(x) == plain.infer(x));
    for (int r = 0; r < p; ++r) CHECK(piped.device_memory(r).bytes_in_use == 0);
  }
}

// Ranks on two devices of their own (pools, streams) that are one GPU, as on two GPUs: payloads
// between the devices cross by copies ordered by the other device's events.
TEST_CASE("cuda backend: ranks on two devices train bitwise as the host backend", "[cuda][gpu]") {
  if (!have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  using namespace ppipe::schedules;
  using two = ppipe::cuda::backend_placed<ppipe::cuda::as_if_gpus<2>>;
  for (const int p : {2, 4}) {
    trains_as_on_the_host<one_f_one_b, two>(p, 2 * p, 1, 8 * p + 1, 2 * p);
    trains_as_on_the_host<interleaved_1f1b, two>(p, 2 * p, 2, 4 * p + 1, 4 * p);
  }
}

// Whether every GPU can reach every other's memory, as multi_gpu_backend asks.
bool all_peers() {
  const int n = ppipe::cuda::device_count();
  for (int a = 0; a < n; ++a) {
    for (int b = 0; b < n; ++b) {
      int can = 0;
      if (a != b && (cudaDeviceCanAccessPeer(&can, a, b) != cudaSuccess || can == 0)) return false;
    }
  }
  return true;
}

TEST_CASE("cuda backend: ranks spread over every GPU train bitwise as the host backend", "[cuda][gpu]") {
  if (ppipe::cuda::device_count() < 2 || !all_peers()) {
    WARN("SKIPPED: fewer than two CUDA devices with peer access to each other");
    return;
  }
  using namespace ppipe::schedules;
  const int p = 2 * ppipe::cuda::device_count();
  trains_as_on_the_host<one_f_one_b, ppipe::cuda::multi_gpu_backend>(p, 2 * p, 1, 8 * p + 1, 2 * p);
  trains_as_on_the_host<gpipe, ppipe::cuda::multi_gpu_backend>(p, p + 1, 1, 4 * p + 3, 2 * p + 1);
}
