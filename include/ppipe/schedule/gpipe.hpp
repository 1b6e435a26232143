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
  static constexpr std::string_view name = "gpipe";

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
