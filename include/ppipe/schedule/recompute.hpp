#pragma once
/// @file
/// @brief Activation recomputation in schedules: which (stage, microbatch) pairs have an R, and the
/// transform that puts an R before each backward of the chosen stages, so that their forwards keep
/// only the stage's input and output.

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

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
/// microbatch. A microbatch with an R keeps only its stage's input and output from its forward to
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
        out.push_back({a.stage, a.microbatch, action_kind::recompute});
        has_r[pair(a)] = 1;
      }
      out.push_back(a);
    }
    list = std::move(out);
  }
  return s;
}

}  // namespace ppipe
