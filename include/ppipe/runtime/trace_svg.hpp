#pragma once
/// @file
/// @brief A measured run (run_trace) drawn as the SVG picture render_svg() draws for a simulation,
/// so that a run and its plan can be put side by side.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/schedule/action.hpp"
#include "ppipe/schedule/svg.hpp"

namespace ppipe {

/// @brief Draws a measured run as render_svg(schedule, simulation) draws a plan: one row per rank,
/// a box per compute event from its start to its end (times in microseconds from the earliest
/// event), shaded by the stage's position among the stages the rank ran, and each transfer as a
/// thin grey strip along the bottom of its row (for a receive, mostly the wait for its data). The
/// title gives the schedule name, p, m, the measured bubble and the step time. Throws ppipe::error
/// (invalid_argument) if a time is not finite.
/// @param t the measured run
/// @param options the picture's settings, as for a simulation; an empty `title` or `unit` is
/// filled in from the trace (the unit defaults to "microseconds")
/// @return the SVG document, as text
inline std::string render_svg(const run_trace& t, const svg_options& options = {}) {
  double origin = 0.0;
  bool any = false;
  for (std::size_t r = 0; r < t.ranks.size(); ++r) {
    for (const trace_event& e : t.ranks[r]) {
      if (!std::isfinite(e.start) || !std::isfinite(e.end)) {
        detail::fail(errc::invalid_argument, "rank ", r, "'s event ", to_string(e.act), " (step ",
                     e.step, ") has start ", e.start, " and end ", e.end,
                     "; a trace needs finite times, so record it with a steady clock");
      }
      origin = any ? std::min(origin, e.start) : e.start;
      any = true;
    }
  }
  detail::svg_chart chart;
  chart.unit = options.unit.empty() ? "microseconds" : options.unit;
  chart.rows.resize(t.ranks.size());
  for (std::size_t r = 0; r < t.ranks.size(); ++r) {
    // A trace carries no placement: a stage's shade is its place among the stages this rank ran.
    std::vector<int> stages;
    for (const trace_event& e : t.ranks[r]) {
      if (is_compute(e.act.kind)) stages.push_back(e.act.stage);
    }
    std::sort(stages.begin(), stages.end());
    stages.erase(std::unique(stages.begin(), stages.end()), stages.end());
    chart.chunks = std::max(chart.chunks, static_cast<int>(stages.size()));
    for (const trace_event& e : t.ranks[r]) {
      const auto at = std::lower_bound(stages.begin(), stages.end(), e.act.stage);
      const int chunk =
          at != stages.end() && *at == e.act.stage ? static_cast<int>(at - stages.begin()) : 0;
      chart.step = std::max(chart.step, e.end - origin);
      chart.rows[r].push_back({e.act, chunk, e.start - origin, e.end - origin});
    }
    // Transfers last, so that a strip shows even where a transfer overlaps compute.
    std::stable_partition(chart.rows[r].begin(), chart.rows[r].end(),
                          [](const detail::svg_box& b) { return is_compute(b.act.kind); });
  }
  chart.title = !options.title.empty()
                    ? options.title
                    : detail::concat(t.schedule_name, " (measured): p=", t.ranks.size(),
                                     ", m=", t.microbatches, ", v=", chart.chunks, ", bubble ",
                                     detail::svg_percent(t.bubble_fraction()), " of the step (",
                                     detail::svg_time(t.makespan()), " ", chart.unit, ")");
  return detail::draw_svg(chart, options);
}

}  // namespace ppipe
