#pragma once
/// @file
/// @brief Schedule files in the CSV form of PyTorch's torch.distributed.pipelining (`_dump_csv`,
/// `_load_csv`): one row per rank, one cell per step, each action written "2F5" or "1SEND_B0",
/// an empty cell for an idle step.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/action.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/placement.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/simulate.hpp"
#include "ppipe/schedule/validate.hpp"

namespace ppipe {

/// @brief How to_csv() writes a schedule.
struct csv_options {
  /// false (PyTorch's "compute_only" form, its `pipeline_order`): only F, B, I and W, each in
  /// the column of the time step it would run in if every compute action took one step and
  /// transfers took none, so a rank's idle steps are empty cells. PyTorch's PipelineScheduleMulti
  /// runs such a file column by column, so a consumer must sit in a later column than its producer
  /// on another rank, and this layout guarantees that.
  /// true (PyTorch's "compute_comms" form, its `pipeline_order_with_comms`): every action, sends and
  /// receives included, each rank's list in order with no empty cells.
  bool transfers = false;
};

/// @brief How from_csv() reads a schedule file.
struct csv_read_options {
  std::string name = "csv";  ///< the loaded schedule's name
  /// The transfer model the loaded schedule is validated under (see transfer_model).
  transfer_model model = transfer_model::rendezvous;
  int max_ranks = 4096;         ///< most rows a file may have
  int max_columns = 1 << 20;    ///< most cells a row may have
};

namespace detail {

/// The key of a (stage, microbatch) pair in the layout's tables.
inline std::uint64_t csv_key(int stage, int microbatch) noexcept {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(stage)) << 32) |
         static_cast<std::uint32_t>(microbatch);
}

/// The time step of every action of `compute` (steps[r][i] for the i-th compute action of rank
/// r) when each takes one step and transfers take none: an action runs one step after the last of
/// the compute actions whose data it needs (F(s-1) for F(s); F(s) and B or I of s+1 for B and I;
/// I for W; F for R), and after the rank's previous action; a paired forward and its backward take
/// consecutive steps, once the data of both is there. A producer the schedule lacks is not waited for,
/// and an order that waits in a circle is broken at the first waiting rank, so any schedule gets a
/// layout that keeps each rank's order (loading such a file then fails validation, as it should).
inline std::vector<std::vector<int>> csv_time_steps(const std::vector<std::vector<action>>& compute) {
  constexpr int not_yet = -1;
  std::array<std::unordered_map<std::uint64_t, int>, 5> step_of;  // per compute kind
  std::size_t left = 0;
  for (const auto& list : compute) {
    left += list.size();
    for (const action& a : list) step_of[static_cast<std::size_t>(a.kind)].emplace(csv_key(a.stage, a.microbatch), not_yet);
  }
  // Whether every producer of `a` in the schedule has a step; `after` gets the latest of them.
  const auto ready = [&](const action& a, int& after) {
    after = -1;
    const auto need = [&](long long stage, int mb, action_kind kind) {
      if (stage < 0 || stage > std::numeric_limits<std::int32_t>::max()) return true;
      const auto& table = step_of[static_cast<std::size_t>(kind)];
      const auto it = table.find(csv_key(static_cast<int>(stage), mb));
      if (it == table.end()) return true;
      after = std::max(after, it->second);
      return it->second != not_yet;
    };
    const long long st = a.stage;
    switch (a.kind) {
      case action_kind::forward: return need(st - 1, a.microbatch, action_kind::forward);
      case action_kind::backward_weight: return need(st, a.microbatch, action_kind::backward_input);
      case action_kind::recompute: return need(st, a.microbatch, action_kind::forward);
      default: {
        // Evaluate all three, so that `after` covers every producer that has a step.
        const bool forward = need(st, a.microbatch, action_kind::forward);
        const bool full = need(st + 1, a.microbatch, action_kind::backward);
        const bool input = need(st + 1, a.microbatch, action_kind::backward_input);
        return forward && full && input;
      }
    }
  };
  std::vector<std::vector<int>> steps(compute.size());
  std::vector<std::size_t> next(compute.size(), 0);
  std::vector<int> free_at(compute.size(), 0);
  const auto place = [&](std::size_t r, int after) {
    const action& a = compute[r][next[r]];
    const int t = std::max(free_at[r], after + 1);
    steps[r].push_back(t);
    free_at[r] = t + 1;
    int& slot = step_of[static_cast<std::size_t>(a.kind)][csv_key(a.stage, a.microbatch)];
    if (slot == not_yet) slot = t;
    ++next[r];
    --left;
  };
  // A pair (F+ and the B after it) takes two steps in a row, once the data of both is there.
  const auto pair_ready = [&](std::size_t r, int& after) {
    const auto& list = compute[r];
    const action& a = list[next[r]];
    if (!ready(a, after)) return false;
    if (!a.paired || next[r] + 1 >= list.size()) return true;
    const action& b = list[next[r] + 1];
    if (b.stage == a.stage && b.microbatch == a.microbatch) return true;  // needs only its own F
    int b_after = -1;
    const bool ok = ready(b, b_after);
    after = std::max(after, b_after);
    return ok;
  };
  const auto place_unit = [&](std::size_t r, int after) {
    const bool pair = compute[r][next[r]].paired && next[r] + 1 < compute[r].size();
    place(r, after);
    if (pair) place(r, -1);
  };
  while (left > 0) {
    bool moved = false;
    for (std::size_t r = 0; r < compute.size(); ++r) {
      int after = -1;
      while (next[r] < compute[r].size() && pair_ready(r, after)) {
        place_unit(r, after);
        moved = true;
      }
    }
    if (moved) continue;
    for (std::size_t r = 0; r < compute.size(); ++r) {
      if (next[r] < compute[r].size()) {
        int after = -1;
        (void)pair_ready(r, after);
        place_unit(r, after);
        break;
      }
    }
  }
  return steps;
}

