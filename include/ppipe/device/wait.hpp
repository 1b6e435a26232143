#pragma once
/// @file
/// @brief Deadlines and the outcome of a wait: the vocabulary shared by devices and transports.
///
/// It lives under device/ because a device's synchronize() and a transport's completions both wait
/// on the same clock, and device/ must not depend on transport/ (a transport is built on a device).

#include <chrono>

namespace ppipe {

/// @brief How a wait (on a transfer, an event or a stream) ended.
enum class wait_status : unsigned char {
  ready,      ///< the work is complete (or, on a device, ordered before the work that follows)
  timed_out,  ///< the deadline passed first
  aborted,    ///< another rank failed and the run is being torn down
};

/// @brief The clock every deadline is measured on.
using deadline_clock = std::chrono::steady_clock;

/// @brief now + `timeout`, saturated: a timeout of milliseconds::max() means "wait for ever".
/// Reads deadline_clock once, on the calling thread; never throws.
/// @param timeout how long from now the wait may last
/// @return deadline_clock::now() + `timeout`, or time_point::max() where that sum would not fit
inline deadline_clock::time_point deadline_after(std::chrono::milliseconds timeout) {
  const auto now = deadline_clock::now();
  const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_clock::time_point::max() - now);
  if (timeout >= room) return deadline_clock::time_point::max();
  return now + std::chrono::duration_cast<deadline_clock::duration>(timeout);
}

/// @brief A deadline that has always passed: a wait given it only checks whether its work is
/// done (without reading the clock to say so).
inline constexpr deadline_clock::time_point already_passed{};

}  // namespace ppipe
