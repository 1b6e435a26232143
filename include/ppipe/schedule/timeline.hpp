#pragma once
/// @file
/// @brief The rank-by-time chart that pipeline papers draw, as text for a terminal.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/simulate.hpp"

namespace ppipe {

/// @brief How render_timeline() lays out the chart.
struct timeline_options {
  /// Characters per line; a longer chart is wrapped into blocks, each with its time range.
  int width = 100;
  /// Time per character column; 0 picks the widest scale at which the shortest action still
  /// shows its whole label, or, if the chart would then be longer than `max_columns`, the scale
  /// that fits it into that many.
  double time_per_column = 0.0;
  /// The longest chart (in columns per rank) the automatic scale draws.
  int max_columns = 1 << 14;
  /// What the times are in, for the header line ("one column = 2 <unit>").
  std::string unit = "time units";
};

namespace detail {

/// "F5", or "2F5" when ranks hold several stages and the stage must be told apart.
inline std::string timeline_label(const action& a, bool show_stage) {
  return show_stage ? to_string(a) : std::string(code(a.kind)) + std::to_string(a.microbatch);
}

}  // namespace detail

/// @brief Draws a simulation (recorded with `record_timeline`) as one row per rank: each action
/// starts with its label ("F3", "B0"; with the stage in front, "5F3", when ranks hold several
/// stages) and fills its duration with spaces; '.' is idle time. An action shorter than a column
/// shows as its kind's letter where it starts.
/// Throws ppipe::error (invalid_argument) if the timeline has a different number of rows than `s`
/// has ranks, if `options.width` is below 20 or `options.max_columns` below 1, if the makespan is
/// negative or not finite, or if the chart would exceed 2^24 characters.
/// @param s the schedule that was simulated
/// @param sim its simulation, run with record_timeline = true
/// @param options line width, time scale and unit
/// @return a header line, then blocks of one line per rank, each block headed by its time range
inline std::string render_timeline(const schedule& s, const simulation& sim, timeline_options options = {}) {
  if (sim.timeline.size() != s.ranks.size()) {
    detail::fail(errc::invalid_argument, "the simulation has ", sim.timeline.size(),
                 " timeline rows for a schedule of ", s.ranks.size(),
                 " ranks; simulate this schedule with record_timeline = true");
  }
  if (options.width < 20) {
    detail::fail(errc::invalid_argument, "timeline width ", options.width, " is too narrow; use 20 or more");
  }
  if (options.max_columns < 1) {
    detail::fail(errc::invalid_argument, "timeline max_columns ", options.max_columns, " must be at least 1");
  }
  if (!std::isfinite(sim.makespan) || sim.makespan < 0) {
    detail::fail(errc::invalid_argument, "the simulation's step time ", sim.makespan, " cannot be drawn");
  }
  const bool show_stage = s.num_stages() > s.num_ranks();
  double shortest = 0.0;
  std::size_t longest_label = 1;
  for (const auto& row : sim.timeline) {
    for (const timed_action& t : row) {
      const double d = t.end - t.start;
      if (d > 0 && (shortest == 0.0 || d < shortest)) shortest = d;
      longest_label = std::max(longest_label, detail::timeline_label(t.act, show_stage).size());
    }
  }
  // With an automatic scale the shortest action spans `step` columns; wrapping at a multiple of
  // it keeps each block's time range a round number of such actions.
  std::size_t step = 1;
  double per_column = options.time_per_column;
  if (!(per_column > 0)) {
    step = longest_label + 1;
    per_column = shortest > 0 ? shortest / static_cast<double>(step) : 1.0;
    if (sim.makespan / per_column > options.max_columns) {  // too long to read: coarsen
      per_column = sim.makespan / options.max_columns;
      step = 1;
    }
  }
  // Columns and cells are bounded before anything is allocated.
  constexpr double max_cells = 1 << 24;
  const double wanted = std::ceil(sim.makespan / per_column);
  const double ranks = static_cast<double>(std::max<std::size_t>(s.ranks.size(), 1));
  if (wanted * ranks > max_cells) {
    const double fits = std::floor(max_cells / ranks);
    detail::fail(errc::invalid_argument, "a timeline of ", static_cast<long long>(std::min(wanted, 1e18)),
                 " columns for ", s.ranks.size(), " ranks is more than ", static_cast<long long>(max_cells),
                 " characters; draw at most ", static_cast<long long>(fits),
                 " columns (max_columns, or time_per_column of at least ", sim.makespan / std::max(fits, 1.0),
                 ")", fits < 1 ? ", or fewer ranks" : "");
  }
  const auto column = [&](double t) { return static_cast<std::size_t>(std::llround(t / per_column)); };
  const std::size_t columns = std::max<std::size_t>(column(sim.makespan), 1);

  std::vector<std::string> rows(s.ranks.size(), std::string(columns, '.'));
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (const timed_action& t : sim.timeline[r]) {
      const std::size_t from = std::min(column(t.start), columns);
      const std::size_t to = std::min(column(t.end), columns);
      if (to <= from) {
        if (from < columns && rows[r][from] == '.') rows[r][from] = code(t.act.kind)[0];
        continue;
      }
      const std::string label = detail::timeline_label(t.act, show_stage);
      for (std::size_t c = from; c < to; ++c) {
        rows[r][c] = c - from < label.size() ? label[c - from] : ' ';
      }
    }
  }

  const std::string prefix_model = detail::concat("rank ", rows.size() - 1, " |");
  std::size_t usable = std::max<std::size_t>(
      static_cast<std::size_t>(options.width) - std::min<std::size_t>(prefix_model.size(), 40), 10);
  usable = std::max(step, usable / step * step);
  std::ostringstream out;
  out << "one column = " << per_column << " " << options.unit << "; '.' = idle\n";
  for (std::size_t first = 0; first < columns; first += usable) {
    const std::size_t last = std::min(columns, first + usable);
    out << "time " << static_cast<double>(first) * per_column << " .. "
        << static_cast<double>(last) * per_column << '\n';
    for (std::size_t r = 0; r < rows.size(); ++r) {
      std::string prefix = detail::concat("rank ", r);
      prefix.resize(prefix_model.size() - 1, ' ');
      std::string body = rows[r].substr(first, last - first);
      while (!body.empty() && body.back() == ' ') body.pop_back();
      out << prefix << '|' << body << '\n';
    }
  }
  return out.str();
}

}  // namespace ppipe