/// Where a cell is, for messages: "line 3, cell 2 (column 5)", all counted from 1.
inline std::string csv_where(std::size_t line, std::size_t cell, std::size_t column) {
  return concat("line ", line, ", cell ", cell, " (column ", column, ")");
}

/// A parsed action and where it was.
struct csv_entry {
  action act;
  std::size_t line = 0, cell = 0, column = 0;
};

/// Lowers a compute-only schedule in units of one compute action, except that a forward directly
/// followed by a backward (B or I), with only R's between them, is one unit: the grouping interleaved_1f1b uses for its steady
/// (forward, backward) pairs, Megatron's send_forward_recv_backward.
inline schedule csv_lower_in_pairs(schedule compute_only) {
  std::vector<std::vector<int>> units;
  for (const auto& list : compute_only.ranks) units.push_back(compute_units(list, 2));
  return lower_in_units(std::move(compute_only), [&](int r) { return units[static_cast<std::size_t>(r)]; });
}

/// Reads the rows of a file into actions; rows[r] is rank r's row.
inline std::vector<std::vector<csv_entry>> csv_rows(std::string_view text, const csv_read_options& options) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // a UTF-8 byte-order mark
  const auto blank = [](char c) { return c == ' ' || c == '\t'; };
  std::vector<std::vector<csv_entry>> rows;
  std::size_t empty_line = 0;  // the first empty line not yet followed by a row, or 0
  std::size_t line_no = 0;
  for (std::size_t start = 0; start < text.size();) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (std::all_of(line.begin(), line.end(), blank)) {
      if (empty_line == 0) empty_line = line_no;
      continue;
    }
    if (empty_line != 0) {
      fail(errc::parse_error, "line ", empty_line, " is empty, but line ", line_no,
           " has actions: every line is one rank, and every rank needs actions; remove the empty line");
    }
    if (rows.size() >= static_cast<std::size_t>(std::max(options.max_ranks, 0))) {
      fail(errc::parse_error, "line ", line_no, ": the file has more than ", options.max_ranks,
           " rows (one per rank); write one row per rank, or raise csv_read_options::max_ranks");
    }
    auto& row = rows.emplace_back();
    std::size_t cell = 0;
    for (std::size_t from = 0; from <= line.size(); ++cell) {
      std::size_t stop = line.find(',', from);
      if (stop == std::string_view::npos) stop = line.size();
      std::size_t b = from;
      std::size_t e = stop;
      from = stop + 1;
      if (cell >= static_cast<std::size_t>(std::max(options.max_columns, 0))) {
        fail(errc::parse_error, csv_where(line_no, cell + 1, b + 1), ": the row has more than ",
             options.max_columns, " cells (one per step); raise csv_read_options::max_columns if the schedule "
             "really is that long");
      }
      while (b < e && blank(line[b])) ++b;
      while (e > b && blank(line[e - 1])) --e;
      if (e - b >= 2 && line[b] == '"' && line[e - 1] == '"') {  // a quoted cell
        ++b;
        --e;
      }
      if (b == e) continue;                                              // an idle step
      const std::string_view cell_text = line.substr(b, e - b);
      const std::size_t col = b + 1;
      constexpr std::size_t longest = 48;  // "2147483647RECV_B2147483647" is 26
      if (cell_text.size() > longest) {
        fail(errc::parse_error, csv_where(line_no, cell + 1, col), ": the cell \"", cell_text.substr(0, 24),
             "...\" is ", cell_text.size(), " characters, longer than any action; write one action per cell, "
             "such as 2F5 or 1SEND_B0, separated by commas");
      }
      for (const std::string_view torch_only : {"UNSHARD", "RESHARD", "REDUCE_GRAD", "OVERLAP_F_B", "("}) {
        if (cell_text.find(torch_only) != std::string_view::npos) {
          fail(errc::parse_error, csv_where(line_no, cell + 1, col), ": \"", cell_text,
               "\" is a PyTorch action (UNSHARD, RESHARD, REDUCE_GRAD or an overlapped pair) that ppipe schedules "
               "do not carry; remove it and keep the F, B, I, W, R, SEND_F, RECV_F, SEND_B and RECV_B actions");
        }
      }
      try {
        row.push_back({parse_action_in(line, b, e), line_no, cell + 1, col});
      } catch (const error& err) {
        fail(errc::parse_error, "line ", line_no, ", cell ", cell + 1, ": ", err.message());
      }
    }
    if (row.empty()) {
      fail(errc::parse_error, "line ", line_no, " (rank ", rows.size() - 1,
           ") has only empty cells: every rank needs actions; give it its stages' actions or remove the row");
    }
  }
  if (rows.empty()) {
    fail(errc::parse_error, "the file has no rows; write one row per rank, each a comma-separated list of "
         "actions such as 0F0,0F1,,0B0");
  }
  return rows;
}

