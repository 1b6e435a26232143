// Forward only: the numbers of docs/schedules/forward-only.md, checked against the simulator.
// Exits 1 and says which number differs if the schedule no longer matches its formulas.
#include <cstddef>
#include <iostream>
#include <string>
#include <vector>

#include <ppipe/schedule.hpp>

#include "schedule_check.hpp"

namespace {

using namespace schedule_check;

// The step in forwards of one stage: v*m + p - 1 when p divides m or v = 1; with m = q*p + r and
// 0 < r < p, each of the last group's v - 1 chunk changes idles p - r more.
int steps(int p, int m, int v) {
  const int q = m / p;
  const int r = m % p;
  return r == 0 ? v * m + p - 1 : q * p * v + r * v + (v - 1) * (p - r) + p - 1;
}

void run() {
  // p = 4 ranks, m = 8 requests, v = 2: a rank's share of the model costs F = 1, each stage 0.5.
  const ppipe::schedule plan = ppipe::make_schedule(ppipe::schedules::forward_only{}, {4, 8, 2});
  const ppipe::simulation sim = ppipe::simulate(plan, ppipe::cost_model::uniform(0.5, 1));
  expect(plan.mode == ppipe::schedule_mode::inference, "an inference schedule");
  expect(sim.makespan == (2 * 8 + 3) * 0.5, "step time (v*m+p-1)F = 19 * 0.5 = 9.5");
  expect(sim.total_idle() * 19 == 3 * 4 * sim.makespan, "bubble (p-1)/(v*m+p-1) = 3/19 of the step");
  for (const int peak : sim.peak_stage_activations) expect(peak == 1, "one microbatch per stage");
  expect(transfer_actions(plan) == 112, "2(p*v-1)m = 112 transfer actions (56 messages)");
  expect(ppipe::advise(plan, sim).empty(), "15.8% idle: no warning");
  const ppipe::schedule flat = ppipe::make_schedule("forward_only", {4, 8, 1});
  expect(ppipe::simulate(flat, ppipe::cost_model::uniform(1, 2)).makespan == 11, "v = 1: (m+p-1)F = 11");

  // m = 6 is not a multiple of p: the last group of 2 leaves the ring idle, and advise says so.
  const ppipe::schedule partial = ppipe::make_schedule("forward_only", {4, 6, 2});
  const ppipe::simulation gaps = ppipe::simulate(partial, ppipe::cost_model::uniform(0.5, 1));
  expect(gaps.makespan == steps(4, 6, 2) * 0.5, "q*p*v + r*v + (v-1)(p-r) + p-1 = 17 steps of 0.5");
  const std::vector<std::string> advice = ppipe::advise(partial, gaps);
  expect(advice.size() == 1 && advice[0].find("about m >= 8") != std::string::npos, "m = 6: about m >= 8");

  // The step over a grid of p, m and v.
  for (int p = 1; p <= 6; ++p) {
    for (int v = 1; v <= 3; ++v) {
      for (int m = 1; m <= 3 * p + 1; ++m) {
        const auto grid = ppipe::simulate(ppipe::make_schedule("forward_only", {p, m, v}), ppipe::cost_model::uniform(1, 2));
        expect(grid.makespan == steps(p, m, v), "the step over p <= 6, v <= 3, m <= 3p+1");
      }
    }
  }
  std::cout << "forward_only p=4 m=8 v=2: step " << sim.makespan << ", bubble " << percent(sim.bubble_fraction())
            << "; m=6: step " << gaps.makespan << ", bubble " << percent(gaps.bubble_fraction()) << '\n';
  std::cout << "m=8, rank 0: " << compute_order(plan, 0) << '\n';
  std::cout << "m=6, rank 0: " << compute_order(partial, 0) << '\n';
  for (const std::string& warning : advice) std::cout << "warning: " << warning << '\n';
}

}  // namespace

int main() { return schedule_check::finish("schedule_forward_only", run); }
