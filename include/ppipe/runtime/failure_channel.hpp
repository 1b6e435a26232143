#pragma once
/// @file
/// @brief How a run's ranks hand a failure to the caller: the first failure wins, every rank can
/// see that one happened, and the wait at the end of a step ends as soon as one does.

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <utility>

#include "ppipe/device/wait.hpp"

namespace ppipe::detail {

/// Thrown inside a rank when another rank has failed: the rank stops without an error of its own.
struct run_aborted {};

/// How a rank's wait for the others at the end of a step ended.
enum class arrival { everyone, failed, timed_out };

/// The failures of one run at a time, and the barrier at its end. `Position` says where in its
/// work a rank was (the executor's action and phase, generation's stage and step).
template <class Position>
class failure_channel {
 public:
  /// The first failure of a run.
  struct record {
    std::exception_ptr error;  ///< what the rank threw (null: no failure)
    int rank = -1;             ///< the rank that threw it
    Position at{};             ///< where it was
  };

  /// Forgets the last run's failure and arrivals; called before a run, while no rank runs.
  void reset() {
    first_ = {};
    failed_.store(false);
    arrived_ = 0;
  }

  /// Whether a rank has failed in this run: read without the lock, by work that polls it.
  [[nodiscard]] bool failed() const noexcept { return failed_.load(); }

  /// The run's first failure: read once every rank has stopped.
  [[nodiscard]] const record& first() const noexcept { return first_; }

  /// Rank `rank` failed at `at`, throwing `e`. Only the first report of a run is kept: the later
  /// ones are mostly what that failure's abort made of the other ranks' waits.
  void report(std::exception_ptr e, int rank, Position at) {
    {
      const std::lock_guard lock(mutex_);
      keep_first(std::move(e), rank, at);
    }
    changed_.notify_all();
  }

  /// Rank `rank` has done its part of the step; waits until all `ranks` have, a rank has failed,
  /// or `until` has passed. On a timeout, what `throw_timeout()` throws becomes this rank's failure
  /// at `at`, recorded before the lock is let go, so that a rank arriving now cannot see every rank
  /// finished and go on in a step that has failed.
  template <class ThrowTimeout>
  arrival arrive_and_wait(int ranks, deadline_clock::time_point until, int rank, Position at,
                          ThrowTimeout&& throw_timeout) {
    std::unique_lock lock(mutex_);
    ++arrived_;
    changed_.notify_all();
    const bool all = changed_.wait_until(lock, until, [&] { return first_.error || arrived_ == ranks; });
    if (first_.error) return arrival::failed;
    if (all) return arrival::everyone;
    std::exception_ptr e;
    try {
      throw_timeout();
    } catch (...) {
      e = std::current_exception();
    }
    keep_first(std::move(e), rank, at);
    lock.unlock();
    changed_.notify_all();
    return arrival::timed_out;
  }

 private:
  // The caller holds mutex_.
  void keep_first(std::exception_ptr e, int rank, Position at) {
    if (first_.error) return;
    failed_.store(true);
    first_ = {std::move(e), rank, at};
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  record first_;
  std::atomic<bool> failed_{false};  // first_.error is set
  int arrived_ = 0;
};

}  // namespace ppipe::detail