/// The column of every action of the rows, renumbered 0, 1, 2, ... over the columns in use (a
/// lowering by time steps depends only on their order, and costs ranks x columns).
inline std::vector<std::vector<long>> csv_columns(const std::vector<std::vector<csv_entry>>& rows) {
  std::vector<std::size_t> used;
  for (const auto& row : rows) {
    for (const csv_entry& e : row) used.push_back(e.cell);
  }
  std::sort(used.begin(), used.end());
  used.erase(std::unique(used.begin(), used.end()), used.end());
  std::vector<std::vector<long>> columns(rows.size());
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (const csv_entry& e : rows[r]) {
      columns[r].push_back(static_cast<long>(std::lower_bound(used.begin(), used.end(), e.cell) - used.begin()));
    }
  }
  return columns;
}

/// The placement the rows imply: each stage on the rank whose row holds it.
inline placement csv_placement(const std::vector<std::vector<csv_entry>>& rows, std::size_t actions) {
  csv_entry top = rows.front().front();  // the action with the largest stage
  for (const auto& row : rows) {
    for (const csv_entry& e : row) {
      if (e.act.stage > top.act.stage) top = e;
    }
  }
  // Every stage needs an action, so a stage number at or past the action count leaves a gap.
  constexpr long long max_stages = 1 << 20;
  const long long stages = static_cast<long long>(top.act.stage) + 1;
  if (stages > static_cast<long long>(actions) || stages > max_stages) {
    fail(errc::parse_error, csv_where(top.line, top.cell, top.column), ": stage ", top.act.stage,
         " implies ", stages, " stages, but the file has ", actions, " actions",
         stages > max_stages ? concat(" and ppipe supports at most ", max_stages, " stages") : std::string(),
         "; number the stages 0, 1, 2, ... with no gaps");
  }
  std::vector<int> rank_of(static_cast<std::size_t>(stages), -1);
  std::vector<const csv_entry*> first(rank_of.size(), nullptr);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (const csv_entry& e : rows[r]) {
      const auto s = static_cast<std::size_t>(e.act.stage);
      if (rank_of[s] < 0) {
        rank_of[s] = static_cast<int>(r);
        first[s] = &e;
      } else if (rank_of[s] != static_cast<int>(r)) {
        fail(errc::parse_error, csv_where(e.line, e.cell, e.column), ": ", to_string(e.act), " puts stage ",
             e.act.stage, " on rank ", r, ", but ", csv_where(first[s]->line, first[s]->cell, first[s]->column),
             " (", to_string(first[s]->act), ") put it on rank ", rank_of[s],
             "; a stage lives on one rank: move its actions to one row");
      }
    }
  }
  for (std::size_t s = 0; s < rank_of.size(); ++s) {
    if (rank_of[s] < 0) {
      fail(errc::parse_error, "stage ", s, " appears in no cell, but ", csv_where(top.line, top.cell, top.column),
           " names stage ", top.act.stage, "; number the stages 0..", top.act.stage, " with no gaps");
    }
  }
  const int p = static_cast<int>(rows.size());
  bool looped = rank_of.size() % rows.size() == 0;
  for (std::size_t s = 0; looped && s < rank_of.size(); ++s) looped = rank_of[s] == static_cast<int>(s % rows.size());
  return looped ? placement::looped(p, static_cast<int>(rank_of.size() / rows.size()))
                : placement::custom(std::move(rank_of), p);
}

}  // namespace detail

