#pragma once
/// @file
/// @brief Interleaved 1F1B (Narayanan et al. 2021, Megatron-LM): v stages per rank in looped
/// placement cut the bubble by v, at v times the transfers.

#include <algorithm>
#include <string_view>
#include <vector>

#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/one_f_one_b.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe::schedules {

/// @brief Interleaved 1F1B in Megatron's order. Stage s lives on rank s % p. Each rank walks its
/// m*v (chunk, microbatch) pairs in groups of p microbatches: chunk 0 for the group, then chunk 1,
/// and so on; backwards walk the chunks in reverse. Rank r runs 2(p-r-1) + (v-1)p warm-up
/// forwards (all of them when m == p), then alternates forward and backward, then drains. Transfers
/// are grouped per steady (forward, backward) pair, as Megatron groups them, which keeps the schedule
/// deadlock-free under the rendezvous transfer model. The bubble is (p-1)/(v*m) of the compute time.
///
/// Needs m to be a multiple of p. With v = 1 the order is plain 1F1B.
struct interleaved_1f1b {
  static constexpr std::string_view name = "interleaved_1f1b";  ///< the name make_schedule() accepts

  /// @brief Builds the interleaved schedule, with its transfers in place; with v = 1, 1F1B's under this name.
  /// @param params p >= 1, m >= 1 and v >= 1; for v > 1, m must be a multiple of p
  /// @return the schedule, on the looped placement of p*v stages
  /// @throws ppipe::error (invalid_argument) when p, m or v is below 1, m is not a multiple of p
  /// (v > 1), or p*v*m exceeds 2^26
  static schedule generate(const schedule_params& params) {
    detail::check_params(params, "interleaved_1f1b");
    const int p = params.ranks;
    const int m = params.microbatches;
    const int v = params.virtual_stages;
    if (v == 1) {
      schedule plain = one_f_one_b::generate(params);
      plain.name = std::string(name);
      return plain;
    }
    if (m % p != 0) {
      const int below = (m / p) * p;
      detail::fail(errc::invalid_argument, "interleaved_1f1b with p=", p,
                   " needs m to be a multiple of p, but m=", m, "; use m=",
                   below > 0 ? detail::concat(below, " or m=") : std::string(), below + p,
                   ", or v=1 (plain 1F1B) for any m");
    }
    schedule s{std::string(name), placement::looped(p, v), m, schedule_mode::training, {}};
    s.ranks.resize(static_cast<std::size_t>(p));
    const int total = m * v;
    const int group = p * v;
    std::vector<int> warmups(static_cast<std::size_t>(p));
    for (int r = 0; r < p; ++r) {
      // The k-th forward (backward) of this rank: its microbatch and the stage of its chunk.
      const auto nth = [&](int k, action_kind kind) {
        const int in_group = k % group;
        int chunk = in_group / p;
        if (kind == action_kind::backward) chunk = v - 1 - chunk;
        return action{chunk * p + r, (k / group) * p + in_group % p, kind};
      };
      auto& list = s.ranks[static_cast<std::size_t>(r)];
      list.reserve(static_cast<std::size_t>(total) * 2);
      // With m == p the steady phase could not keep its transfer groups in step: run every
      // forward first, as Megatron does.
      const int warmup = m == p ? total : std::min(total, 2 * (p - r - 1) + (v - 1) * p);
      warmups[static_cast<std::size_t>(r)] = warmup;
      int next_forward = 0;
      int next_backward = 0;
      while (next_forward < warmup) list.push_back(nth(next_forward++, action_kind::forward));
      while (next_forward < total) {
        list.push_back(nth(next_forward++, action_kind::forward));
        list.push_back(nth(next_backward++, action_kind::backward));
      }
      while (next_backward < total) list.push_back(nth(next_backward++, action_kind::backward));
    }
    // Transfers go between units: each warm-up forward, each steady (forward, backward) pair and
    // each cool-down backward. Between two units one group carries the sends of the unit before
    // and the receives of the unit after, Megatron's combined send_forward_backward_recv_forward_
    // backward, so that neighbouring ranks' groups meet under the rendezvous transfer model.
    return detail::lower_in_units(std::move(s), [&](int r) {
      const int warmup = warmups[static_cast<std::size_t>(r)];
      std::vector<int> units(static_cast<std::size_t>(warmup), 1);
      units.insert(units.end(), static_cast<std::size_t>(total - warmup), 2);  // steady pairs
      units.insert(units.end(), static_cast<std::size_t>(warmup), 1);          // cool-down
      return units;
    });
  }
};

}  // namespace ppipe::schedules
