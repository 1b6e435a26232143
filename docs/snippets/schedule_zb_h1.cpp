// ZB-H1: the numbers of docs/schedules/zb-h1.md, checked against the simulator. Exits 1 and says
// which number differs if the schedule no longer matches its formulas.
#include <algorithm>
#include <cstddef>
#include <iostream>
#include <string>

#include <ppipe/schedule.hpp>

#include "schedule_check.hpp"

namespace {

using namespace schedule_check;

void run() {
  // p = 4 ranks, m = 8 microbatches; F = 1, B = 2 (for 1F1B), I = W = 1 (for ZB-H1) per stage.
  const ppipe::cost_model costs{{ppipe::stage_costs{1, 2, 1, 1}}, 0.0};
  const ppipe::schedule plan = ppipe::make_schedule(ppipe::schedules::zb_h1{}, {4, 8, 1});
  const ppipe::simulation sim = ppipe::simulate(plan, costs);
  const ppipe::simulation one = ppipe::simulate(ppipe::make_schedule("1f1b", {4, 8, 1}), costs);
  expect(plan.splits_backward(), "ZB-H1 runs I and W instead of B");
  expect(sim.makespan == 8 * 3 + 3 * (1 + 1 - 1), "step time m(F+I+W) + (p-1)(F+I-W) = 24 + 3 = 27");
  expect(one.makespan == 8 * 3 + 3 * (1 + 1 + 1), "1F1B: m(F+I+W) + (p-1)(F+I+W) = 24 + 9 = 33");
  for (int r = 0; r < 4; ++r) {
    expect(sim.peak_rank_activations[static_cast<std::size_t>(r)] == 4, "every rank holds min(p, m) = 4");
  }
  expect(transfer_actions(plan) == 96, "4(p-1)m = 96 transfer actions, as 1F1B");
  expect(ppipe::advise(plan, sim).empty(), "11.1% idle: no warning");

  // The same formulas over a grid with m >= p, under both transfer models.
  for (int p = 1; p <= 8; ++p) {
    for (int m = p; m <= 4 * p + 3; ++m) {
      for (const auto model : {ppipe::transfer_model::rendezvous, ppipe::transfer_model::buffered}) {
        const auto grid = ppipe::simulate(ppipe::make_schedule("zb_h1", {p, m, 1}), costs, {false, model});
        expect(grid.makespan == 3 * m + (p - 1), "step time m(F+I+W) + (p-1)(F+I-W) over p <= 8, m >= p");
        for (const int peak : grid.peak_rank_activations) expect(peak == std::min(p, m), "min(p, m) per rank");
      }
    }
  }
  std::cout << "zb_h1 p=4 m=8: step " << sim.makespan << " (1F1B " << one.makespan << "), bubble "
            << percent(sim.bubble_fraction()) << ", peak 4 microbatches on every rank\n";
  for (int r = 0; r < 4; ++r) std::cout << "rank " << r << ": " << compute_order(plan, r) << '\n';
}

}  // namespace

int main() { return schedule_check::finish("schedule_zb_h1", run); }