/// @brief The schedule as CSV text, one line per rank ("\n"-terminated), cells separated by commas.
/// See csv_options for the two forms. Any schedule can be written; from_csv() validates on reading.
/// @param s the schedule to write; its name, mode and placement are not written (from_csv() infers them)
/// @param options which of the two forms to write
/// @return the file's text
inline std::string to_csv(const schedule& s, const csv_options& options = {}) {
  std::string out;
  if (options.transfers) {
    for (const auto& list : s.ranks) {
      for (std::size_t i = 0; i < list.size(); ++i) {
        if (i != 0) out += ',';
        out += to_string(list[i]);
      }
      out += '\n';
    }
    return out;
  }
  std::vector<std::vector<action>> compute(s.ranks.size());
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    for (const action& a : s.ranks[r]) {
      if (is_compute(a.kind)) compute[r].push_back(a);
    }
  }
  const auto steps = detail::csv_time_steps(compute);
  for (std::size_t r = 0; r < compute.size(); ++r) {
    int column = 0;
    for (std::size_t i = 0; i < compute[r].size(); ++i) {
      for (; column < steps[r][i]; ++column) out += ',';
      out += to_string(compute[r][i]);
    }
    out += '\n';
  }
  return out;
}

/// @brief Writes to_csv(s, options) to `path`. Throws ppipe::error (invalid_argument) if the file
/// cannot be written.
/// @param path the file to create, or to overwrite if it exists
/// @param s the schedule to write
/// @param options which of the two forms to write
inline void save_csv(const std::string& path, const schedule& s, const csv_options& options = {}) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  const std::string text = to_csv(s, options);
  if (file) file.write(text.data(), static_cast<std::streamsize>(text.size()));
  if (!file || !file.flush()) {
    detail::fail(errc::invalid_argument, "cannot write schedule file \"", path,
                 "\"; check that its directory exists and is writable");
  }
}

