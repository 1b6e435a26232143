// The host runtime's cost, all on the host backend:
//   overhead/...:  kernels that do nothing, so a step is the executor alone (1F1B, one layer per
//                  stage, one [m, 1] tensor). Target: <= 5 us per action, the step's wall time over
//                  every action of the schedule, transfers included.
//   waiting/...:   kernels that wait 1 ms forward / 2 ms backward per rank without using a core, as a
//                  GPU kernel does (p=4, m=16). Target: the measured step within 3% of simulate()'s
//                  makespan (buffered transfers, as the host transport is). Zero-bubble schedules
//                  (zb_h1, zb_v, dualpipe_v) split the backward into I and W of 1 ms each; target:
//                  ZB-H1's step beats 1F1B's at the same peak activation memory.
//   wait_precision: how late the waiting kernel ends: the floor under waiting/'s accuracy.
//   cpu_streams/...: the same overhead and waiting cases on the CPU-stream backend (each rank a
//                  device of worker-thread streams, the host enqueueing ahead): its host enqueue
//                  cost per action, and its step with waiting kernels against simulate()'s
//                  makespan (target: within 3%). checks=1 is the backend's default devices
//                  (poison, race checker); checks=0 turns both off.
//   mlp/...:       the demo's MLP (ppipe-train's defaults: 16 inputs, 4 hidden layers of 256, batch
//                  512, m=16, 1F1B) trained through p = 1, 2 and 4 ranks: real CPU kernels, so the
//                  speedup is bounded by the machine's 2 cores.
// A waiting kernel sleeps, with its thread's timer slack lowered to 1 ns, until `spin_us` before
// its deadline, then yields until the deadline. On the project's VM a sleep still ends 30-60 us late
// (the wake-up, not the slack), so spin_us=100 is the figure to quote and spin_us=0 shows sleeping
// alone. The machine has 2 cores: p=4 runs 4 rank threads on them (each label says so).
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include <ppipe/layers/layers.hpp>
#include <ppipe/ppipe.hpp>
#include <ppipe/runtime/cpu_stream_backend.hpp>

#include "support/waiting_kernel.hpp"

