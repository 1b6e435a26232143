// ZB-V: the numbers of docs/schedules/zb-v.md, checked against the simulator. Exits 1 and says
// which number differs if the schedule no longer matches its formulas.
#include <cstddef>
#include <iostream>
#include <string>

#include <ppipe/schedule.hpp>

#include "schedule_check.hpp"

namespace {

using namespace schedule_check;

void run() {
  // p = 4 ranks, m = 8 microbatches, v = 2 stages per rank in a V. A rank's share of the model
  // costs F = 1 and I = W = 1, so each of its two stages costs f = i = w = 0.5.
  const ppipe::schedule plan = ppipe::make_schedule(ppipe::schedules::zb_v{}, {4, 8, 2});
  const ppipe::simulation sim = ppipe::simulate(plan, ppipe::cost_model{{ppipe::stage_costs{0.5, 1, 0.5, 0.5}}, 0.0});
  for (int r = 0; r < 4; ++r) {
    expect(plan.place.rank_of(r) == r && plan.place.rank_of(7 - r) == r, "rank r holds stages r and 2p-1-r");
    expect(sim.peak_rank_activations[static_cast<std::size_t>(r)] == 8, "2 min(p, m) = 8 stage-microbatches");
  }
  expect(sim.makespan == 8 * 2 * 1.5 + 3 * 0.5, "step time 2m(f+i+w) + (p-1)f = 24 + 1.5 = 25.5");
  expect(transfer_actions(plan) == 192, "8(p-1)m = 192 transfer actions (96 messages)");
  expect(ppipe::advise(plan, sim).empty(), "5.9% idle: no warning");

  // Over a grid with m >= p, f = i = w = 1 per stage: exactly the fill (p-1)f for p <= 4, at most
  // twice it beyond; 2p stage-microbatches of activations at the peak on every rank.
  const ppipe::cost_model unit{{ppipe::stage_costs{1, 2, 1, 1}}, 0.0};
  for (int p = 1; p <= 8; ++p) {
    for (int m = p; m <= 4 * p + 3; ++m) {
      for (const auto model : {ppipe::transfer_model::rendezvous, ppipe::transfer_model::buffered}) {
        const auto grid = ppipe::simulate(ppipe::make_schedule("zb_v", {p, m, 2}), unit, {false, model});
        const double bubble = grid.makespan - 6 * m;
        if (p <= 4) expect(bubble == p - 1, "bubble (p-1)f per rank for p <= 4");
        expect(bubble >= p - 1 && bubble <= 2 * (p - 1), "bubble between (p-1)f and 2(p-1)f");
        for (const int peak : grid.peak_rank_activations) expect(peak == 2 * p, "2p per rank");
      }
    }
  }
  std::cout << "zb_v p=4 m=8: step " << sim.makespan << ", bubble " << percent(sim.bubble_fraction())
            << ", peak 8 stage-microbatches on every rank, " << transfer_actions(plan) << " transfer actions\n";
  for (int r = 0; r < 4; ++r) std::cout << "rank " << r << ": " << compute_order(plan, r, 16) << '\n';
}

}  // namespace

int main() { return schedule_check::finish("schedule_zb_v", run); }
