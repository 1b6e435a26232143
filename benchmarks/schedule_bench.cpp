// Planning cost at scale: generate, validate and simulate interleaved 1F1B with p=64 ranks,
// m=1024 microbatches and v=4 stages per rank (524,288 compute actions, 1.57 million actions with
// transfers). Target: all three together under 100 ms on the project's 2-core machine.
#include <benchmark/benchmark.h>

#include <ppipe/ppipe.hpp>

namespace {

constexpr ppipe::schedule_params large{64, 1024, 4};

void set_counters(benchmark::State& state, const ppipe::schedule& s) {
  state.counters["actions"] = static_cast<double>(s.size());
  state.counters["ns_per_action"] = benchmark::Counter(
      static_cast<double>(s.size()), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void generate(benchmark::State& state) {
  for (auto _ : state) {
    auto s = ppipe::schedules::interleaved_1f1b::generate(large);
    benchmark::DoNotOptimize(s.ranks.data());
  }
  set_counters(state, ppipe::schedules::interleaved_1f1b::generate(large));
}

void validate(benchmark::State& state) {
  const auto s = ppipe::schedules::interleaved_1f1b::generate(large);
  for (auto _ : state) {
    const auto report = ppipe::check_schedule(s);
    if (!report.ok()) state.SkipWithError("schedule invalid");
    benchmark::DoNotOptimize(report.problem.has_value());
  }
  set_counters(state, s);
}

void simulate(benchmark::State& state) {
  const auto s = ppipe::schedules::interleaved_1f1b::generate(large);
  const auto costs = ppipe::cost_model::uniform(1, 2, 0.1);
  const bool timeline = state.range(0) != 0;
  for (auto _ : state) {
    const auto sim = ppipe::simulate(s, costs, {timeline});
    benchmark::DoNotOptimize(sim.makespan);
  }
  set_counters(state, s);
}

// The figure the target is about: all three steps, back to back.
void generate_validate_simulate(benchmark::State& state) {
  const auto costs = ppipe::cost_model::uniform(1, 2, 0.1);
  double bubble = 0;
  for (auto _ : state) {
    const auto s = ppipe::schedules::interleaved_1f1b::generate(large);
    ppipe::validate(s);
    const auto sim = ppipe::simulate(s, costs, {false});
    bubble = sim.bubble_fraction();
    benchmark::DoNotOptimize(bubble);
  }
  const auto s = ppipe::schedules::interleaved_1f1b::generate(large);
  state.counters["bubble_fraction"] = bubble;  // rendezvous transfers, the default
  state.counters["bubble_fraction_buffered"] =
      ppipe::simulate(s, costs, {false, ppipe::transfer_model::buffered}).bubble_fraction();
  set_counters(state, s);
}

}  // namespace

BENCHMARK(generate)->Name("interleaved_p64_m1024_v4/generate")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(validate)->Name("interleaved_p64_m1024_v4/validate")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(simulate)
    ->Name("interleaved_p64_m1024_v4/simulate")
    ->ArgName("timeline")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(generate_validate_simulate)
    ->Name("interleaved_p64_m1024_v4/generate_validate_simulate")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
