// GPipe: the numbers of docs/schedules/gpipe.md, checked against the simulator. Exits 1 and says
// which number differs if the schedule no longer matches its formulas.
#include <cstddef>
#include <iostream>
#include <string>
#include <vector>

#include <ppipe/schedule.hpp>

#include "schedule_check.hpp"

namespace {

using namespace schedule_check;

void run() {
  // p = 4 ranks, m = 8 microbatches, F = 1 and B = 2 per stage, free transfers.
  const ppipe::schedule plan = ppipe::make_schedule(ppipe::schedules::gpipe{}, {4, 8, 1});
  const ppipe::simulation sim = ppipe::simulate(plan, ppipe::cost_model::uniform(1, 2));
  expect(sim.makespan == 33, "step time (m+p-1)(F+B) = 11 * 3 = 33");
  expect(sim.total_idle() * 11 == 3 * 4 * sim.makespan, "bubble (p-1)/(m+p-1) = 3/11 of the step");
  expect(sim.total_idle() * 8 == 3 * sim.total_busy(), "bubble (p-1)/m = 3/8 of the compute");
  for (int s = 0; s < 4; ++s) {
    expect(sim.peak_stage_activations[static_cast<std::size_t>(s)] == 8, "every stage holds all m = 8");
  }
  expect(transfer_actions(plan) == 96, "4(p-1)m = 96 transfer actions (48 messages)");
  const std::vector<std::string> advice = ppipe::advise(plan, sim);
  expect(advice.size() == 1 && advice[0].find("about m >= 12") != std::string::npos, "advice: about m >= 12");

  // The same formulas over a grid, with other costs.
  for (int p = 1; p <= 8; ++p) {
    for (int m = 1; m <= 20; ++m) {
      const auto grid = ppipe::simulate(ppipe::make_schedule("gpipe", {p, m, 1}), ppipe::cost_model::uniform(2, 3));
      expect(grid.makespan == (m + p - 1) * 5, "step time (m+p-1)(F+B) over p <= 8, m <= 20");
      for (const int peak : grid.peak_stage_activations) expect(peak == m, "m activations per stage");
    }
  }
  std::cout << "gpipe p=4 m=8: step " << sim.makespan << ", bubble " << percent(sim.bubble_fraction())
            << ", peak " << sim.peak_stage_activations[0] << " microbatches on every stage, "
            << transfer_actions(plan) << " transfer actions\n";
  for (const std::string& warning : advice) std::cout << "warning: " << warning << '\n';
}

}  // namespace

int main() { return schedule_check::finish("schedule_gpipe", run); }
