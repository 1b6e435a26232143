// 1F1B: the numbers of docs/schedules/1f1b.md, checked against the simulator. Exits 1 and says
// which number differs if the schedule no longer matches its formulas.
#include <algorithm>
#include <cstddef>
#include <iostream>
#include <string>

#include <ppipe/schedule.hpp>

#include "schedule_check.hpp"

namespace {

using namespace schedule_check;

// Forwards rank r runs before its first backward: its warm-up plus the first steady forward.
int forwards_before_first_backward(const ppipe::schedule& s, int r) {
  int n = 0;
  for (const ppipe::action& a : s.ranks[static_cast<std::size_t>(r)]) {
    if (a.kind == ppipe::action_kind::backward) break;
    n += a.kind == ppipe::action_kind::forward ? 1 : 0;
  }
  return n;
}

void run() {
  // p = 4 ranks, m = 8 microbatches, F = 1 and B = 2 per stage, free transfers.
  const ppipe::schedule plan = ppipe::make_schedule(ppipe::schedules::one_f_one_b{}, {4, 8, 1});
  const ppipe::simulation sim = ppipe::simulate(plan, ppipe::cost_model::uniform(1, 2));
  expect(sim.makespan == 33, "step time (m+p-1)(F+B) = 11 * 3 = 33, as GPipe");
  expect(sim.total_idle() * 11 == 3 * 4 * sim.makespan, "bubble (p-1)/(m+p-1) = 3/11 of the step");
  const int peaks[] = {4, 3, 2, 1};  // min(p-s, m)
  for (int s = 0; s < 4; ++s) {
    expect(sim.peak_stage_activations[static_cast<std::size_t>(s)] == peaks[s], "stage s holds min(p-s, m)");
    expect(forwards_before_first_backward(plan, s) == 4 - s, "p-r-1 warm-up forwards, then F B F B ...");
  }
  expect(ppipe::advise(plan, sim).size() == 1, "one warning: 27.3% idle, about m >= 12");
  const ppipe::schedule twelve = ppipe::make_schedule("1f1b", {4, 12, 1});
  expect(ppipe::advise(twelve, ppipe::simulate(twelve, ppipe::cost_model::uniform(1, 2))).empty(), "m = 12: no warning");

  // The same formulas over a grid, with other costs.
  for (int p = 1; p <= 8; ++p) {
    for (int m = 1; m <= 20; ++m) {
      const auto grid = ppipe::simulate(ppipe::make_schedule("1f1b", {p, m, 1}), ppipe::cost_model::uniform(2, 3));
      expect(grid.makespan == (m + p - 1) * 5, "step time (m+p-1)(F+B) over p <= 8, m <= 20");
      for (int s = 0; s < p; ++s) {
        expect(grid.peak_stage_activations[static_cast<std::size_t>(s)] == std::min(p - s, m), "min(p-s, m) per stage");
      }
    }
  }
  std::cout << "1f1b p=4 m=8: step " << sim.makespan << ", bubble " << percent(sim.bubble_fraction())
            << ", peak activations 4 3 2 1 on stages 0..3\n";
  for (int r = 0; r < 4; ++r) std::cout << "rank " << r << ": " << compute_order(plan, r) << '\n';
}

}  // namespace

int main() { return schedule_check::finish("schedule_1f1b", run); }
