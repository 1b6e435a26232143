#pragma once
/// @file
/// @brief Schedule policies: the concept every schedule tag satisfies, and generation by tag or by
/// name.

#include <concepts>
#include <string>
#include <string_view>

#include "ppipe/error.hpp"
#include "ppipe/schedule/dualpipe_v.hpp"
#include "ppipe/schedule/forward_only.hpp"
#include "ppipe/schedule/gpipe.hpp"
#include "ppipe/schedule/interleaved_1f1b.hpp"
#include "ppipe/schedule/one_f_one_b.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/zero_bubble.hpp"

namespace ppipe {

/// @brief A schedule policy: an empty tag type with a `name` and a static `generate(params)` that
/// returns a complete schedule. ppipe's are in ppipe::schedules; a user's own type works the same.
template <class Policy>
concept schedule_policy = requires(const schedule_params& params) {
  { Policy::name } -> std::convertible_to<std::string_view>;
  { Policy::generate(params) } -> std::same_as<schedule>;
};

/// @brief Whether the schedules of `Policy` split the backward into input-gradient (I) and
/// weight-gradient (W) actions, which only a model with backward_input/backward_weight can run.
/// A policy says so with `static constexpr bool splits_backward = true;` (zb_h1, zb_v and
/// dualpipe_v do), so that the mismatch is found when the pipeline is compiled; without it, false.
template <class Policy>
inline constexpr bool splits_backward_v = requires {
  requires static_cast<bool>(Policy::splits_backward);
};

/// @brief Generates the schedule of `Policy` for `params`.
/// Throws what `Policy::generate` throws; ppipe's policies throw ppipe::error (invalid_argument)
/// for numbers they cannot schedule.
/// @tparam Policy a schedule_policy, e.g. ppipe::schedules::one_f_one_b
/// @param params ranks p, microbatches m and stages per rank v
/// @return the complete schedule, with its transfers in place
template <schedule_policy Policy>
schedule make_schedule(Policy, const schedule_params& params) {
  return Policy::generate(params);
}

/// @brief The names make_schedule(std::string_view, ...) accepts.
inline constexpr std::string_view schedule_names[] = {
    schedules::gpipe::name, schedules::one_f_one_b::name, schedules::interleaved_1f1b::name,
    schedules::zb_h1::name, schedules::zb_v::name, schedules::dualpipe_v::name, schedules::forward_only::name};

/// @brief Generates a built-in schedule chosen at run time: "gpipe", "1f1b", "interleaved_1f1b"
/// (also "interleaved"), "zb_h1", "zb_v", "dualpipe_v" or "forward_only".
/// Throws ppipe::error (invalid_argument) for any other name, or when the chosen schedule cannot
/// be built for `params`.
/// @param name the schedule's name, matched exactly (case-sensitive)
/// @param params ranks p, microbatches m and stages per rank v
/// @return the complete schedule, with its transfers in place
inline schedule make_schedule(std::string_view name, const schedule_params& params) {
  if (name == schedules::gpipe::name) return schedules::gpipe::generate(params);
  if (name == schedules::one_f_one_b::name) return schedules::one_f_one_b::generate(params);
  if (name == schedules::interleaved_1f1b::name || name == "interleaved") {
    return schedules::interleaved_1f1b::generate(params);
  }
  if (name == schedules::zb_h1::name) return schedules::zb_h1::generate(params);
  if (name == schedules::zb_v::name) return schedules::zb_v::generate(params);
  if (name == schedules::dualpipe_v::name) return schedules::dualpipe_v::generate(params);
  if (name == schedules::forward_only::name) return schedules::forward_only::generate(params);
  std::string known;
  for (std::string_view n : schedule_names) {
    if (!known.empty()) known += ", ";
    known += n;
  }
  detail::fail(errc::invalid_argument, "unknown schedule \"", name, "\"; use one of ", known);
}

}  // namespace ppipe
