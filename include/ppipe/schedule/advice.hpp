#pragma once
/// @file
/// @brief Plain-language warnings about a planned pipeline: too few microbatches, a large bubble,
/// a pipeline slower than one device.

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/simulate.hpp"

namespace ppipe {

/// @brief The textbook bubble share of a step, (p-1)/(v*m + p-1), for GPipe and 1F1B (v = 1) and
/// interleaved 1F1B with equal stage costs and free transfers.
/// @param ranks pipeline ranks p (>= 1)
/// @param microbatches microbatches per step m (>= 1)
/// @param virtual_stages stages per rank v (>= 1)
/// @return the idle share of the step, from 0 (p = 1) up to but not including 1; no argument is checked
constexpr double ideal_bubble_fraction(int ranks, int microbatches, int virtual_stages = 1) {
  return static_cast<double>(ranks - 1) /
         (static_cast<double>(virtual_stages) * microbatches + ranks - 1);
}

/// @brief The smallest m whose textbook bubble is at most `max_bubble` (0 < max_bubble < 1),
/// rounded up to a multiple of `multiple_of`.
/// Throws ppipe::error (invalid_argument) if `max_bubble` is not strictly between 0 and 1, if
/// `ranks` or `virtual_stages` is below 1, or if the answer would exceed 2^26 microbatches.
/// @param ranks pipeline ranks p (>= 1)
/// @param max_bubble the largest acceptable share of the step spent idle, 0 < max_bubble < 1
/// @param virtual_stages stages per rank v (>= 1)
/// @param multiple_of the result is rounded up to a multiple of this (interleaved 1F1B needs p);
/// 1 or less rounds nothing
/// @return the number of microbatches m, at least 1
inline int microbatches_for_bubble(int ranks, double max_bubble, int virtual_stages = 1,
                                   int multiple_of = 1) {
  if (!(max_bubble > 0 && max_bubble < 1)) {
    detail::fail(errc::invalid_argument, "bubble target ", max_bubble, " must lie strictly between 0 and 1");
  }
  if (ranks < 1 || virtual_stages < 1) {
    detail::fail(errc::invalid_argument, "ranks=", ranks, " and virtual_stages=", virtual_stages,
                 " must both be at least 1");
  }
  const double needed = (ranks - 1) * (1 - max_bubble) / (max_bubble * virtual_stages);
  constexpr double most = 1 << 26;
  if (needed > most) {
    detail::fail(errc::invalid_argument, "a bubble of at most ", max_bubble, " with p=", ranks,
                 " needs more than ", most, " microbatches; aim for a larger bubble");
  }
  int m = std::max(1, static_cast<int>(std::ceil(needed - 1e-9)));
  if (multiple_of > 1) m = ((m + multiple_of - 1) / multiple_of) * multiple_of;
  return m;
}

/// @brief Thresholds for advise().
struct advice_options {
  double max_bubble = 0.2;  ///< warn when ranks idle more than this share of the step
  /// The stage split is already the best there is (e.g. a partitioner proved it optimal, perhaps
  /// within memory limits): do not suggest moving layers between stages.
  bool split_is_optimal = false;
};

/// @brief Warnings for a simulated schedule, each one sentence with the numbers and what to change.
/// Empty when nothing is worth saying. To tell a large bubble's cause, it simulates the same schedule
/// again with every stage at the average cost and free transfers: if that still idles too much the
/// schedule needs more microbatches; if not, a slow stage or the transfers are to blame.
/// @param s the schedule that was simulated
/// @param sim the result of simulate() for `s`
/// @param options the thresholds that decide what is worth a warning
/// @return the warnings, one sentence each; empty when nothing is worth saying
/// @throws ppipe::error (invalid_argument) when a warning must suggest a microbatch count and
/// `options.max_bubble` is not strictly between 0 and 1
inline std::vector<std::string> advise(const schedule& s, const simulation& sim, advice_options options = {}) {
  std::vector<std::string> out;
  const int p = s.num_ranks();
  const int m = s.microbatches;
  // The textbook formula behind the suggested m holds for looped placements.
  const bool looped = s.place.style() == "looped";
  const int v = looped ? s.num_stages() / p : 1;
  const int multiple = v > 1 ? p : 1;
  const auto percent = [](double x) { return detail::concat(std::round(x * 1000) / 10, "%"); };
  const auto more_microbatches = [&](int at_least) {
    int n = looped ? microbatches_for_bubble(p, options.max_bubble, v, multiple) : m + 1;
    if (n < at_least) n = ((at_least + multiple - 1) / multiple) * multiple;
    return n;
  };
  if (p > 1 && m < p) {
    out.push_back(detail::concat(
        "m=", m, " microbatches cannot fill p=", p, " ranks: at most ", m,
        " ranks ever work at once; use m >= ", p, s.mode == schedule_mode::inference ? " requests in flight" : "",
        " (m >= ", more_microbatches(p), " keeps the bubble under ", percent(options.max_bubble), ")"));
  } else if (p > 1 && sim.bubble_fraction() > options.max_bubble) {
    const std::string idle = detail::concat("ranks idle ", percent(sim.bubble_fraction()), " of the step");
    stage_costs mean{0, 0, 0, 0, 0};
    for (const stage_costs& c : sim.costs.stages) {
      mean.forward += c.forward;
      mean.backward += c.backward;
      mean.backward_input += c.backward_input;
      mean.backward_weight += c.backward_weight;
      mean.recompute += c.recompute;
    }
    const auto n = static_cast<double>(sim.costs.stages.size());
    mean = {mean.forward / n, mean.backward / n, mean.backward_input / n, mean.backward_weight / n,
            mean.recompute / n};
    const double shape = simulate(s, cost_model{{mean}, 0.0}, {false, sim.transfers}).bubble_fraction();
    const auto busiest = std::max_element(sim.busy.begin(), sim.busy.end());
    const double mean_busy = sim.total_busy() / p;
    if (shape > options.max_bubble) {
      out.push_back(detail::concat(
          idle, " (the bubble); with p=", p, v > 1 ? detail::concat(" and v=", v) : std::string(),
          ", about m >= ", more_microbatches(m + 1), " brings it under ", percent(options.max_bubble),
          " (m=", m, " now)"));
    } else if (*busiest > mean_busy * 1.05 && !options.split_is_optimal) {
      out.push_back(detail::concat(
          idle, ", though m=", m, " would idle only ", percent(shape),
          " with balanced stages: rank ", busiest - sim.busy.begin(), " computes ", *busiest,
          " against ", mean_busy, " on average and sets the pace; move layers off it"));
    } else if (sim.costs.transfer > 0) {
      out.push_back(detail::concat(
          idle, ", though m=", m, " would idle only ", percent(shape), " with free transfers: ranks wait ",
          sim.costs.transfer, " for each message; overlap or shrink the transfers"));
    }
  }
  if (p > 1 && sim.speedup() < 1.0) {
    out.push_back(detail::concat(
        "this pipeline is slower than one device running every stage in turn (speedup ",
        std::round(sim.speedup() * 100) / 100, "x): transfers or the bubble cost more than "
        "splitting the work saves; use more microbatches, fewer ranks, or cheaper transfers"));
  }
  return out;
}

}  // namespace ppipe
