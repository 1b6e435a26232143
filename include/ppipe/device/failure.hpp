#pragma once
/// @file
/// @brief A stream device's sticky failure: the first exception its work threw, wrapped to say
/// where, and the abort that makes its streams skip their work.

#include <atomic>
#include <exception>
#include <mutex>
#include <string>

#include "ppipe/error.hpp"

namespace ppipe::detail {

/// The device's sticky failure and its abort: once either is set, every stream skips its work
/// (but not its event records, so that nothing waiting on an event hangs).
class failure_state {
 public:
  /// Keeps `e` if it is the first failure.
  void fail(std::exception_ptr e) {
    const std::lock_guard lock(mutex_);
    if (!first_) first_ = std::move(e);
    skipping_.store(true, std::memory_order_release);
  }
  void abort() {
    const std::lock_guard lock(mutex_);
    aborted_ = true;
    skipping_.store(true, std::memory_order_release);
  }
  void clear() {
    const std::lock_guard lock(mutex_);
    first_ = nullptr;
    aborted_ = false;
    skipping_.store(false, std::memory_order_release);
  }
  [[nodiscard]] bool skipping() const noexcept { return skipping_.load(std::memory_order_acquire); }
  [[nodiscard]] std::exception_ptr first() const {
    const std::lock_guard lock(mutex_);
    return first_;
  }
  [[nodiscard]] bool aborted() const {
    const std::lock_guard lock(mutex_);
    return aborted_;
  }

 private:
  mutable std::mutex mutex_;
  std::exception_ptr first_;
  bool aborted_ = false;
  std::atomic<bool> skipping_{false};
};

/// Wraps the exception being handled as a ppipe::error that says where it happened, with the
/// original nested: a ppipe::error keeps its code, anything else becomes stage_failed.
[[nodiscard]] inline std::exception_ptr failure_at(const std::string& where) {
  try {
    try {
      throw;
    } catch (const error& e) {
      std::throw_with_nested(error(e.code(), concat(where, ": ", e.message())));
    } catch (const std::exception& e) {
      std::throw_with_nested(error(errc::stage_failed, concat(where, " threw: ", e.what())));
    } catch (...) {
      std::throw_with_nested(error(errc::stage_failed, concat(where, " threw an exception that is not a std::exception")));
    }
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace ppipe::detail