/// @brief Reads a schedule from CSV text: row r is rank r's actions in order, empty cells are
/// idle steps. Infers the placement (each stage on the rank whose row holds it; looped when stage s
/// is on rank s % p, custom otherwise), m (largest microbatch + 1) and the mode (training if any
/// B, I, W, SEND_B or RECV_B appears, else inference). A file with sends and receives is taken as
/// written. A compute-only file gets its transfers from the first of these lowerings that is valid
/// under options.model: add_communication(); the same with a forward directly followed by a
/// backward as one unit (the grouping of interleaved_1f1b, Megatron's); and the file's own columns
/// as time steps, as PyTorch's PipelineScheduleMulti runs them (after each step, every rank sends
/// what it made and receives what its neighbours made; the lowering of the zero-bubble schedules).
/// The result is validated under options.model.
/// Throws ppipe::error: parse_error naming the line, the cell and the column (all from 1) for text
/// it cannot read; the validator's invalid_schedule or deadlock (for a compute-only file, the
/// report on the add_communication() lowering) for a schedule that does not run.
/// @param text the file's contents (a UTF-8 byte-order mark at its start is skipped)
/// @param options the name to give the schedule, the transfer model to validate under, and size limits
/// @return a valid schedule with its transfers in place
inline schedule from_csv(std::string_view text, const csv_read_options& options = {}) {
  const auto rows = detail::csv_rows(text, options);
  std::size_t actions = 0;
  detail::csv_entry top_mb = rows.front().front();  // the action with the largest microbatch
  bool training = false;
  bool transfers = false;
  for (const auto& row : rows) {
    actions += row.size();
    for (const detail::csv_entry& e : row) {
      if (e.act.microbatch > top_mb.act.microbatch) top_mb = e;
      training = training || is_backward_pass(e.act.kind);
      transfers = transfers || is_transfer(e.act.kind);
    }
  }
  placement place = detail::csv_placement(rows, actions);
  // Every (stage, microbatch) pair needs a forward: more pairs than actions cannot be complete, and
  // the bound keeps the validator's per-pair tables as small as the file.
  const long long m = static_cast<long long>(top_mb.act.microbatch) + 1;
  if (m * place.num_stages() > static_cast<long long>(actions)) {
    detail::fail(errc::parse_error, detail::csv_where(top_mb.line, top_mb.cell, top_mb.column), ": microbatch ",
                 top_mb.act.microbatch, " implies m=", m, ", and ", place.num_stages(), " stages x ", m,
                 " microbatches need a forward each, but the file has only ", actions,
                 " actions; number the microbatches 0, 1, 2, ... with no gaps");
  }
  schedule s{options.name, std::move(place), static_cast<int>(m),
             training ? schedule_mode::training : schedule_mode::inference, {}};
  s.ranks.resize(rows.size());
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (const detail::csv_entry& e : rows[r]) s.ranks[r].push_back(e.act);
  }
  if (transfers) {
    validate(s, options.model);
    return s;
  }
  // Of the lowerings that validate, the one whose step is shortest with the usual costs (a
  // backward twice a forward; the earlier on a tie): a zero-bubble order keeps its speed, which
  // the 1F1B lowering would cost it. With unit costs, a 1F1B order with R would lose its pairs.
  std::vector<schedule> candidates;
  candidates.push_back(add_communication(s));
  const validation_report report = check_schedule(candidates.front(), options.model);
  candidates.push_back(detail::csv_lower_in_pairs(s));
  candidates.push_back(detail::lower_by_time(s, detail::csv_columns(rows)));
  const cost_model usual = cost_model::uniform(1.0, 2.0);
  simulate_options timing;
  timing.record_timeline = false;
  timing.transfers = options.model;
  std::optional<std::size_t> best;
  double best_time = 0.0;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (!check_schedule(candidates[i], options.model).ok()) continue;
    const double t = simulate(candidates[i], usual, timing).makespan;
    if (!best || t < best_time) {
      best = i;
      best_time = t;
    }
  }
  if (best) return std::move(candidates[*best]);
  detail::throw_report(report);
}

/// @brief The largest schedule file load_csv() reads: far more than any schedule a machine could run
/// (a rank's action list of millions of cells), and a bound on what a wrong path (a device, a
/// pipe, a huge file) makes it read.
inline constexpr std::size_t max_csv_bytes = std::size_t{64} << 20;

/// @brief Reads the schedule file at `path` with from_csv(); errors start with the path. A file of
/// more than max_csv_bytes is refused.
/// Throws ppipe::error (invalid_argument) if the file cannot be opened or is too large, and what
/// from_csv() throws, with the path put in front of the message, if its contents do not load.
/// @param path the schedule file to read
/// @param options as for from_csv()
/// @return the loaded schedule, validated under `options.model`
inline schedule load_csv(const std::string& path, const csv_read_options& options = {}) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    detail::fail(errc::invalid_argument, "cannot open schedule file \"", path, "\"; check the path");
  }
  std::string text;
  std::string chunk(std::size_t{1} << 16, '\0');
  while (file.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || file.gcount() > 0) {
    text.append(chunk.data(), static_cast<std::size_t>(file.gcount()));
    if (text.size() > max_csv_bytes) {
      detail::fail(errc::invalid_argument, "schedule file \"", path, "\" has more than ", max_csv_bytes >> 20,
                   " MiB; is it a schedule? A schedule file has one line of cells per rank");
    }
  }
  try {
    return from_csv(text, options);
  } catch (const error& e) {
    throw error(e.code(), detail::concat(path, ": ", e.message()));
  }
}

}  // namespace ppipe
