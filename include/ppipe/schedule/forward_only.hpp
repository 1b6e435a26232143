#pragma once
/// @file
/// @brief Forward-only schedule for inference: several requests (microbatches) in flight so that
/// every stage works on a different one at the same time.

#include <algorithm>
#include <string_view>

#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe::schedules {

/// @brief Forward only. With one stage per rank every rank runs microbatches 0..m-1 in order, so
/// after p-1 steps of fill all ranks are busy. With v stages per rank (looped placement) each
/// rank walks microbatches in groups of p: chunk 0 for the group, then chunk 1, and so on, so
/// that the group's data keeps moving round the ring of ranks. Any m >= 1 works.
struct forward_only {
  static constexpr std::string_view name = "forward_only";  ///< the name make_schedule() accepts

  /// @brief Builds the forward-only schedule, with its transfers in place.
  /// @param params p >= 1, m >= 1 (requests in flight) and v >= 1
  /// @return an inference schedule on the looped placement of p*v stages
  /// @throws ppipe::error (invalid_argument) when p, m or v is below 1, or p*v*m exceeds 2^26
  static schedule generate(const schedule_params& params) {
    detail::check_params(params, "forward_only");
    const int p = params.ranks;
    const int m = params.microbatches;
    const int v = params.virtual_stages;
    schedule s{std::string(name), placement::looped(p, v), m, schedule_mode::inference, {}};
    s.ranks.resize(static_cast<std::size_t>(p));
    for (int r = 0; r < p; ++r) {
      auto& list = s.ranks[static_cast<std::size_t>(r)];
      list.reserve(static_cast<std::size_t>(m) * static_cast<std::size_t>(v));
      for (int first = 0; first < m; first += p) {
        const int end = std::min(m, first + p);
        for (int chunk = 0; chunk < v; ++chunk) {
          for (int mb = first; mb < end; ++mb) {
            list.push_back({chunk * p + r, mb, action_kind::forward});
          }
        }
      }
    }
    return add_communication(std::move(s));
  }

  /// @brief Forward only over any placement, for `microbatches` requests: generate() when the
  /// placement is looped; otherwise each rank runs, microbatch by microbatch, the forwards of its
  /// stages in stage order (every forward needs only its own microbatch's earlier stages, so
  /// this never waits for ever).
  /// @param place where the stages live; any valid placement with at least one rank
  /// @param microbatches requests in flight m (>= 1)
  /// @return an inference schedule on `place`, with its transfers in place
  /// @throws ppipe::error (invalid_argument) when m is below 1, or the stage-microbatch pairs exceed 2^26
  static schedule over(const placement& place, int microbatches) {
    const int p = place.num_ranks();
    const int stages = place.num_stages();
    if (stages % p == 0 && place == placement::looped(p, stages / p)) return generate({p, microbatches, stages / p});
    detail::check_params({p, microbatches, 1}, "forward_only");
    schedule s{std::string(name), place, microbatches, schedule_mode::inference, {}};
    s.ranks.resize(static_cast<std::size_t>(p));
    for (int r = 0; r < p; ++r) {
      for (int mb = 0; mb < microbatches; ++mb) {
        for (const int st : place.stages_on(r)) s.ranks[static_cast<std::size_t>(r)].push_back({st, mb, action_kind::forward});
      }
    }
    return add_communication(std::move(s));
  }
};

}  // namespace ppipe::schedules
