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

/// Which (stage, microbatch) pairs are recomputed: those an R action names, in lists of actions
/// (a schedule's ranks, or a trace's events read through `act_of`). Pairs outside the bounds are
/// skipped.
template <class Lists, class ActOf>
std::vector<char> recomputed_pairs(const Lists& lists, int stages, int microbatches, ActOf&& act_of) {
  const auto m = static_cast<std::size_t>(std::max(microbatches, 0));
  std::vector<char> out(static_cast<std::size_t>(std::max(stages, 0)) * m, 0);
  for (const auto& list : lists) {
    for (const auto& item : list) {
      const action& a = act_of(item);
      if (a.kind != action_kind::recompute || a.stage < 0 || a.stage >= stages || a.microbatch < 0 ||
          a.microbatch >= microbatches) {
        continue;
      }
      out[static_cast<std::size_t>(a.stage) * m + static_cast<std::size_t>(a.microbatch)] = 1;
    }
  }
  return out;
}

/// A microbatch's activations are held from its forward until the backward that last needs them
/// (B, or W of a split backward); inference holds them only for the forward. A recomputed one is
/// held in full for its forward, kept as the stage's input and output ("stashed") from then to its
/// R, and held in full again from its R to its backward. Counted in microbatches, or in memory
/// when each call says what a microbatch weighs, held and stashed.
template <class T = int>
class held_counter {
 public:
  held_counter(std::size_t stages, std::size_t ranks, bool training, std::vector<char> recomputed,
               std::size_t microbatches)
      : peak_stage(stages, T{}), peak_rank(ranks, T{}), peak_stashed_stage(stages, T{}),
        peak_stashed_rank(ranks, T{}), peak_total_stage(stages, T{}), training_(training),
        recomputed_(std::move(recomputed)), m_(microbatches), held_stage_(stages, T{}), held_rank_(ranks, T{}),
        stashed_stage_(stages, T{}), stashed_rank_(ranks, T{}) {}

  /// Counts compute action `a` of rank `rank`, a microbatch weighing `w` held and `stash_w`
  /// stashed.
  void on(std::size_t rank, const action& a, T w = T{1}, T stash_w = T{1}) {
    const auto s = static_cast<std::size_t>(a.stage);
    switch (a.kind) {
      case action_kind::forward: {
        hold(s, rank, w);
        const auto mb = static_cast<std::size_t>(a.microbatch);
        const bool stash = training_ && a.microbatch >= 0 && mb < m_ && recomputed_[s * m_ + mb] != 0;
        if (stash) {
          stashed_stage_[s] += stash_w;
          stashed_rank_[rank] += stash_w;
          peak_stashed_stage[s] = std::max(peak_stashed_stage[s], stashed_stage_[s]);
          peak_stashed_rank[rank] = std::max(peak_stashed_rank[rank], stashed_rank_[rank]);
        }
        if (!training_ || stash) drop(s, rank, w);
        break;
      }
      case action_kind::recompute:  // the stashed input and output become part of what is held
        stashed_stage_[s] -= stash_w;
        stashed_rank_[rank] -= stash_w;
        hold(s, rank, w);
        break;
      case action_kind::backward:
      case action_kind::backward_weight:
        drop(s, rank, w);
        break;
      default:
        break;
    }
  }

  std::vector<T> peak_stage, peak_rank;                  ///< most held at once
  std::vector<T> peak_stashed_stage, peak_stashed_rank;  ///< most stashed at once
  std::vector<T> peak_total_stage;  ///< most held and stashed together, at the same moment, per stage

 private:
  void hold(std::size_t s, std::size_t r, T w) {
    held_stage_[s] += w;
    held_rank_[r] += w;
    peak_stage[s] = std::max(peak_stage[s], held_stage_[s]);
    peak_rank[r] = std::max(peak_rank[r], held_rank_[r]);
    // A forward's microbatch counts here, as held, before it is stashed; R unstashes before it holds.
    peak_total_stage[s] = std::max(peak_total_stage[s], held_stage_[s] + stashed_stage_[s]);
  }
  void drop(std::size_t s, std::size_t r, T w) {
    held_stage_[s] -= w;
    held_rank_[r] -= w;
  }

  bool training_;
  std::vector<char> recomputed_;  // per (stage, microbatch), from recomputed_pairs()
  std::size_t m_;
  std::vector<T> held_stage_, held_rank_, stashed_stage_, stashed_rank_;
};

}  // namespace ppipe::detail
