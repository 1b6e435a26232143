#pragma once
/// @file
/// @brief How many microbatches each stage and rank holds as an ordered list of compute actions
/// is replayed: the one rule that the simulator, the in-flight counts, a trace's replay and the
/// planner's memory share.

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "ppipe/schedule/action.hpp"

namespace ppipe::detail {

/// A microbatch's activations are held from its forward until the backward that last needs them
/// (B, or W of a split backward); inference holds them only for the forward. A recomputed one is
/// held in full for its forward, kept as the stage's input and output ("stashed") from then to its
/// R, and held in full again from its R to its backward. `recomputed` is recompute_table()'s.
class held_counter {
 public:
  held_counter(std::size_t stages, std::size_t ranks, bool training, std::vector<char> recomputed,
               std::size_t microbatches)
      : peak_stage(stages, 0), peak_rank(ranks, 0), peak_stashed_stage(stages, 0), peak_stashed_rank(ranks, 0),
        peak_total_stage(stages, 0), training_(training), recomputed_(std::move(recomputed)), m_(microbatches),
        held_stage_(stages, 0), held_rank_(ranks, 0), stashed_stage_(stages, 0), stashed_rank_(ranks, 0) {}

  /// Counts compute action `a` of rank `rank`.
  void on(std::size_t rank, const action& a) {
    const auto s = static_cast<std::size_t>(a.stage);
    switch (a.kind) {
      case action_kind::forward: {
        hold(s, rank);
        const auto mb = static_cast<std::size_t>(a.microbatch);
        const bool stash = training_ && a.microbatch >= 0 && mb < m_ && recomputed_[s * m_ + mb] != 0;
        if (stash) {
          ++stashed_stage_[s];
          ++stashed_rank_[rank];
          peak_stashed_stage[s] = std::max(peak_stashed_stage[s], stashed_stage_[s]);
          peak_stashed_rank[rank] = std::max(peak_stashed_rank[rank], stashed_rank_[rank]);
        }
        if (!training_ || stash) drop(s, rank);
        break;
      }
      case action_kind::recompute:  // the stashed input and output become part of what is held
        --stashed_stage_[s];
        --stashed_rank_[rank];
        hold(s, rank);
        break;
      case action_kind::backward:
      case action_kind::backward_weight:
        drop(s, rank);
        break;
      default:
        break;
    }
  }

  std::vector<int> peak_stage, peak_rank;                  ///< most held at once
  std::vector<int> peak_stashed_stage, peak_stashed_rank;  ///< most stashed at once
  std::vector<int> peak_total_stage;  ///< most held and stashed together, at the same moment, per stage

 private:
  void hold(std::size_t s, std::size_t r) {
    ++held_stage_[s];
    ++held_rank_[r];
    peak_stage[s] = std::max(peak_stage[s], held_stage_[s]);
    peak_rank[r] = std::max(peak_rank[r], held_rank_[r]);
    // A forward's microbatch counts here, as held, before it is stashed; R unstashes before it holds.
    peak_total_stage[s] = std::max(peak_total_stage[s], held_stage_[s] + stashed_stage_[s]);
  }
  void drop(std::size_t s, std::size_t r) {
    --held_stage_[s];
    --held_rank_[r];
  }

  bool training_;
  std::vector<char> recomputed_;  // [stage * m + mb], from recompute_table()
  std::size_t m_;
  std::vector<int> held_stage_, held_rank_, stashed_stage_, stashed_rank_;
};

}  // namespace ppipe::detail
