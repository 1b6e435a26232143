#pragma once
/// @file
/// @brief What the validator reports when a schedule is not valid.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ppipe/schedule/action.hpp"
#include "ppipe/schedule/grid.hpp"

namespace ppipe {

/// @brief What is wrong with a schedule.
enum class problem_kind : unsigned char {
  inconsistent,         ///< the schedule's own numbers disagree (lists vs ranks, no microbatches)
  out_of_range,         ///< an action names a kind, stage or microbatch that does not exist
  wrong_rank,           ///< an action sits on a rank that does not hold its stage
  wrong_mode,           ///< a backward-pass action in a forward-only (inference) schedule
  duplicate,            ///< an action appears twice, or B is mixed with I/W for one microbatch
  missing,              ///< a needed forward or backward never runs
  order,                ///< an action runs before something it needs on its own rank
  needless_transfer,    ///< a send or receive where no data crosses ranks
  unmatched_transfer,   ///< a send that is never received, or a receive that is never sent
  mismatched_transfer,  ///< two ranks order the messages between them differently
  deadlock,             ///< ranks wait on each other in a cycle
  unpaired,             ///< a paired forward (F+) not followed directly by a full backward
};

/// @brief The name of a problem kind, e.g. "deadlock".
/// @param kind the problem kind to name
/// @return the enumerator's name, a view of a static string; "?" for a value outside the enumeration
constexpr std::string_view to_string(problem_kind kind) noexcept {
  switch (kind) {
    case problem_kind::inconsistent: return "inconsistent";
    case problem_kind::out_of_range: return "out_of_range";
    case problem_kind::wrong_rank: return "wrong_rank";
    case problem_kind::wrong_mode: return "wrong_mode";
    case problem_kind::duplicate: return "duplicate";
    case problem_kind::missing: return "missing";
    case problem_kind::order: return "order";
    case problem_kind::needless_transfer: return "needless_transfer";
    case problem_kind::unmatched_transfer: return "unmatched_transfer";
    case problem_kind::mismatched_transfer: return "mismatched_transfer";
    case problem_kind::deadlock: return "deadlock";
    case problem_kind::unpaired: return "unpaired";
  }
  return "?";
}

/// @brief One edge of a deadlock cycle: `waiter` is stuck in the transfer `waiting`, whose other
/// end `awaited` rank `peer.rank` posts only later, at step `peer.step`.
struct wait_link {
  grid_cell waiter;  ///< the rank that is stuck and the step of its transfer
  action waiting;    ///< the transfer `waiter` is stuck in
  grid_cell peer;    ///< the rank that holds the other end and the step where that end is posted
  action awaited;    ///< the other end of `waiting`, on rank `peer.rank`
};

/// @brief The first problem found in a schedule.
struct schedule_problem {
  problem_kind kind = problem_kind::inconsistent;  ///< what sort of problem it is
  int rank = -1;  ///< the rank where it was found (-1: the schedule as a whole)
  int step = -1;  ///< the position in that rank's list (-1: the action is missing)
  action act{};   ///< the action at fault, or the one that is missing
  std::string what;              ///< what is wrong and how to fix it
  std::vector<wait_link> cycle;  ///< for deadlocks: every rank in the cycle
};

/// @brief The outcome of check_schedule().
struct validation_report {
  std::optional<schedule_problem> problem;  ///< empty when the schedule is valid
  std::string grid;                         ///< the rank-by-step grid around the problem

  /// @brief True when the schedule is valid, i.e. no problem was found.
  /// @return whether `problem` is empty
  [[nodiscard]] bool ok() const noexcept { return !problem.has_value(); }
  /// @brief The problem's explanation followed by the grid; empty when ok().
  /// @return the text ppipe::error carries when validate() rejects the schedule
  [[nodiscard]] std::string message() const {
    return ok() ? std::string() : problem->what + "\n" + grid;
  }
};

}  // namespace ppipe
