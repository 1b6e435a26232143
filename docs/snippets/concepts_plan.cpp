// concepts_plan: the snippets of docs/concepts.md, and the numbers its pictures show. Stages on
// ranks, microbatches, the bubble, memory, the partition and the transfers are each a value that
// ppipe computes before anything runs; this program computes each one and checks it, then trains a
// small model to show that the runtime holds what the plan says.

#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include <ppipe/ppipe.hpp>

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what);
  if (!ok) ++failures;
}

// y = x + b, one trainable b per layer: the smallest layer that trains.
struct shift {
  float b = 0.0f, grad_b = 0.0f;
  std::vector<ppipe::shape> output_shapes(const std::vector<ppipe::shape>& in) const { return in; }
  void forward(const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) {
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = in[0][i] + b;
  }
  void backward(const ppipe::layer_context&, const ppipe::payload&, const ppipe::payload&, const ppipe::payload& g,
                ppipe::payload& g_in) {
    for (std::size_t i = 0; i < g[0].size(); ++i) {
      grad_b += g[0][i];
      if (!g_in.empty()) g_in[0][i] = g[0][i];
    }
  }
};

double mse(const ppipe::payload& y, const ppipe::payload& target, ppipe::payload& grad, double scale) {
  double sum = 0.0;
  const auto n = static_cast<double>(y[0].size());
  for (std::size_t i = 0; i < y[0].size(); ++i) {
    const double d = static_cast<double>(y[0][i]) - static_cast<double>(target[0][i]);
    sum += d * d;
    grad[0][i] = static_cast<float>(scale * 2.0 * d / n);
  }
  return sum / n;
}

// Trains 8 shift layers on p = 4 rank threads with m = 8 microbatches under `Schedule`, and
// returns the most microbatches of activations each stage held.
template <class Schedule>
std::vector<int> held_per_stage() {
  auto model = ppipe::layer_stack(ppipe::repeat(8, [](int) { return shift{}; }));
  ppipe::pipeline_options options;
  options.ranks = 4;         // p
  options.microbatches = 8;  // m
  ppipe::pipeline<decltype(model), Schedule> pipe(model, options, mse);
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{32, 4})};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{32, 4})};
  pipe.train_step(x, y);  // 32 rows: 8 microbatches of 4 rows
  std::vector<int> held;
  for (int s = 0; s < 4; ++s) held.push_back(pipe.memory(s).peak_microbatches);
  expect(pipe.split().sizes() == std::vector<int>{2, 2, 2, 2}, "8 equal layers: 2 per stage");
  return held;
}

}  // namespace

