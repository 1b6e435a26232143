#pragma once
// The waiting kernel of the benchmarks: it takes a fixed time without holding a core, as a GPU
// kernel does for the CPU thread that launched it. It sleeps, with its thread's timer slack
// lowered to 1 ns, until `spin` before its deadline, then yields until the deadline. On the
// project's VM a sleep still ends 30-60 us late (the wake-up, not the slack), so a spin of 100 us
// is the figure to quote and 0 shows sleeping alone.

#include <chrono>
#include <thread>

#ifdef __linux__
#include <sys/prctl.h>
#endif

namespace bench {

// The default timer slack (50 us) lets a sleep end up to that late. ppipe makes the rank threads,
// so each lowers its own slack on its first wait.
inline void lower_timer_slack() {
#ifdef __linux__
  thread_local bool lowered = false;
  if (!lowered) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    lowered = true;
  }
#endif
}

// Waits `d` from now without holding a core: sleeps until `spin` before the deadline, then yields
// until it (spin = 0: sleep only).
inline void wait_kernel(std::chrono::nanoseconds d, std::chrono::nanoseconds spin) {
  lower_timer_slack();
  const auto deadline = std::chrono::steady_clock::now() + d;
  if (d > spin) std::this_thread::sleep_until(deadline - spin);
  while (std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
}

}  // namespace bench
