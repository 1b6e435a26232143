// Partitioning cost at scale. Targets: each under 10 ms on the project's 2-core machine.
//   balanced:       10,000 layers into 512 stages (1F1B, p=512), exact min-max split
//   heterogeneous:  1,000 layers on 64 ranks of two speeds, each with a memory limit that binds
// plus, for information: heterogeneous with a rank so slow that some layers fit nowhere near it
// (the exact interval search instead of the greedy probe), and interleaved (v=2, ranks' memory
// shared by their stages). Each benchmark builds the problem once, outside the timed loop.
#include <algorithm>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include <ppipe/ppipe.hpp>

namespace {

// A transformer-like stack: an embedding, blocks whose costs vary by +-20%, a heavy head.
std::vector<ppipe::layer_cost> model(int layers, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> jitter(0.8, 1.2);
  std::vector<ppipe::layer_cost> out;
  for (int i = 0; i < layers; ++i) {
    const double f = i == layers - 1 ? 6.0 : i == 0 ? 0.5 : jitter(rng);
    out.push_back({f, 2 * f, 1.0 * jitter(rng), 0.25 * jitter(rng)});
  }
  return out;
}

void report(benchmark::State& state, const ppipe::partition_report& r) {
  state.counters["bottleneck"] = r.bottleneck_time();
  state.counters["lower_bound"] = r.lower_bound;
  state.counters["optimal"] = r.optimal ? 1 : 0;
  state.counters["fits"] = r.fits() ? 1 : 0;
}

void balanced(benchmark::State& state) {
  const auto s = ppipe::make_schedule("1f1b", {512, 512, 1});
  const auto problem = ppipe::partition_problem::for_schedule(s, model(10'000, 1));
  for (auto _ : state) {
    auto choice = ppipe::partitioners::balanced{}.choose(problem);
    benchmark::DoNotOptimize(choice.split.bounds().data());
  }
  report(state, ppipe::plan_partition(ppipe::partitioners::balanced{}, problem));
  state.counters["uniform_bottleneck"] = ppipe::plan_partition(ppipe::partitioners::uniform{}, problem).bottleneck_time();
}

// 64 ranks alternating a fast and a slower device (1.0 and 0.6). Every capacity lies halfway between
// the average and the largest memory a rank needs under the time-optimal split, so memory binds on
// the busiest ranks and moves layers off them.
ppipe::partition_problem heterogeneous_problem(int ranks, int v, double slow_speed) {
  const auto s = v == 1 ? ppipe::make_schedule("1f1b", {ranks, 4 * ranks, 1})
                        : ppipe::make_schedule("interleaved_1f1b", {ranks, 4 * ranks, v});
  std::vector<ppipe::device_spec> devices;
  for (int r = 0; r < ranks; ++r) devices.push_back({r % 2 == 0 ? 1.0 : slow_speed, 1e300, ""});
  auto problem = ppipe::partition_problem::for_schedule(s, model(1'000, 2), devices);
  const auto free = ppipe::plan_partition(ppipe::partitioners::heterogeneous{}, problem);
  double most = 0;
  double total = 0;
  for (const auto& r : free.ranks) {
    most = std::max(most, r.memory);
    total += r.memory;
  }
  for (auto& d : problem.devices) d.memory = (most + total / ranks) / 2;
  return problem;
}

void heterogeneous(benchmark::State& state) {
  const auto problem = heterogeneous_problem(64, static_cast<int>(state.range(0)), static_cast<double>(state.range(1)) / 100.0);
  for (auto _ : state) {
    auto choice = ppipe::partitioners::heterogeneous{}.choose(problem);
    benchmark::DoNotOptimize(choice.split.bounds().data());
  }
  const auto r = ppipe::plan_partition(ppipe::partitioners::heterogeneous{}, problem);
  report(state, r);
  // What memory costs in time: the bottleneck without the limits.
  auto unlimited = problem;
  for (auto& d : unlimited.devices) d.memory = 1e300;
  state.counters["bottleneck_unlimited"] =
      ppipe::plan_partition(ppipe::partitioners::heterogeneous{}, unlimited).bottleneck_time();
}

}  // namespace

BENCHMARK(balanced)->Name("balanced/layers:10000/stages:512")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(heterogeneous)
    ->Name("heterogeneous_memory/layers:1000/ranks:64")
    ->ArgNames({"v", "slow_speed_pct"})
    ->Args({1, 60})  // the target case
    ->Args({1, 2})   // a rank 50x slower: the exact interval search
    ->Args({2, 60})  // interleaved: ranks' memory shared by two stages
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_MAIN();