int main() {
  // [placement]
  // 4 stages on 2 ranks, 2 per rank (v = 2): stage s runs on rank s % 2.
  const ppipe::placement looped = ppipe::placement::looped(2, 2);
  expect(looped.rank_of(2) == 0 && looped.rank_of(3) == 1, "stages 0 and 2 on rank 0, 1 and 3 on rank 1");
  // Neighbouring stages on one rank hand their data over without a transfer.
  const ppipe::placement paired = ppipe::placement::custom({0, 0, 1, 1}, 2);
  expect(!paired.crosses_after(0) && paired.crosses_after(1), "only stages 1 and 2 exchange data between ranks");
  // [placement]

  // [bubble]
  // GPipe over p = 4 ranks with m = 4 microbatches; every stage's forward costs 1, its backward 2.
  const ppipe::schedule gpipe = ppipe::make_schedule(ppipe::schedules::gpipe{}, {4, 4, 1});
  const ppipe::simulation sim = ppipe::simulate(gpipe, ppipe::cost_model::uniform(1.0, 2.0));
  // The step takes (m + p - 1)(F + B) = 21; each rank computes 12 and idles 9.
  expect(sim.makespan == 21.0 && sim.idle(0) == 9.0, "step 21, rank 0 idle 9");
  expect(std::abs(sim.bubble_fraction() - ppipe::ideal_bubble_fraction(4, 4)) < 1e-12, "bubble (p-1)/(m+p-1) = 3/7");
  // [bubble]
  expect(sim.total_idle() == 36.0, "every rank idles 9: 36 of p x step = 84");

  // [small_m]
  // One microbatch: one rank works at a time. With 0.5 per message the pipeline loses to one device.
  const ppipe::schedule one = ppipe::make_schedule("1f1b", {4, 1, 1});
  const ppipe::simulation slow = ppipe::simulate(one, ppipe::cost_model::uniform(1.0, 2.0, 0.5));
  expect(slow.speedup() < 1.0, "speedup 0.8: slower than one device");
  for (const std::string& warning : ppipe::advise(one, slow)) std::printf("warning: %s\n", warning.c_str());
  // [small_m]
  expect(std::abs(slow.speedup() - 0.8) < 1e-12, "p = 4, m = 1, transfers of 0.5: speedup 0.8");

  // The page's table of m: 1F1B with p = 4, forward 1 and backward 2, free transfers.
  const std::pair<int, double> by_m[] = {{1, 1.0}, {4, 2.29}, {8, 2.91}, {16, 3.37}, {32, 3.66}};
  for (const auto& [m, speedup] : by_m) {
    const ppipe::schedule s = ppipe::make_schedule("1f1b", {4, m, 1});
    const ppipe::simulation t = ppipe::simulate(s, ppipe::cost_model::uniform(1.0, 2.0));
    expect(t.makespan == 3.0 * (m + 3) && std::abs(t.bubble_fraction() - ppipe::ideal_bubble_fraction(4, m)) < 1e-12 &&
               std::abs(t.speedup() - speedup) < 0.005,
           "1F1B, p = 4: step 3(m + 3), bubble 3/(m + 3), the table's speedup");
  }

  // The page's table of schedules, as the gallery draws them: p = 4, m = 8, forward 1 and backward
  // 2 for one rank's share of the model (halved on each of two stages per rank).
  const struct {
    const char* name;
    int v;
    double bubble_percent;
  } gallery[] = {{"gpipe", 1, 27.3},   {"1f1b", 1, 27.3}, {"interleaved_1f1b", 2, 15.8},
                 {"zb_h1", 1, 11.1},   {"zb_v", 2, 5.9},  {"forward_only", 2, 15.8}};
  for (const auto& g : gallery) {
    const ppipe::schedule s = ppipe::make_schedule(g.name, {4, 8, g.v});
    const ppipe::simulation t = ppipe::simulate(s, ppipe::cost_model::uniform(1.0 / g.v, 2.0 / g.v));
    expect(std::abs(100.0 * t.bubble_fraction() - g.bubble_percent) < 0.05, g.name);
  }

  // [memory]
  // Microbatches of activations each stage holds at its peak, p = 4 and m = 8.
  const std::vector<int> gpipe_holds = ppipe::in_flight_peaks(ppipe::make_schedule("gpipe", {4, 8, 1}));
  const std::vector<int> one_f_one_b_holds = ppipe::in_flight_peaks(ppipe::make_schedule("1f1b", {4, 8, 1}));
  expect(gpipe_holds == std::vector<int>{8, 8, 8, 8}, "GPipe: m on every stage");
  expect(one_f_one_b_holds == std::vector<int>{4, 3, 2, 1}, "1F1B: p - s on stage s");
  // [memory]
  expect(held_per_stage<ppipe::schedules::gpipe>() == gpipe_holds, "the runtime holds what GPipe's plan says");
  expect(held_per_stage<ppipe::schedules::one_f_one_b>() == one_f_one_b_holds, "the runtime holds what 1F1B's plan says");

  // [partition]
  // 8 layers on 2 ranks under 1F1B, m = 8; the last layer costs 4 times as much as the others.
  std::vector<ppipe::layer_cost> layers(8, ppipe::layer_cost{1.0, 2.0, 0.0, 0.0});
  layers.back() = {4.0, 8.0, 0.0, 0.0};
  const ppipe::schedule plan = ppipe::make_schedule("1f1b", {2, 8, 1});
  const auto problem = ppipe::partition_problem::for_schedule(plan, layers);
  const ppipe::partition_report even = ppipe::plan_partition(ppipe::partitioners::uniform{}, problem);
  const ppipe::partition_report best = ppipe::plan_partition(ppipe::partitioners::balanced{}, problem);
  // 4/4 puts 21 on stage 1; 5/3 puts 15 and 18. Each step is (m - 1) x the slowest stage + 33.
  expect(even.bottleneck_time() == 21.0 && ppipe::predict(plan, problem, even.split).step_time() == 180.0, "4/4: 180");
  expect(best.bottleneck_time() == 18.0 && ppipe::predict(plan, problem, best.split).step_time() == 159.0, "5/3: 159");
  // [partition]
  expect(even.sizes() == "4/4" && best.sizes() == "5/3", "the splits are 4/4 and 5/3");

  // [transfers]
  // GPipe's step above: per microbatch, one activation goes down and one gradient comes back up
  // across each of the p - 1 boundaries between ranks.
  int sends = 0;
  for (const std::vector<ppipe::action>& list : gpipe.ranks) {
    for (const ppipe::action& a : list) sends += ppipe::is_send(a.kind) ? 1 : 0;
  }
  expect(sends == 2 * 3 * 4, "24 sends: 2 per microbatch per boundary");
  // [transfers]

  std::printf("%s\n", failures == 0 ? "every figure of docs/concepts.md holds" : "SOME FIGURES DO NOT HOLD");
  return failures == 0 ? 0 : 1;
}
