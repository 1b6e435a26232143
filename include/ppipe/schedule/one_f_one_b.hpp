#pragma once
/// @file
/// @brief 1F1B, also called PipeDream-Flush (Narayanan et al. 2021): GPipe's bubble with at most
/// p-s microbatches of activations held on stage s.

#include <algorithm>
#include <string_view>

#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe::schedules {

/// @brief 1F1B: rank r runs min(p-r-1, m) warm-up forwards, then alternates one forward and one
/// backward, then drains the remaining backwards. Same bubble as GPipe, (p-1)/(m+p-1) of the step,
/// but stage s holds at most min(p-s, m) microbatches of activations instead of m.
struct one_f_one_b {
  static constexpr std::string_view name = "1f1b";  ///< the name make_schedule() accepts

  /// @brief Builds 1F1B's schedule, with its transfers in place.
  /// @param params p >= 1 and m >= 1; v must be 1
  /// @return the schedule, placed one stage per rank
  /// @throws ppipe::error (invalid_argument) when p or m is below 1, v is not 1, or p*m exceeds 2^26
  static schedule generate(const schedule_params& params) {
    detail::check_params(params, "1f1b");
    detail::require_one_stage_per_rank(params, "1f1b");
    const int p = params.ranks;
    const int m = params.microbatches;
    schedule s{std::string(name), placement::looped(p), m, schedule_mode::training, {}};
    s.ranks.resize(static_cast<std::size_t>(p));
    for (int r = 0; r < p; ++r) {
      auto& list = s.ranks[static_cast<std::size_t>(r)];
      list.reserve(static_cast<std::size_t>(m) * 2);
      const int warmup = std::min(p - r - 1, m);
      int next_forward = 0;
      int next_backward = 0;
      while (next_forward < warmup) list.push_back({r, next_forward++, action_kind::forward});
      while (next_forward < m) {
        list.push_back({r, next_forward++, action_kind::forward});
        list.push_back({r, next_backward++, action_kind::backward});
      }
      while (next_backward < m) list.push_back({r, next_backward++, action_kind::backward});
    }
    return add_communication(std::move(s));
  }
};

}  // namespace ppipe::schedules
