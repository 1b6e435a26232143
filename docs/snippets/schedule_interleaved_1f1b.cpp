// Interleaved 1F1B: the numbers of docs/schedules/interleaved-1f1b.md, checked against the
// simulator. Exits 1 and says which number differs if the schedule no longer matches its formulas.
#include <algorithm>
#include <cstddef>
#include <iostream>
#include <string>

#include <ppipe/schedule.hpp>

#include "schedule_check.hpp"

namespace {

using namespace schedule_check;

// Megatron's warm-up on rank r; with m == p every forward runs first.
int warmup(int p, int m, int v, int r) { return m == p ? m * v : std::min(m * v, 2 * (p - r - 1) + (v - 1) * p); }

void run() {
  // p = 4 ranks, m = 8, v = 2: rank r holds stages r and r + 4. A rank's share of the model costs
  // F = 1 and B = 2, so each of its two stages costs F = 0.5 and B = 1.
  const ppipe::schedule plan = ppipe::make_schedule(ppipe::schedules::interleaved_1f1b{}, {4, 8, 2});
  const ppipe::simulation sim = ppipe::simulate(plan, ppipe::cost_model::uniform(0.5, 1));
  expect(sim.makespan == 28.5, "step time (v*m+p-1)(F+B) per stage = 19 * 1.5 = 28.5");
  expect(sim.total_idle() * 2 * 8 == 3 * sim.total_busy(), "bubble (p-1)/(v*m) = 3/16 of the compute");
  expect(sim.total_idle() * 19 == 3 * 4 * sim.makespan, "bubble (p-1)/(v*m+p-1) = 3/19 of the step");
  const int peaks[] = {11, 9, 7, 5};  // warm-up + 1 stage-microbatches, each half a rank's share
  for (int r = 0; r < 4; ++r) {
    expect(sim.peak_rank_activations[static_cast<std::size_t>(r)] == peaks[r], "rank r holds min(v*m, warm-up + 1)");
  }
  expect(transfer_actions(plan) == 224, "4(p*v-1)m = 224 transfer actions (112 messages)");
  expect(ppipe::advise(plan, sim).empty(), "15.8% idle: no warning");
  try {
    ppipe::make_schedule("interleaved", {4, 6, 2});
    expect(false, "m = 6 is not a multiple of p = 4 and must be refused");
  } catch (const ppipe::error& e) {
    expect(std::string(e.what()).find("use m=4 or m=8") != std::string::npos, "the refusal names m=4 or m=8");
  }

  // The same formulas over a grid of p, v and m (a multiple of p), F = 1 and B = 2 per stage.
  for (int p = 2; p <= 8; ++p) {
    for (int v = 2; v <= 4; ++v) {
      for (int m = p; m <= 4 * p; m += p) {
        const auto grid = ppipe::simulate(ppipe::make_schedule("interleaved_1f1b", {p, m, v}), ppipe::cost_model::uniform(1, 2));
        expect(grid.makespan == (v * m + p - 1) * 3, "step time (v*m+p-1)(F+B) per stage over the grid");
        for (int r = 0; r < p; ++r) {
          expect(grid.peak_rank_activations[static_cast<std::size_t>(r)] == std::min(v * m, warmup(p, m, v, r) + 1),
                 "min(v*m, warm-up + 1) per rank over the grid");
        }
      }
    }
  }
  std::cout << "interleaved_1f1b p=4 m=8 v=2: step " << sim.makespan << ", bubble " << percent(sim.bubble_fraction())
            << ", peak activations 11 9 7 5 stage-microbatches on ranks 0..3, " << transfer_actions(plan)
            << " transfer actions\n";
  for (int r = 0; r < 4; ++r) std::cout << "rank " << r << ": " << compute_order(plan, r) << '\n';
}

}  // namespace

int main() { return schedule_check::finish("schedule_interleaved_1f1b", run); }
