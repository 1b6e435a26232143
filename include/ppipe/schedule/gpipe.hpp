#pragma once
/// @file
/// @brief GPipe (Huang et al. 2019): every microbatch's forward, then every backward, then flush.

#include <string_view>

#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe::schedules {

/// @brief GPipe: each rank runs the forwards of microbatches 0..m-1, then their backwards in the
/// same order. Bubble (p-1)/(m+p-1) of the step; every stage holds all m microbatches' activations
/// at its peak. One stage per rank (v = 1).
struct gpipe {
  static constexpr std::string_view name = "gpipe";  ///< the name make_schedule() accepts

  /// @brief Builds GPipe's schedule, with its transfers in place.
  /// @param params p >= 1 and m >= 1; v must be 1
  /// @return the schedule, placed one stage per rank
  /// @throws ppipe::error (invalid_argument) when p or m is below 1, v is not 1, or p*m exceeds 2^26
  static schedule generate(const schedule_params& params) {
    detail::check_params(params, "gpipe");
    detail::require_one_stage_per_rank(params, "gpipe");
    schedule s{std::string(name), placement::looped(params.ranks), params.microbatches,
               schedule_mode::training, {}};
    s.ranks.resize(static_cast<std::size_t>(params.ranks));
    for (int r = 0; r < params.ranks; ++r) {
      auto& list = s.ranks[static_cast<std::size_t>(r)];
      list.reserve(static_cast<std::size_t>(params.microbatches) * 2);
      for (int mb = 0; mb < params.microbatches; ++mb) list.push_back({r, mb, action_kind::forward});
      for (int mb = 0; mb < params.microbatches; ++mb) list.push_back({r, mb, action_kind::backward});
    }
    return add_communication(std::move(s));
  }
};

}  // namespace ppipe::schedules
