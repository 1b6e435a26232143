#pragma once
/// @file
/// @brief Lowering: insert the sends and receives that a compute-only schedule implies.

#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

/// @brief Returns `compute_only` with a transfer wherever data crosses ranks: a send right after
/// the forward (backward) that produced it, a receive right before the forward (backward) that
/// needs it. Stages next to each other on the same rank hand data over locally, with no transfer.
///
/// The receive's position is where the rank *waits* for the data; a runtime may post it earlier.
/// Throws ppipe::error if the schedule already has transfers or names a stage out of range.
inline schedule add_communication(schedule compute_only) {
  if (compute_only.has_transfers()) {
    detail::fail(errc::invalid_argument, "schedule \"", compute_only.name,
                 "\" already has transfers; add_communication() takes a compute-only schedule");
  }
  const std::vector<int>& rank_of = compute_only.place.rank_table();
  const int last = compute_only.place.num_stages() - 1;
  for (std::size_t r = 0; r < compute_only.ranks.size(); ++r) {
    const int rank = static_cast<int>(r);
    std::vector<action>& list = compute_only.ranks[r];
    std::vector<action> lowered;
    lowered.reserve(list.size() * 2);
    for (const action& a : list) {
      if (a.stage < 0 || a.stage > last) {
        detail::fail(errc::invalid_argument, "rank ", rank, " has ", to_string(a),
                     ", but stages run 0..", last);
      }
      const auto stage = static_cast<std::size_t>(a.stage);
      const bool from_prev = a.stage > 0 && rank_of[stage - 1] != rank;
      const bool to_next = a.stage < last && rank_of[stage + 1] != rank;
      switch (a.kind) {
        case action_kind::forward:
          if (from_prev) lowered.push_back({a.stage, a.microbatch, action_kind::recv_activation});
          lowered.push_back(a);
          if (to_next) lowered.push_back({a.stage, a.microbatch, action_kind::send_activation});
          break;
        case action_kind::backward:
        case action_kind::backward_input:
          if (to_next) lowered.push_back({a.stage, a.microbatch, action_kind::recv_gradient});
          lowered.push_back(a);
          if (from_prev) lowered.push_back({a.stage, a.microbatch, action_kind::send_gradient});
          break;
        default: lowered.push_back(a); break;
      }
    }
    list = std::move(lowered);
  }
  return compute_only;
}

}  // namespace ppipe
