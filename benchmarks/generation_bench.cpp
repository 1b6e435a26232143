// Pipelined generation, on the host backend with waiting kernels: every layer
// call takes a fixed time without holding a core, as a GPU kernel does, whatever its rows.
//   generate/p4_groups:G  8 layers on p=4 ranks (2 per stage, 1 ms per stage per step), G groups
//                         of 4 sequences in flight, 48 tokens each. Target: G >= 4 reaches at
//                         least 3.6x the tokens/s of G = 1 (90% of the ideal 4x); the curve
//                         G = 1..8 goes to docs/benchmarks.md.
//   generate/p1_groups:1  the same 8 layers on one rank (4 ms per step): the unpipelined rate,
//                         which G = 1 through 4 ranks should equal.
// Counters: tokens_per_s (aggregate decode throughput), ttft_ms (mean time to first token) and
// util_min (the least busy stage's share of the call). The kernel sleeps until 100 us before its
// deadline, then yields (support/waiting_kernel.hpp); p=4 runs 4 rank threads on the 2 cores.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include <benchmark/benchmark.h>

#include <ppipe/ppipe.hpp>

#include "support/waiting_kernel.hpp"

namespace {

constexpr int layers = 8;
constexpr int vocab = 8;
constexpr int group_size = 4;
constexpr int tokens_per_request = 48;
constexpr auto layer_time = std::chrono::microseconds(500);
constexpr auto spin = std::chrono::microseconds(100);

// i32 token ids [rows] -> one-hot rows [rows, vocab] of the next id; every layer after the first
// copies its input. Each call waits layer_time. No state: the figures are the pipeline's alone.
struct waiting_decoder {
  [[nodiscard]] int num_layers() const { return layers; }
  [[nodiscard]] std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const {
    return {ppipe::shape{in.at(0)[0], vocab}};
  }
  [[nodiscard]] std::vector<ppipe::shape> state_shapes(int, int) const { return {}; }
  void forward(int layer, const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) {
    bench::wait_kernel(layer_time, spin);
    if (layer > 0) {
      out = in;
      return;
    }
    for (std::size_t row = 0; row < in[0].size(); ++row) {
      const auto next = (static_cast<std::size_t>(in[0].values<std::int32_t>()[row]) + 1) % vocab;
      out[0][row * vocab + next] = 1.0f;
    }
  }
};

int greedy(const ppipe::payload& out, int row) {
  const auto base = out[0].values().begin() + static_cast<std::ptrdiff_t>(row) * vocab;
  return static_cast<int>(std::max_element(base, base + vocab) - base);
}

void generate(benchmark::State& state, int p) {
  const int groups = static_cast<int>(state.range(0));
  waiting_decoder model;
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = p;
  ppipe::pipeline<waiting_decoder> pipe(model, o);
  std::vector<ppipe::generation_request> reqs;
  for (int i = 0; i < groups * group_size; ++i) reqs.push_back({{i % vocab}, tokens_per_request});
  ppipe::generation_options g;
  g.sampler = greedy;
  g.groups = groups;
  g.max_group_size = group_size;
  double tokens_per_s = 0.0;
  double ttft = 0.0;
  double util_min = 0.0;
  for (auto _ : state) {
    const ppipe::generation_result r = pipe.generate(reqs, g);
    state.SetIterationTime(r.elapsed_us * 1e-6);
    tokens_per_s += r.tokens_per_second();
    ttft += std::accumulate(r.first_token_us.begin(), r.first_token_us.end(), 0.0) /
            static_cast<double>(r.first_token_us.size()) / 1000.0;
    double least = 1.0;
    for (int s = 0; s < p; ++s) least = std::min(least, r.utilisation(s));
    util_min += least;
  }
  const auto n = static_cast<double>(state.iterations());
  state.counters["tokens_per_s"] = tokens_per_s / n;
  state.counters["ttft_ms"] = ttft / n;
  state.counters["util_min"] = util_min / n;
}

void generate_p4(benchmark::State& state) { generate(state, 4); }
void generate_p1(benchmark::State& state) { generate(state, 1); }

}  // namespace

BENCHMARK(generate_p4)->Name("generate/p4")->ArgName("groups")->DenseRange(1, 8)->Iterations(3)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(generate_p1)->Name("generate/p1")->ArgName("groups")->Arg(1)->Iterations(3)->UseManualTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
