#pragma once
/// @file
/// @brief The watchdog's board: what every rank is doing right now, so that a rank that waits too
/// long can say what it waited for and what all the others were doing.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "ppipe/device/failure.hpp"
#include "ppipe/error.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe::detail {

/// The watchdog's error: its message already names the rank and what every rank was doing, so
/// it reaches the caller as it is.
class watchdog_error : public error {
 public:
  using error::error;
};

/// Rethrows a rank's failure for the caller, prefixed with `where` it happened ("rank 1 in 1F3,
/// step 7 of 24"): a ppipe::error keeps its code, anything else becomes stage_failed, and the
/// original is nested. The watchdog's own error goes through as it is.
[[noreturn]] inline void rethrow_at(const std::exception_ptr& failure, const std::string& where) {
  try {
    std::rethrow_exception(failure);
  } catch (const watchdog_error&) {
    throw;  // its message already says where, and what every rank was doing
  } catch (...) {
    std::rethrow_exception(failure_at(where));
  }
}

/// Every rank's position in its action list. Each rank writes only its own entry; any rank reads
/// all of them, for a message, when it times out.
class status_board {
 public:
  enum class state : int { not_started, running, waiting, finished, stopped };

  explicit status_board(int ranks) : entries_(static_cast<std::size_t>(ranks)) {}

  void running(int rank, int step) {
    entry& e = at(rank);
    e.step.store(step, std::memory_order_relaxed);
    e.what.store(static_cast<int>(state::running), std::memory_order_release);
  }
  /// Rank `rank`, at `step`, waits for the transfer at `waited_step` (or -1: for the other ranks).
  void waiting(int rank, int step, int waited_step) {
    entry& e = at(rank);
    e.step.store(step, std::memory_order_relaxed);
    e.waited.store(waited_step, std::memory_order_relaxed);
    e.what.store(static_cast<int>(state::waiting), std::memory_order_release);
  }
  void finished(int rank) { at(rank).what.store(static_cast<int>(state::finished), std::memory_order_release); }
  void stopped(int rank) { at(rank).what.store(static_cast<int>(state::stopped), std::memory_order_release); }
  void reset() {
    for (entry& e : entries_) {
      e.what.store(static_cast<int>(state::not_started));
      e.step.store(-1);
      e.waited.store(-1);
    }
  }

  /// "rank 1: running 1F3 (forward of stage 1, microbatch 3), step 7 of 24" and so on, one line
  /// per rank other than `self`.
  [[nodiscard]] std::string others(const schedule& s, int self) const {
    std::string out;
    for (int r = 0; r < static_cast<int>(entries_.size()); ++r) {
      if (r == self) continue;
      out += "\n  ";
      out += describe_rank(s, r);
    }
    return out;
  }

  [[nodiscard]] std::string describe_rank(const schedule& s, int r) const {
    const entry& e = entries_[static_cast<std::size_t>(r)];
    const auto what = static_cast<state>(e.what.load(std::memory_order_acquire));
    const int step = e.step.load(std::memory_order_relaxed);
    const auto& list = s.ranks[static_cast<std::size_t>(r)];
    const auto at_step = [&](int k) {
      return k >= 0 && static_cast<std::size_t>(k) < list.size() ? describe(list[static_cast<std::size_t>(k)])
                                                                 : std::string("(no action)");
    };
    const std::string where = concat(", step ", step + 1, " of ", list.size());
    switch (what) {
      case state::not_started: return concat("rank ", r, ": not started");
      case state::running: return concat("rank ", r, ": running ", at_step(step), where);
      case state::waiting: {
        const int waited = e.waited.load(std::memory_order_relaxed);
        return concat("rank ", r, ": waiting in ", at_step(step), " for ",
                      waited >= 0 ? at_step(waited) : std::string("the other ranks to finish the step"), where);
      }
      case state::finished: return concat("rank ", r, ": finished its ", list.size(), " actions");
      case state::stopped: return concat("rank ", r, ": stopped after another rank failed");
    }
    return concat("rank ", r, ": unknown");
  }

 private:
  struct entry {
    std::atomic<int> what{0};
    std::atomic<int> step{-1};
    std::atomic<int> waited{-1};
  };
  entry& at(int rank) { return entries_[static_cast<std::size_t>(rank)]; }

  std::vector<entry> entries_;
};

}  // namespace ppipe::detail
