#pragma once
/// @file
/// @brief The rank threads: one worker thread per rank, started once and kept for every later
/// run, each of which runs one job on every rank and waits for all of them.

#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"

namespace ppipe {

/// @brief A job for every rank of a rank_pool: called on rank `rank`'s thread with what that
/// rank's start hook threw (null when the rank started), so that the job can fail the rank with it.
template <class Job>
concept rank_job = std::invocable<Job&, int, const std::exception_ptr&>;

/// @brief One thread per rank, kept between runs: starting p threads costs more than a small step
/// (tens of microseconds each), and a device backend binds each thread to its rank's device once.
///
/// Rank r always runs on the pool's r-th thread. A pool runs one job at a time; training steps and
/// generation calls of one pipeline take turns on it.
class rank_pool {
 public:
  /// @brief What runs once on each rank's thread before its first job (the backend's start_rank).
  using start_hook = std::function<void(int rank)>;

  /// @brief A pool that starts no thread until its first run.
  /// @param start runs on each thread as it starts; what it throws is handed to every job of that
  /// rank, until the pool is rebuilt
  explicit rank_pool(start_hook start = {}) : start_(std::move(start)) {}

  rank_pool(const rank_pool&) = delete;
  rank_pool& operator=(const rank_pool&) = delete;
  ~rank_pool() { stop(); }

  /// @brief Runs `job(r, start_failure)` on the thread of every rank r < `ranks` and returns once
  /// all of them have returned. Starts the threads on the first run (or when `ranks` changes).
  /// @param ranks how many ranks the job has
  /// @param job called once per rank, concurrently; it must not throw
  template <rank_job Job>
  void run(int ranks, Job&& job) {
    start(ranks);
    {
      const std::lock_guard lock(mutex_);
      job_ = {&job, [](void* self, int r, const std::exception_ptr& not_started) {
                (*static_cast<std::remove_reference_t<Job>*>(self))(r, not_started);
              }};
      ++generation_;
      running_ = ranks;
    }
    posted_.notify_all();
    // No deadline here: every rank's own waits have one, so the ranks end (unless a kernel never
    // returns, which nothing outside it can stop).
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return running_ == 0; });
  }

  /// @brief The number of threads running (0 before the first run).
  /// @return the ranks of the last run
  [[nodiscard]] int size() const noexcept { return static_cast<int>(threads_.size()); }

 private:
  // A job without its type: the workers call it through one function pointer.
  struct erased_job {
    void* self = nullptr;
    void (*call)(void*, int, const std::exception_ptr&) = nullptr;
  };

  // Makes sure there are exactly p threads (a pipeline's p never changes, but an executor may be
  // reused for another schedule).
  void start(int p) {
    if (static_cast<int>(threads_.size()) == p) return;
    stop();
    {
      const std::lock_guard lock(mutex_);
      stopping_ = false;
    }
    try {
      for (int r = 0; r < p; ++r) threads_.emplace_back([this, r] { thread_main(r); });
    } catch (const std::system_error& e) {
      stop();
      detail::fail(errc::backend, "could not start the thread of rank ", threads_.size(), " of ", p, ": ", e.what(),
                   "; the host backend needs one thread per rank");
    }
  }

  void stop() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    posted_.notify_all();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  void thread_main(int r) {
    std::uint64_t seen = 0;
    std::exception_ptr not_started;
    if (start_) {
      try {
        start_(r);
      } catch (...) {
        not_started = std::current_exception();
      }
    }
    for (;;) {
      erased_job current;
      {
        std::unique_lock lock(mutex_);
        posted_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        current = job_;
      }
      current.call(current.self, r, not_started);
      {
        const std::lock_guard lock(mutex_);
        if (--running_ == 0) done_.notify_all();
      }
    }
  }

  start_hook start_;
  std::vector<std::thread> threads_;
  // The job and its bookkeeping; guarded by mutex_.
  std::mutex mutex_;
  std::condition_variable posted_;
  std::condition_variable done_;
  erased_job job_;
  std::uint64_t generation_ = 0;
  int running_ = 0;
  bool stopping_ = false;
};

}  // namespace ppipe
