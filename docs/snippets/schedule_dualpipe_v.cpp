// DualPipeV: the numbers of docs/schedules/dualpipe-v.md, checked against the simulator. Exits 1
// and says which number differs if the schedule no longer matches its formulas.
#include <algorithm>
#include <cstddef>
#include <iostream>
#include <string>

#include <ppipe/schedule.hpp>

#include "schedule_check.hpp"

namespace {

using namespace schedule_check;

int pairs(const ppipe::schedule& s) {
  int n = 0;
  for (const auto& list : s.ranks) n += static_cast<int>(std::count_if(list.begin(), list.end(), [](const ppipe::action& a) { return a.paired; }));
  return n;
}

void run() {
  // p = 4 ranks, m = 8 microbatches, v = 2 stages per rank in a V. A rank's share of the model
  // costs F = 1 and B = 2, so each of its two stages costs f = 0.5 and b = 1 (i = w = 0.5).
  const ppipe::schedule plan = ppipe::make_schedule(ppipe::schedules::dualpipe_v{}, {4, 8, 2});
  const ppipe::simulation sim = ppipe::simulate(plan, ppipe::cost_model::uniform(0.5, 1));
  for (int r = 0; r < 4; ++r) {
    expect(plan.place.rank_of(r) == r && plan.place.rank_of(7 - r) == r, "rank r holds stages r and 2p-1-r");
  }
  const int peak = *std::max_element(sim.peak_rank_activations.begin(), sim.peak_rank_activations.end());
  expect(peak == 9, "2p+1 = 9 stage-microbatches at the peak");
  expect(sim.makespan == 8 * 2 * 1.5 + 3 * 1.5, "step time 2m(f+b) + (p-1) max(2f, f+b, 3b/2) = 24 + 4.5 = 28.5");
  expect(transfer_actions(plan) == 192, "8(p-1)m = 192 transfer actions (96 messages)");
  expect(pairs(plan) == 25, "2p(m-2p+1) + 3p(p-1)/2 - 1 = 25 paired F&B actions");
  const double zb_v = ppipe::simulate(ppipe::make_schedule("zb_v", {4, 8, 2}), ppipe::cost_model::uniform(0.5, 1)).makespan;
  const double one_f_one_b = ppipe::simulate(ppipe::make_schedule("1f1b", {4, 8, 1}), ppipe::cost_model::uniform(1, 2)).makespan;
  expect(zb_v == 25.5 && one_f_one_b == 33, "ZB-V 25.5 and 1F1B 33 on the same model");

  // Over a grid with m >= 2p, f = 1 and b = 2 per stage: the bubble is (p-1)(f+b), half of 1F1B's
  // on the same layers; 2p+1 stage-microbatches at the peak.
  for (int p = 1; p <= 8; ++p) {
    for (int m = 2 * p; m <= 4 * p + 3; ++m) {
      const ppipe::schedule s = ppipe::make_schedule("dualpipe_v", {p, m, 2});
      for (const auto model : {ppipe::transfer_model::rendezvous, ppipe::transfer_model::buffered}) {
        expect(ppipe::check_schedule(s, model).ok(), "complete and deadlock-free under both transfer models");
        const auto grid = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2), {false, model});
        expect(grid.makespan - 6 * m == 3 * (p - 1), "bubble (p-1)(f+b) per rank");
        const int most = *std::max_element(grid.peak_rank_activations.begin(), grid.peak_rank_activations.end());
        expect(most == 2 * p + 1, "2p+1 at the peak");
      }
    }
  }
  std::cout << "dualpipe_v p=4 m=8: step " << sim.makespan << ", bubble " << percent(sim.bubble_fraction()) << ", peak "
            << peak << " stage-microbatches, " << pairs(plan) << " pairs, " << transfer_actions(plan)
            << " transfer actions; zb_v " << zb_v << ", 1f1b " << one_f_one_b << '\n';
  for (int r = 0; r < 4; ++r) std::cout << "rank " << r << ": " << compute_order(plan, r, 16) << '\n';
}

}  // namespace

int main() { return schedule_check::finish("schedule_dualpipe_v", run); }
