#pragma once
/// @file
/// @brief How many microbatches of activations each stage of a schedule holds at its peak. This is
/// a property of each rank's action order alone, not of timing, so it needs no cost model.

#include <algorithm>
#include <cstddef>
#include <vector>

#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

/// @brief Per stage, the most microbatches whose activations the stage holds at once: a forward
/// takes one on, and the backward that last needs it (B, or W of a split backward) lets it go.
/// A forward-only schedule holds each microbatch only for its forward, so every stage peaks at 1.
/// Equal to simulate()'s `peak_stage_activations` for a valid schedule, without the replay.
/// GPipe gives m on every stage, 1F1B min(p-s, m) on stage s.
/// @param s the schedule; actions naming a stage outside its placement are skipped, nothing is thrown
/// @return one entry per stage of `s.place`, indexed by stage
[[nodiscard]] inline std::vector<int> in_flight_peaks(const schedule& s) {
  const auto stages = static_cast<std::size_t>(s.num_stages());
  std::vector<int> held(stages, 0);
  std::vector<int> peak(stages, 0);
  const bool training = s.mode == schedule_mode::training;
  for (const auto& list : s.ranks) {
    for (const action& a : list) {
      if (a.stage < 0 || static_cast<std::size_t>(a.stage) >= stages) continue;
      const auto st = static_cast<std::size_t>(a.stage);
      if (a.kind == action_kind::forward) {
        peak[st] = std::max(peak[st], held[st] + 1);
        if (training) ++held[st];
      } else if (a.kind == action_kind::backward || a.kind == action_kind::backward_weight) {
        --held[st];
      }
    }
  }
  return peak;
}

}  // namespace ppipe
