#pragma once
/// @file
/// @brief Activation recomputation in schedules: which (stage, microbatch) pairs have an R, and the
/// transform that puts an R before each backward of the chosen stages, so that their forwards keep
/// only the stage's input and output.

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

/// @brief What a stage keeps of a training microbatch from its forward to its backward; what it
/// lets go of, an R action (with_recompute) computes again right before the backward. A policy
/// that recomputes keeps the stage's input and output (a send or the loss may still read it) and
/// the input of every k-th layer after the first; R re-runs the forward of each layer whose
/// output it did not keep. Layer i's output is layer i+1's input.
class recompute_policy {
 public:
  /// Every layer's input (the default): the most memory, no extra compute.
  static const recompute_policy none;
  /// Only the stage's input and output: the least memory; R re-runs every layer but the last.
  static const recompute_policy full;
  /// @brief Also keeps the input of every k-th layer of the stage (the stage's layers 0, k, 2k, ...):
  /// about 1/k of the activations, and R re-runs about (k-1)/k of the stage's forward (Megatron's
  /// and DeepSpeed's checkpoint interval, with the recompute done in one R before the backward).
  /// @param k the interval, >= 1; every(1) is none, a k of the stage's layer count or more is full
  /// @return the policy
  /// @throws ppipe::error (errc::invalid_argument) when k < 1
  [[nodiscard]] static recompute_policy every(int k) {
    if (k < 1) {
      detail::fail(errc::invalid_argument, "recompute_policy::every(", k,
                   ") keeps every k-th layer's input, so k must be >= 1; use recompute_policy::full to keep "
                   "only the stage's input");
    }
    return recompute_policy(k);
  }

  /// @brief The none policy.
  constexpr recompute_policy() noexcept = default;

  /// @brief The interval k of every(k): 1 for none, 0 for full.
  /// @return k
  [[nodiscard]] constexpr int interval() const noexcept { return interval_; }
  /// @brief Whether a stage with this policy recomputes anything (has R actions).
  /// @return false for none (and every(1)), true otherwise
  [[nodiscard]] constexpr bool recomputes() const noexcept { return interval_ != 1; }
  /// @brief Whether a stage with this policy keeps the input of its `i`-th layer (from 0).
  /// @param i the layer's position in its stage, >= 0
  /// @return true for the first layer, and for every k-th under every(k)
  [[nodiscard]] constexpr bool keeps(int i) const noexcept {
    return i == 0 || (interval_ > 0 && i % interval_ == 0);
  }
  /// @brief Policies are equal when they keep the same layers of any stage.
  /// @return whether the intervals are equal
  friend constexpr bool operator==(recompute_policy, recompute_policy) noexcept = default;

 private:
  constexpr explicit recompute_policy(int interval) noexcept : interval_(interval) {}
  int interval_ = 1;  // k of every(k); 1: none, 0: full
};

inline constexpr recompute_policy recompute_policy::none{1};
inline constexpr recompute_policy recompute_policy::full{0};

/// @brief "none", "full" or "every 3".
/// @param p the policy
/// @return its name, for messages and tables
[[nodiscard]] inline std::string to_string(recompute_policy p) {
  if (!p.recomputes()) return "none";
  return p.interval() == 0 ? "full" : "every " + std::to_string(p.interval());
}

/// @brief Which (stage, microbatch) pairs lists of actions recompute: entry stage * m + microbatch
/// is 1 where an R action names them. Actions out of range are skipped.
/// @param ranks per rank, its actions
/// @param stages the stage count
/// @param microbatches m
/// @return stages * m entries, each 0 or 1
[[nodiscard]] inline std::vector<char> recompute_table(const std::vector<std::vector<action>>& ranks, int stages,
                                                       int microbatches) {
  const auto m = static_cast<std::size_t>(std::max(microbatches, 0));
  std::vector<char> out(static_cast<std::size_t>(std::max(stages, 0)) * m, 0);
  for (const auto& list : ranks) {
    for (const action& a : list) {
      if (a.kind != action_kind::recompute || a.stage < 0 || a.stage >= stages || a.microbatch < 0 ||
          a.microbatch >= microbatches) {
        continue;
      }
      out[static_cast<std::size_t>(a.stage) * m + static_cast<std::size_t>(a.microbatch)] = 1;
    }
  }
  return out;
}

/// @brief `s` with activation recomputation on the stages that `stages` marks: right before each
/// backward of such a stage (B, or I of a split backward) comes an R action of the same stage and
/// microbatch (before the paired forward, for the B of a pair). A microbatch with an R keeps only its stage's input and output from its forward to
/// its R, which re-runs the forward, and holds its activations from there to its backward, as
/// GPipe's re-materialization does: each such stage trades one forward per microbatch for the
/// activations of the microbatches it would otherwise hold. A backward that already has its R is
/// left alone. Throws ppipe::error (invalid_argument) if `stages` is neither empty nor one entry
/// per stage, or if it marks a stage of a forward-only schedule (nothing is held to recompute).
/// @param s the schedule, taken by value; its name, placement, m and mode are kept
/// @param stages per stage, whether to recompute; empty: none
/// @return the schedule with the R actions inserted (validate it as any other)
[[nodiscard]] inline schedule with_recompute(schedule s, const std::vector<bool>& stages) {
  if (stages.empty()) return s;
  if (stages.size() != static_cast<std::size_t>(s.num_stages())) {
    detail::fail(errc::invalid_argument, "recompute names ", stages.size(), " stages for schedule \"", s.name,
                 "\" of ", s.num_stages(), "; give one entry per stage, or none");
  }
  bool any = false;
  for (const bool on : stages) any = any || on;
  if (!any) return s;
  if (s.mode != schedule_mode::training) {
    detail::fail(errc::invalid_argument, "schedule \"", s.name, "\" runs forwards only, and a forward-only "
                 "step keeps no activations to recompute; recompute in training schedules only");
  }
  const auto marked = [&](const action& a) {
    return a.stage >= 0 && static_cast<std::size_t>(a.stage) < stages.size() && stages[static_cast<std::size_t>(a.stage)];
  };
  // The (stage, microbatch) pairs that already have their R; a marked one out of range has none.
  const auto m = static_cast<std::size_t>(s.microbatches > 0 ? s.microbatches : 0);
  std::vector<char> has_r = recompute_table(s.ranks, s.num_stages(), s.microbatches);
  const auto pair = [&](const action& a) {
    return a.microbatch >= 0 && static_cast<std::size_t>(a.microbatch) < m && marked(a)
               ? static_cast<std::size_t>(a.stage) * m + static_cast<std::size_t>(a.microbatch)
               : has_r.size();
  };
  for (auto& list : s.ranks) {
    std::vector<action> out;
    out.reserve(list.size() * 2);
    for (const action& a : list) {
      const bool backward = a.kind == action_kind::backward || a.kind == action_kind::backward_input;
      if (backward && pair(a) < has_r.size() && has_r[pair(a)] == 0) {
        // The B of a pair (F+ B) takes its R before the forward, which must stay right before it.
        const bool partner = !out.empty() && out.back().paired;
        out.insert(partner ? out.end() - 1 : out.end(), action{a.stage, a.microbatch, action_kind::recompute});
        has_r[pair(a)] = 1;
      }
      out.push_back(a);
    }
    list = std::move(out);
  }
  return s;
}

}  // namespace ppipe
