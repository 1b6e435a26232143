#pragma once
/// @file
/// @brief A pipeline schedule as plain data: for every rank, the ordered list of actions it runs.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/action.hpp"
#include "ppipe/schedule/placement.hpp"

namespace ppipe {

/// @brief Whether a schedule trains (forward and backward) or only infers (forward only).
enum class schedule_mode : unsigned char { training, inference };

/// @brief The numbers a schedule generator takes.
struct schedule_params {
  int ranks = 1;           ///< p: pipeline ranks (devices)
  int microbatches = 1;    ///< m: microbatches per step
  int virtual_stages = 1;  ///< v: stages per rank (interleaved schedules)
};

/// @brief A complete schedule: the placement of stages on ranks and each rank's actions in the
/// order the rank runs them. Generators return schedules with their transfers in place; a
/// hand-written compute-only schedule gets them from add_communication().
struct schedule {
  std::string name;                        ///< e.g. "1f1b"
  placement place;                         ///< which rank holds each stage
  int microbatches = 0;                    ///< m
  schedule_mode mode = schedule_mode::training;  ///< training (forward and backward) or inference
  std::vector<std::vector<action>> ranks;  ///< ranks[r] = rank r's actions, in order

  /// @brief The number of pipeline ranks p, as the placement gives it.
  /// @return place.num_ranks()
  [[nodiscard]] int num_ranks() const noexcept { return place.num_ranks(); }
  /// @brief The number of stages over all ranks, as the placement gives it.
  /// @return place.num_stages()
  [[nodiscard]] int num_stages() const noexcept { return place.num_stages(); }
  /// @brief Total number of actions over all ranks.
  /// @return the sum of the lengths of every rank's list, transfers included
  [[nodiscard]] std::size_t size() const noexcept {
    std::size_t n = 0;
    for (const auto& list : ranks) n += list.size();
    return n;
  }
  /// @brief True if any rank has a send or receive.
  /// @return false for a compute-only schedule, which add_communication() can lower
  [[nodiscard]] bool has_transfers() const noexcept {
    for (const auto& list : ranks) {
      for (const action& a : list) {
        if (is_transfer(a.kind)) return true;
      }
    }
    return false;
  }
  /// @brief True if the backward is split into input-grad (I) and weight-grad (W) actions.
  /// @return whether any rank runs an I or a W action
  [[nodiscard]] bool splits_backward() const noexcept {
    for (const auto& list : ranks) {
      for (const action& a : list) {
        if (a.kind == action_kind::backward_input || a.kind == action_kind::backward_weight) {
          return true;
        }
      }
    }
    return false;
  }
};

namespace detail {

/// Checks the numbers every generator shares; `who` names the schedule in messages.
inline void check_params(const schedule_params& params, const char* who) {
  if (params.ranks < 1) {
    fail(errc::invalid_argument, who, " needs at least one rank (p=", params.ranks,
         "); pass p >= 1");
  }
  if (params.microbatches < 1) {
    fail(errc::invalid_argument, who, " needs at least one microbatch (m=", params.microbatches,
         "); pass m >= 1, ideally m >= 4p to keep the bubble small");
  }
  if (params.virtual_stages < 1) {
    fail(errc::invalid_argument, who, " needs at least one stage per rank (v=",
         params.virtual_stages, "); pass v >= 1");
  }
  // Keep stage * microbatch indices and action counts well inside 32-bit integers.
  constexpr long long max_slots = 1LL << 26;
  const long long slots =
      static_cast<long long>(params.ranks) * params.virtual_stages * params.microbatches;
  if (slots > max_slots) {
    fail(errc::invalid_argument, who, " with p=", params.ranks, ", v=", params.virtual_stages,
         ", m=", params.microbatches, " has ", slots,
         " stage-microbatch pairs, more than ppipe supports (", max_slots,
         "); use fewer microbatches per step");
  }
}

/// FNV-1a over what a schedule runs: its placement, m, mode and every rank's actions in order
/// (not its name). Two processes holding schedules with equal fingerprints run the same actions.
inline std::uint64_t fingerprint(const schedule& s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  const auto mix = [&h](std::uint64_t v) {
    for (int byte = 0; byte < 8; ++byte, v >>= 8) h = (h ^ (v & 0xffU)) * 0x100000001b3ULL;
  };
  mix(static_cast<std::uint64_t>(s.num_ranks()));
  for (const int r : s.place.rank_table()) mix(static_cast<std::uint64_t>(r));
  mix(static_cast<std::uint64_t>(s.microbatches));
  mix(static_cast<std::uint64_t>(s.mode));
  for (const auto& list : s.ranks) {
    mix(list.size());  // where one rank's list ends, so that actions cannot move between ranks unseen
    for (const action& a : list) {
      mix(static_cast<std::uint64_t>(static_cast<std::uint32_t>(a.stage)));
      mix(static_cast<std::uint64_t>(static_cast<std::uint32_t>(a.microbatch)));
      mix(static_cast<std::uint64_t>(a.kind) | (a.paired ? 0x100U : 0U));
    }
  }
  return h;
}

/// Rejects v != 1 for schedules that place one stage per rank.
inline void require_one_stage_per_rank(const schedule_params& params, const char* who) {
  if (params.virtual_stages != 1) {
    fail(errc::invalid_argument, who, " places one stage per rank, but v=",
         params.virtual_stages, " was given; use v=1, or interleaved_1f1b for v > 1");
  }
}

}  // namespace detail
}  // namespace ppipe