namespace {

using bench::lower_timer_slack;
using bench::wait_kernel;

using clock_type = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Models

// One layer per stage whose forward and backward do nothing: the step is ppipe's own work.
struct empty_model {
  int layers = 1;
  [[nodiscard]] int num_layers() const { return layers; }
  [[nodiscard]] std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  void forward(int, const ppipe::layer_context&, const ppipe::payload&, ppipe::payload&) {}
  void backward(int, const ppipe::layer_context&, const ppipe::payload&, const ppipe::payload&, const ppipe::payload&,
                ppipe::payload&) {}
};

// One layer per stage whose forward waits `forward` and backward waits `backward`.
struct waiting_model {
  int layers = 1;
  std::chrono::nanoseconds forward_time{};
  std::chrono::nanoseconds backward_time{};
  std::chrono::nanoseconds spin{};
  [[nodiscard]] int num_layers() const { return layers; }
  [[nodiscard]] std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  void forward(int, const ppipe::layer_context&, const ppipe::payload&, ppipe::payload&) const {
    wait_kernel(forward_time, spin);
  }
  void backward(int, const ppipe::layer_context&, const ppipe::payload&, const ppipe::payload&, const ppipe::payload&,
                ppipe::payload&) const {
    wait_kernel(backward_time, spin);
  }
  // Zero-bubble schedules split the backward: each half waits half of it.
  void backward_input(int, const ppipe::layer_context&, const ppipe::payload&, const ppipe::payload&,
                      const ppipe::payload&, ppipe::payload&) const {
    wait_kernel(backward_time / 2, spin);
  }
  void backward_weight(int, const ppipe::layer_context&, const ppipe::payload&, const ppipe::payload&,
                       const ppipe::payload&) const {
    wait_kernel(backward_time / 2, spin);
  }
};

double no_loss(const ppipe::payload&, const ppipe::payload&, ppipe::payload&, double) { return 0.0; }

// The CPU-stream backend's devices without poison and race checker: what the streams cost alone.
struct unchecked_streams {
  static ppipe::cpu_device_options device_options(int rank) {
    ppipe::cpu_device_options o;
    o.seed = static_cast<std::uint64_t>(rank);
    o.poison = false;
    o.check_races = false;
    return o;
  }
};

// The tiny batch: one [m, 1] tensor, one row per microbatch.
ppipe::payload rows(int m) { return {ppipe::host_tensor(ppipe::shape{m, 1})}; }

ppipe::pipeline_options options(int p, int m, int v, bool trace) {
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.virtual_stages = v;
  o.record_trace = trace;
  return o;
}

double seconds(clock_type::duration d) { return std::chrono::duration<double>(d).count(); }

std::string threads_label(int p) {
  const unsigned cores = std::thread::hardware_concurrency();
  return std::to_string(p) + " rank threads on " + std::to_string(cores) + " cores";
}

// ---------------------------------------------------------------------------------------------
// (a) Executor overhead: args p, m, record_trace.

template <class Backend>
void overhead_on(benchmark::State& state) {
  const int p = static_cast<int>(state.range(0));
  const int m = static_cast<int>(state.range(1));
  const bool trace = state.range(2) != 0;
  empty_model model{p};
  ppipe::pipeline<empty_model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, Backend> pipe(
      model, options(p, m, 1, trace), no_loss);
  const ppipe::payload in = rows(m);
  const ppipe::schedule& s = pipe.training_schedule();
  std::size_t longest = 0;
  for (const auto& list : s.ranks) longest = std::max(longest, list.size());

  std::vector<double> steps;
  std::vector<double> enqueued;  // the slowest rank's host: when it had issued its last action
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    benchmark::DoNotOptimize(pipe.train_step(in, in));
    const double t = seconds(clock_type::now() - t0);
    state.SetIterationTime(t);
    steps.push_back(t);
    const auto& e = pipe.last_trace().enqueued;
    enqueued.push_back(e.empty() ? 0.0 : *std::max_element(e.begin(), e.end()));
  }
  std::sort(enqueued.begin(), enqueued.end());
  if (!enqueued.empty()) state.counters["enqueue_us_per_rank_action"] = enqueued[enqueued.size() / 2] / static_cast<double>(longest);
  std::sort(steps.begin(), steps.end());
  const double median = steps.empty() ? 0.0 : steps[steps.size() / 2];
  const auto actions = static_cast<double>(s.size());
  state.counters["actions"] = actions;
  state.counters["step_us"] = median * 1e6;
  // The figure: the step over every action of every rank.
  state.counters["us_per_action"] = median * 1e6 / actions;
  // The same step over the longest rank's list: what each rank thread spends per action.
  state.counters["us_per_rank_action"] = median * 1e6 / static_cast<double>(longest);
  state.SetLabel(threads_label(p) + (trace ? "" : ", no trace"));
}

// ---------------------------------------------------------------------------------------------
// (b) Waiting kernels against the simulator: arg spin_us. Every rank does 1 ms forward and 2 ms
// backward per microbatch; with v stages per rank each stage does 1/v of it. A split backward's
// halves (zero-bubble schedules) take 1 ms each: F = I = W, the zero-bubble paper's setting.

// Where a measured step's time goes beyond the simulator's, summed over one or more traces.
struct trace_breakdown {
  // Compute actions: the time they took beyond the cost asked for.
  double late = 0.0;
  double computes = 0.0;
  // Receives the rank had to wait for: from the data's arrival to the start of the compute.
  double wake = 0.0;
  double wakes = 0.0;

