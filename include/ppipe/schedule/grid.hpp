#pragma once
/// @file
/// @brief The rank-by-step grid of a schedule: one row per rank, one column per step (the
/// position in the rank's action list). Timing-free; the simulator's timeline adds time.

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

/// @brief A cell of the step grid: the action at `step` in rank `rank`'s list.
struct grid_cell {
  int rank = 0;  ///< the row: a pipeline rank, 0 .. p-1
  int step = 0;  ///< the column: the position in that rank's action list, from 0
};

/// @brief Renders steps `first_step` .. `last_step` (inclusive, at most 64 of them) of every rank as
/// text, with the cells in `marks` shown in [brackets]. With more than 8 ranks only the marked ranks and their
/// neighbours are shown (all ranks when nothing is marked). Steps past a rank's end show "-".
/// @param s the schedule to draw
/// @param first_step the first column shown; clamped to 0 .. the longest list's length
/// @param last_step the last column shown; clamped to first_step .. first_step + 63
/// @param marks the cells to bracket, e.g. where a problem was found; cells outside the range are ignored
/// @return a header line of step numbers, then one line per shown rank ("..." for each run of
/// hidden ranks), every line ending in a newline
inline std::string render_step_grid(const schedule& s, int first_step, int last_step,
                                    std::span<const grid_cell> marks = {}) {
  const int p = static_cast<int>(s.ranks.size());
  // Nothing lies past the longest list, and a grid wider than a screen or two helps nobody.
  std::size_t longest = 0;
  for (const auto& list : s.ranks) longest = std::max(longest, list.size());
  constexpr int max_columns = 64;
  first_step = std::clamp(first_step, 0, static_cast<int>(std::min<std::size_t>(longest, 1U << 30)));
  last_step = std::clamp(last_step, first_step, first_step + max_columns - 1);

  std::vector<bool> shown(static_cast<std::size_t>(p), p <= 8 || marks.empty());
  for (const grid_cell& c : marks) {
    for (int r = c.rank - 1; r <= c.rank + 1; ++r) {
      if (r >= 0 && r < p) shown[static_cast<std::size_t>(r)] = true;
    }
  }
  const auto marked = [&](int r, int step) {
    return std::any_of(marks.begin(), marks.end(),
                       [&](const grid_cell& c) { return c.rank == r && c.step == step; });
  };
  const auto cell = [&](int r, int step) -> std::string {
    const auto& list = s.ranks[static_cast<std::size_t>(r)];
    std::string text = static_cast<std::size_t>(step) < list.size()
                           ? to_string(list[static_cast<std::size_t>(step)])
                           : std::string("-");
    return marked(r, step) ? "[" + text + "]" : " " + text + " ";
  };

  std::size_t width = 4;
  for (int r = 0; r < p; ++r) {
    if (!shown[static_cast<std::size_t>(r)]) continue;
    for (int step = first_step; step <= last_step; ++step) width = std::max(width, cell(r, step).size());
  }
  const std::string rank_label = detail::concat("rank ", p - 1);
  const auto pad = [](std::string text, std::size_t to) {
    text.resize(std::max(text.size(), to), ' ');
    return text;
  };

  std::string out = pad("step", rank_label.size() + 1);
  for (int step = first_step; step <= last_step; ++step) out += pad(detail::concat(" ", step), width + 1);
  const auto end_line = [&out] {
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += '\n';
  };
  end_line();
  bool skipped = false;
  for (int r = 0; r < p; ++r) {
    if (!shown[static_cast<std::size_t>(r)]) {
      if (!skipped) out += "...\n";
      skipped = true;
      continue;
    }
    skipped = false;
    out += pad(detail::concat("rank ", r), rank_label.size() + 1);
    for (int step = first_step; step <= last_step; ++step) out += pad(cell(r, step), width + 1);
    end_line();
  }
  return out;
}

}  // namespace ppipe
