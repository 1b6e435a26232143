#pragma once
/// @file
/// @brief Explains a replay that did not finish: the cycle of ranks waiting on each other, and the
/// rank-by-step grid around a problem.

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "ppipe/schedule/detail/channels.hpp"
#include "ppipe/schedule/detail/replay.hpp"
#include "ppipe/schedule/detail/structure_check.hpp"
#include "ppipe/schedule/grid.hpp"
#include "ppipe/schedule/problem.hpp"

namespace ppipe::detail {

/// The transfer stuck rank `r` waits in, and the other end of it that its peer has not posted.
/// Under `buffered` that is the receive at pc and its send. Under `rendezvous` some transfer of the
/// rank's group has an other end its peer has not posted yet (otherwise the group would complete).
inline wait_link first_wait(const schedule& s, const replay_result& stopped, transfer_model model, int r) {
  const auto& rank_of = s.place.rank_table();
  const auto& list = s.ranks[static_cast<std::size_t>(r)];
  const std::size_t from = stopped.pc[static_cast<std::size_t>(r)];
  const std::size_t to = model == transfer_model::buffered ? from + 1 : stopped.posted_end[static_cast<std::size_t>(r)];
  wait_link link{};
  for (std::size_t i = from; i < to; ++i) {
    const action other = counterpart(list[i]);
    const int peer = rank_of[static_cast<std::size_t>(other.stage)];
    const int at = find_step(s, peer, other);
    link = {{r, static_cast<int>(i)}, list[i], {peer, at}, other};
    if (at < 0 || static_cast<std::size_t>(at) >= stopped.posted_end[static_cast<std::size_t>(peer)]) break;
  }
  return link;
}

/// Follows each stuck rank to the peer it waits on until the walk closes into a cycle.
inline schedule_problem deadlock_problem(const schedule& s, const replay_result& stopped, transfer_model model) {
  const auto stuck = [&](int r) {
    return stopped.pc[static_cast<std::size_t>(r)] < s.ranks[static_cast<std::size_t>(r)].size();
  };
  int r = 0;
  while (!stuck(r)) ++r;
  std::vector<int> seen(s.ranks.size(), -1);
  std::vector<wait_link> path;
  while (seen[static_cast<std::size_t>(r)] < 0) {
    seen[static_cast<std::size_t>(r)] = static_cast<int>(path.size());
    path.push_back(first_wait(s, stopped, model, r));
    r = path.back().peer.rank;
    if (!stuck(r)) break;  // cannot happen after the structural checks; keep the whole path
  }
  std::vector<wait_link> cycle(path.begin() + std::max(0, seen[static_cast<std::size_t>(r)]), path.end());
  std::rotate(cycle.begin(),
              std::min_element(cycle.begin(), cycle.end(),
                               [](const wait_link& a, const wait_link& b) { return a.waiter.rank < b.waiter.rank; }),
              cycle.end());

  schedule_problem p{problem_kind::deadlock, cycle.front().waiter.rank, cycle.front().waiter.step,
                     cycle.front().waiting, {}, cycle};
  std::string chain;
  for (const wait_link& link : cycle) {
    chain += concat("\n  rank ", link.waiter.rank, " waits at step ", link.waiter.step, " in ",
                    to_string(link.waiting), " for ", to_string(link.awaited), ", which rank ",
                    link.peer.rank, " posts only at step ", link.peer.step);
  }
  const char* fix = model == transfer_model::buffered
                        ? "move one of these sends before the receive its rank waits in, or that receive after it"
                        : "reorder so that one of these ranks posts what its peer waits for before it waits "
                          "itself; a send and a receive with no compute between them are posted together";
  p.what = concat("rank ", p.rank, " step ", p.step, ": ", cycle.size(),
                  cycle.size() == 1 ? " rank waits" : " ranks wait", " for each other forever under the ",
                  to_string(model), " transfer model:", chain, "\n  ", fix);
  return p;
}

/// The grid around a problem: every rank and step involved marked, a few steps either side. Marks
/// far apart get a window each.
inline std::string problem_grid(const schedule& s, const schedule_problem& p) {
  if (p.rank < 0 || static_cast<std::size_t>(p.rank) >= s.ranks.size()) return {};
  std::vector<grid_cell> marks;
  for (const wait_link& link : p.cycle) {
    marks.push_back(link.waiter);
    if (link.peer.step >= 0) marks.push_back(link.peer);
  }
  if (marks.empty()) {
    // A missing action (step -1): show the end of the rank's list.
    const int at = p.step >= 0 ? p.step : static_cast<int>(s.ranks[static_cast<std::size_t>(p.rank)].size());
    if (p.step >= 0) marks.push_back({p.rank, p.step});
    return render_step_grid(s, at - 4, at + 4, marks);
  }
  std::vector<int> steps;
  for (const grid_cell& c : marks) steps.push_back(c.step);
  std::sort(steps.begin(), steps.end());
  std::string out;
  for (std::size_t i = 0; i < steps.size();) {
    std::size_t j = i;
    while (j + 1 < steps.size() && steps[j + 1] - steps[j] <= 8) ++j;
    if (!out.empty()) out += "...\n";
    out += render_step_grid(s, steps[i] - 3, steps[j] + 3, marks);
    i = j + 1;
  }
  return out;
}

inline validation_report report(const schedule& s, schedule_problem p) {
  p.what = concat("schedule \"", s.name, "\": ", p.what);
  validation_report out;
  out.grid = problem_grid(s, p);
  out.problem = std::move(p);
  return out;
}

/// Throws the error that a failed report stands for.
[[noreturn]] inline void throw_report(const validation_report& r) {
  throw error(r.problem->kind == problem_kind::deadlock ? errc::deadlock : errc::invalid_schedule,
              r.message());
}

}  // namespace ppipe::detail