  void add(const ppipe::run_trace& trace, const ppipe::cost_model& costs) {
    for (const auto& list : trace.ranks) {
      double ready = 0.0;  // when the rank was done with everything before this event
      const ppipe::trace_event* recv = nullptr;
      for (const ppipe::trace_event& e : list) {
        if (ppipe::is_compute(e.act.kind)) {
          late += e.end - e.start - costs.of(e.act);
          computes += 1.0;
          // A receive is traced just before the compute that needed it; it ends when the data
          // arrived. Arriving after `ready` means the rank was idle, waiting for it.
          if (recv != nullptr && recv->end > ready) {
            wake += e.start - recv->end;
            wakes += 1.0;
          }
        }
        if (ppipe::is_send(e.act.kind) || ppipe::is_compute(e.act.kind)) ready = std::max(ready, e.end);
        recv = ppipe::is_compute(e.act.kind) || ppipe::is_send(e.act.kind) ? nullptr : &e;
      }
    }
  }
  [[nodiscard]] double late_us() const { return computes > 0 ? late / computes : 0.0; }
  [[nodiscard]] double wake_us() const { return wakes > 0 ? wake / wakes : 0.0; }
};

// With `recompute`, every stage has two layers that share its times and recomputes (R): R re-runs
// the first layer, half a forward.
template <class Schedule, class Backend = ppipe::host_backend>
void waiting(benchmark::State& state, int v, bool recompute = false) {
  constexpr int p = 4;
  constexpr int m = 16;
  const double forward_us = 1000.0 / v;
  const double backward_us = 2000.0 / v;
  const int per_stage = recompute ? 2 : 1;
  const auto ns = [](double us) { return std::chrono::nanoseconds(static_cast<std::int64_t>(us * 1000.0)); };
  waiting_model model{p * v * per_stage, ns(forward_us / per_stage), ns(backward_us / per_stage),
                      std::chrono::microseconds(state.range(0))};
  ppipe::pipeline_options o = options(p, m, v, true);
  if (recompute) o.recompute = {ppipe::recompute_policy::full};
  ppipe::pipeline<waiting_model, Schedule, ppipe::partitioners::balanced, Backend> pipe(model, o, no_loss);
  const ppipe::payload in = rows(m);
  const ppipe::schedule& s = pipe.training_schedule();
  // Each layer call is late by `late_us`: a stage's F and B make `per_stage` calls (I and W
  // half of B's time each, as before), R one fewer than F.
  const auto predict = [&](double late_us, double transfer_us) {
    const double k = per_stage;
    const double r = (per_stage - 1) * (forward_us / k + late_us);
    const double f = forward_us + k * late_us;
    const double b = backward_us + k * late_us;
    const ppipe::stage_costs c{f, b, b / 2, b / 2, recompute ? r : f};
    return ppipe::simulate(s, ppipe::cost_model{{c}, transfer_us}, {false, ppipe::transfer_model::buffered});
  };
  const ppipe::simulation predicted = predict(0.0, 0.0);

  double wall = 0.0;
  double span = 0.0;
  double bubble = 0.0;
  trace_breakdown where;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    benchmark::DoNotOptimize(pipe.train_step(in, in));
    const double t = seconds(clock_type::now() - t0);
    state.SetIterationTime(t);
    wall += t;
    span += pipe.last_trace().makespan();
    bubble += pipe.last_trace().bubble_fraction();
    where.add(pipe.last_trace(), predicted.costs);
  }
  const auto n = static_cast<double>(state.iterations());
  const double measured_ms = span / n / 1e3;
  const double wall_ms = wall / n * 1e3;
  const double predicted_ms = predicted.makespan / 1e3;
  // The simulator again, with every kernel as late as the measured mean and every message taking
  // the measured wake-up: if it matches, those two account for the whole difference.
  const double explained_ms = predict(where.late_us(), where.wake_us()).makespan / 1e3;
  state.counters["measured_ms"] = measured_ms;  // the trace's makespan: first start to last end
  state.counters["wall_ms"] = wall_ms;          // train_step as the caller sees it
  state.counters["predicted_ms"] = predicted_ms;
  state.counters["ratio"] = measured_ms / predicted_ms;
  state.counters["wall_ratio"] = wall_ms / predicted_ms;
  state.counters["bubble"] = bubble / n;
  state.counters["predicted_bubble"] = predicted.bubble_fraction();
  state.counters["kernel_late_us"] = where.late_us();
  state.counters["wake_us"] = where.wake_us();
  state.counters["explained_ms"] = explained_ms;
  state.counters["explained_ratio"] = measured_ms / explained_ms;
  // Activation memory: the most microbatches any stage held at once, as the pool counted them (a
  // stage is 1/v of a rank's layers).
  int stage_peak = 0;
  for (int st = 0; st < s.num_stages(); ++st) stage_peak = std::max(stage_peak, pipe.memory(st).peak_microbatches);
  state.counters["peak_stage_microbatches"] = stage_peak;
  state.SetLabel(threads_label(p) + ", v=" + std::to_string(v) + (recompute ? ", recompute" : ""));
}

