#pragma once
/// @file
/// @brief Proves a schedule complete and deadlock-free, or says where it goes wrong.

#include "ppipe/schedule/detail/deadlock.hpp"
#include "ppipe/schedule/detail/replay.hpp"
#include "ppipe/schedule/detail/structure_check.hpp"
#include "ppipe/error.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/problem.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

/// @brief Checks that `s` is complete (every forward, every backward or I then W, every transfer
/// where data crosses ranks), that each rank's order respects the data it needs, that every send
/// has its receive, that two ranks order the messages between them the same way, and that no ranks
/// wait on each other forever under `model` (see transfer_model; `rendezvous`, the default, is the
/// strict one and implies `buffered`). Returns the first problem with its rank, step and action,
/// and the rank-by-step grid around it.
/// @param s the schedule to check
/// @param model the transfer model to prove it deadlock-free under
/// @return a report whose ok() is true for a valid schedule; it does not throw for an invalid one
inline validation_report check_schedule(const schedule& s, transfer_model model = transfer_model::rendezvous) {
  if (auto problem = detail::structure_checker(s).run()) return detail::report(s, std::move(*problem));
  detail::no_hooks hooks;
  const detail::replay_result run = detail::replay(s, model, hooks);
  if (!run.finished) return detail::report(s, detail::deadlock_problem(s, run, model));
  return {};
}

/// @brief Like check_schedule(), but throws ppipe::error (errc::invalid_schedule, or errc::deadlock)
/// carrying the report's message when the schedule is not valid.
/// @param s the schedule to check
/// @param model the transfer model to prove it deadlock-free under
inline void validate(const schedule& s, transfer_model model = transfer_model::rendezvous) {
  const validation_report r = check_schedule(s, model);
  if (!r.ok()) detail::throw_report(r);
}

}  // namespace ppipe
