#pragma once
/// @file
/// @brief How many microbatches of activations each stage of a schedule holds at its peak (and
/// keeps stashed for recompute). This is a property of each rank's action order alone, not of
/// timing, so it needs no cost model.

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "ppipe/schedule/detail/held.hpp"
#include "ppipe/schedule/recompute.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {
/// @brief The most microbatches held (and stashed for recompute) at once, per stage and per rank,
/// as activation_peaks() counts them.
struct held_peaks {
  std::vector<int> stage;          ///< per stage: held in full
  std::vector<int> rank;           ///< per rank: held in full, summed over its stages
  std::vector<int> stashed_stage;  ///< per stage: kept as input and output only, until their R
  std::vector<int> stashed_rank;   ///< per rank: the same, summed over its stages
  std::vector<int> total_stage;    ///< per stage: held and stashed together, at the same moment
};

/// @brief Replays ordered lists of actions, one per rank, and counts what the stages hold: a
/// microbatch is held from its forward until the backward that last needs it (B, or W of a split
/// backward), only for its forward in a forward-only run, and one that has an R action is
/// stashed from the end of its forward to its R. The simulator, a trace's replay and
/// in_flight_peaks() count so. Actions naming a stage or microbatch out of range are skipped.
/// @param ranks per rank, its actions in the order they ran
/// @param stages the stage count
/// @param microbatches m
/// @param mode training or forward-only
/// @return the peaks, per stage and per rank
[[nodiscard]] inline held_peaks activation_peaks(const std::vector<std::vector<action>>& ranks, int stages,
                                                 int microbatches, schedule_mode mode) {
  detail::held_counter held(static_cast<std::size_t>(std::max(stages, 0)), ranks.size(),
                            mode == schedule_mode::training, recompute_table(ranks, stages, microbatches),
                            static_cast<std::size_t>(std::max(microbatches, 0)));
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    for (const action& a : ranks[r]) {
      if (a.stage < 0 || a.stage >= stages || a.microbatch < 0 || a.microbatch >= microbatches) continue;
      held.on(r, a);
    }
  }
  return {std::move(held.peak_stage), std::move(held.peak_rank), std::move(held.peak_stashed_stage),
          std::move(held.peak_stashed_rank), std::move(held.peak_total_stage)};
}

/// @brief Per stage, the most microbatches whose activations the stage holds at once: a forward
/// takes one on, and the backward that last needs it (B, or W of a split backward) lets it go.
/// A forward-only schedule holds each microbatch only for its forward, so every stage peaks at 1.
/// A recomputed microbatch (one with an R action) counts only for its forward and from its R to
/// its backward; stashed_peaks() counts it in between. Equal to simulate()'s
/// `peak_stage_activations` for a valid schedule, without the replay. GPipe gives m on every
/// stage, 1F1B min(p-s, m) on stage s.
/// @param s the schedule; actions naming a stage outside its placement are skipped, nothing is thrown
/// @return one entry per stage of `s.place`, indexed by stage
[[nodiscard]] inline std::vector<int> in_flight_peaks(const schedule& s) {
  return activation_peaks(s.ranks, s.num_stages(), s.microbatches, s.mode).stage;
}

/// @brief Per stage, the most recomputed microbatches kept at once as the stage's input and output
/// only, between their forward and their R: all zero for a schedule without R actions. Equal to
/// simulate()'s `peak_stage_stashed` for a valid schedule.
/// @param s the schedule; actions naming a stage outside its placement are skipped, nothing is thrown
/// @return one entry per stage of `s.place`, indexed by stage
[[nodiscard]] inline std::vector<int> stashed_peaks(const schedule& s) {
  return activation_peaks(s.ranks, s.num_stages(), s.microbatches, s.mode).stashed_stage;
}

}  // namespace ppipe