void waiting_gpipe(benchmark::State& state) { waiting<ppipe::schedules::gpipe>(state, 1); }
void waiting_1f1b(benchmark::State& state) { waiting<ppipe::schedules::one_f_one_b>(state, 1); }
void waiting_interleaved(benchmark::State& state) { waiting<ppipe::schedules::interleaved_1f1b>(state, 2); }
void waiting_zb_h1(benchmark::State& state) { waiting<ppipe::schedules::zb_h1>(state, 1); }
void waiting_zb_v(benchmark::State& state) { waiting<ppipe::schedules::zb_v>(state, 2); }
void waiting_dualpipe_v(benchmark::State& state) { waiting<ppipe::schedules::dualpipe_v>(state, 2); }
void waiting_gpipe_recompute(benchmark::State& state) { waiting<ppipe::schedules::gpipe>(state, 1, true); }
void waiting_1f1b_recompute(benchmark::State& state) { waiting<ppipe::schedules::one_f_one_b>(state, 1, true); }

void overhead(benchmark::State& state) { overhead_on<ppipe::host_backend>(state); }
void overhead_streams(benchmark::State& state) {
  if (state.range(3) != 0) {
    overhead_on<ppipe::cpu_stream_backend>(state);
  } else {
    overhead_on<ppipe::cpu_stream_backend_with<unchecked_streams>>(state);
  }
}
using streams = ppipe::cpu_stream_backend_with<unchecked_streams>;
void streams_gpipe(benchmark::State& state) { waiting<ppipe::schedules::gpipe, streams>(state, 1); }
void streams_1f1b(benchmark::State& state) { waiting<ppipe::schedules::one_f_one_b, streams>(state, 1); }
void streams_interleaved(benchmark::State& state) { waiting<ppipe::schedules::interleaved_1f1b, streams>(state, 2); }
void streams_zb_h1(benchmark::State& state) { waiting<ppipe::schedules::zb_h1, streams>(state, 1); }

// ---------------------------------------------------------------------------------------------
// How late wait_kernel ends, on this thread (its slack lowered as on the rank threads): args
// duration_us, spin_us. Not the simulator's business, but the floor under waiting/'s accuracy.

void wait_precision(benchmark::State& state) {
  const auto d = std::chrono::microseconds(state.range(0));
  const auto spin = std::chrono::microseconds(state.range(1));
  double late = 0.0;
  double worst = 0.0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    wait_kernel(d, spin);
    const double t = seconds(clock_type::now() - t0);
    state.SetIterationTime(t);
    const double over = (t - seconds(d)) * 1e6;
    late += over;
    worst = std::max(worst, over);
  }
  state.counters["late_us"] = late / static_cast<double>(state.iterations());
  state.counters["worst_late_us"] = worst;
}

}  // namespace

