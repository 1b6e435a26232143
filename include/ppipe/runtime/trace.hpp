#pragma once
/// @file
/// @brief The trace of a real run: when each rank started and finished each action.

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "ppipe/schedule/action.hpp"

namespace ppipe {

/// @brief One action as it ran. Times are microseconds since the run started (the same origin on
/// every rank). For a compute action the interval is the call; for a send it is the post until the
/// data left the sender's hands; for a receive it is the post until the data had arrived and was
/// ready for the compute that needs it.
struct trace_event {
  action act;           ///< the action: its kind, stage and microbatch
  int step = 0;         ///< position in the rank's action list
  double start = 0.0;   ///< microseconds since the run started
  double end = 0.0;     ///< microseconds since the run started
};

/// @brief Every rank's events of one run (one train_step or infer call).
struct run_trace {
  std::string schedule_name;                   ///< e.g. "1f1b"
  int microbatches = 0;                        ///< the run's microbatch count, m
  /// ranks[r]: rank r's events. Compute actions and sends are in the order the rank ran them; a
  /// receive is added when its data was taken (just before the compute that needed it), so sort
  /// by `step` or `start` for list order.
  std::vector<std::vector<trace_event>> ranks;
  /// enqueued[r]: when rank r's host thread had issued its last action, in microseconds since the
  /// run started. On a stream device the host runs ahead of the streams, so this is the host's
  /// share of the step; where each call runs to completion, it is the end of the rank's last action.
  std::vector<double> enqueued{};

  /// @brief The number of ranks the trace covers.
  /// @return the size of `ranks`
  [[nodiscard]] int num_ranks() const noexcept { return static_cast<int>(ranks.size()); }
  /// @brief Whether no rank recorded any event.
  /// @return true if every rank's event list is empty (also when there are no ranks)
  [[nodiscard]] bool empty() const noexcept {
    return std::all_of(ranks.begin(), ranks.end(), [](const auto& r) { return r.empty(); });
  }
  /// @brief From the first start to the last end over all ranks, in microseconds.
  /// @return the span, or 0 where the trace has no events
  [[nodiscard]] double makespan() const noexcept {
    double first = 0.0;
    double last = 0.0;
    bool any = false;
    for (const auto& list : ranks) {
      for (const trace_event& e : list) {
        first = any ? std::min(first, e.start) : e.start;
        last = any ? std::max(last, e.end) : e.end;
        any = true;
      }
    }
    return any ? last - first : 0.0;
  }
  /// @brief Time rank `r` spent in compute actions (F, B, I, W), in microseconds.
  /// @param r the rank, in [0, num_ranks()); another value throws std::out_of_range
  /// @return the sum of its compute events' durations
  [[nodiscard]] double busy(int r) const {
    double t = 0.0;
    for (const trace_event& e : ranks.at(static_cast<std::size_t>(r))) {
      if (is_compute(e.act.kind)) t += e.end - e.start;
    }
    return t;
  }
  /// @brief The measured bubble: the share of p × makespan that ranks spent outside compute
  /// (waiting for data, or in ppipe itself). Comparable with simulation::bubble_fraction().
  /// @return a fraction, normally in [0, 1); 0 where the makespan is not positive or there are no
  /// ranks
  [[nodiscard]] double bubble_fraction() const {
    const double span = makespan();
    if (!(span > 0) || ranks.empty()) return 0.0;
    double total = 0.0;
    for (int r = 0; r < num_ranks(); ++r) total += busy(r);
    return 1.0 - total / (span * static_cast<double>(ranks.size()));
  }
};

}  // namespace ppipe