BENCHMARK(overhead)
    ->Name("overhead/1f1b")
    ->ArgNames({"p", "m", "trace"})
    ->Args({1, 16, 1})
    ->Args({2, 16, 1})
    ->Args({4, 16, 1})
    ->Args({1, 64, 1})
    ->Args({2, 64, 1})
    ->Args({4, 64, 1})
    ->Args({2, 64, 0})
    ->Args({4, 64, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// About 60 ms a step: 5 steps a repetition.
static void waiting_settings(benchmark::internal::Benchmark* b) {
  b->ArgName("spin_us")->Arg(0)->Arg(50)->Arg(100)->Iterations(5)->UseManualTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(waiting_gpipe)->Name("waiting/gpipe_p4_m16")->Apply(waiting_settings);
BENCHMARK(waiting_1f1b)->Name("waiting/1f1b_p4_m16")->Apply(waiting_settings);
BENCHMARK(waiting_interleaved)->Name("waiting/interleaved_1f1b_p4_m16_v2")->Apply(waiting_settings);
BENCHMARK(waiting_zb_h1)->Name("waiting/zb_h1_p4_m16")->Apply(waiting_settings);
BENCHMARK(waiting_zb_v)->Name("waiting/zb_v_p4_m16_v2")->Apply(waiting_settings);
BENCHMARK(waiting_dualpipe_v)->Name("waiting/dualpipe_v_p4_m16_v2")->Apply(waiting_settings);
BENCHMARK(waiting_gpipe_recompute)->Name("waiting/gpipe_p4_m16_recompute")->Apply(waiting_settings);
BENCHMARK(waiting_1f1b_recompute)->Name("waiting/1f1b_p4_m16_recompute")->Apply(waiting_settings);

BENCHMARK(overhead_streams)
    ->Name("cpu_streams/overhead/1f1b")
    ->ArgNames({"p", "m", "trace", "checks"})
    ->Args({2, 16, 1, 0})
    ->Args({4, 16, 1, 0})
    ->Args({4, 64, 1, 0})
    ->Args({4, 16, 1, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
static void streams_settings(benchmark::internal::Benchmark* b) {
  b->ArgName("spin_us")->Arg(100)->Iterations(5)->UseManualTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(streams_gpipe)->Name("cpu_streams/waiting/gpipe_p4_m16")->Apply(streams_settings);
BENCHMARK(streams_1f1b)->Name("cpu_streams/waiting/1f1b_p4_m16")->Apply(streams_settings);
BENCHMARK(streams_interleaved)->Name("cpu_streams/waiting/interleaved_1f1b_p4_m16_v2")->Apply(streams_settings);
BENCHMARK(streams_zb_h1)->Name("cpu_streams/waiting/zb_h1_p4_m16")->Apply(streams_settings);

BENCHMARK(wait_precision)
    ->ArgNames({"us", "spin_us"})
    ->Args({500, 0})
    ->Args({500, 100})
    ->Args({1000, 0})
    ->Args({1000, 100})
    ->Iterations(200)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

namespace {

// The demo's MLP and data (examples/train_mlp.cpp): inputs in [-1, 1), a smooth target.
void mlp(benchmark::State& state) {
  const int p = static_cast<int>(state.range(0));
  const std::int64_t rows = 512;
  const int inputs = 16;
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{rows, inputs})};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{rows, 1})};
  for (std::size_t i = 0; i < x[0].size(); ++i) x[0][i] = static_cast<float>((i * 7919) % 2000) / 1000.0f - 1.0f;
  for (std::size_t r = 0; r < y[0].size(); ++r) y[0][r] = static_cast<float>(r % 17) / 17.0f;
  auto model = ppipe::layers::sequential::mlp({inputs, 256, 256, 256, 256, 1}, 2026);
  const ppipe::layers::sgd sgd(0.01f);
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = 16;
  o.record_trace = false;
  ppipe::pipeline<ppipe::layers::sequential> pipe(model, o, ppipe::layers::mse_loss{},
                                                  [&](const ppipe::stage_info& s) { sgd.step(model, s); });
  pipe.train_step(x, y);  // allocate every buffer once
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    benchmark::DoNotOptimize(pipe.train_step(x, y));
    state.SetIterationTime(std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  state.counters["samples_per_s"] = benchmark::Counter(static_cast<double>(rows) * static_cast<double>(state.iterations()),
                                                       benchmark::Counter::kIsRate);
  state.SetLabel(p == 4 ? "4 rank threads on 2 cores" : std::to_string(p) + " rank thread(s)");
}

}  // namespace

BENCHMARK(mlp)->ArgName("p")->Arg(1)->Arg(2)->Arg(4)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);

BENCHMARK_MAIN();
