#pragma once
/// @file
/// @brief A run_trace as Chrome Trace Event Format JSON, for ui.perfetto.dev and chrome://tracing.

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <ostream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "ppipe/io/save_file.hpp"
#include "ppipe/io/utf8.hpp"
#include "ppipe/error.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/schedule/action.hpp"

namespace ppipe {

namespace detail {

// The JSON is built in a string with std::to_chars so that the stream's locale (which may group
// thousands or use a decimal comma) can never leak into the numbers.
inline void json_number(std::string& out, double v) {
  std::array<char, 32> buf{};
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  out.append(buf.data(), ec == std::errc() ? end : buf.data());
}
inline void json_number(std::string& out, long long v) {
  std::array<char, 24> buf{};
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  out.append(buf.data(), ec == std::errc() ? end : buf.data());
}

/// Appends `text` as a JSON string. Names come from users, so quotes, backslashes and control
/// characters are escaped, and bytes that are not UTF-8 become U+FFFD: strict readers (Python's
/// json, Perfetto) reject a file with invalid UTF-8 outright.
inline void json_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const std::size_t n = utf8_length(text, i);
      out += n == 0 ? std::string_view("\\ufffd") : text.substr(i, n);
      i += n == 0 ? 1 : n;
      continue;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
    ++i;
  }
  out += '"';
}

/// Puts each event of one stream on the first lane that is free when it starts. Transfers of a
/// rank overlap (a batch posts several at once) without nesting, and a viewer draws only properly
/// nested slices on one track, so overlapping ones get a track of their own.
inline int assign_lanes(const std::vector<trace_event>& events, bool compute, std::vector<int>& lane) {
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (is_compute(events[i].act.kind) == compute) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return events[a].start < events[b].start; });
  std::vector<double> free_at;
  for (const std::size_t i : order) {
    std::size_t k = 0;
    while (k < free_at.size() && free_at[k] > events[i].start) ++k;
    if (k == free_at.size()) free_at.push_back(events[i].start);
    free_at[k] = std::max(free_at[k], events[i].end);
    lane[i] = static_cast<int>(k);
  }
  return static_cast<int>(free_at.size());
}

/// Starts the next element of the traceEvents array.
inline void chrome_next(std::string& out) { out += out.back() == '[' ? "\n{" : ",\n{"; }

inline void chrome_metadata(std::string& out, const char* what, long long pid, long long tid,
                            const char* key, std::string_view text, long long number, bool is_text) {
  chrome_next(out);
  out += "\"ph\":\"M\",\"name\":\"";
  out += what;
  out += "\",\"pid\":";
  json_number(out, pid);
  out += ",\"tid\":";
  json_number(out, tid);
  out += ",\"args\":{\"";
  out += key;
  out += "\":";
  if (is_text) json_string(out, text);
  else json_number(out, number);
  out += "}}";
}

}  // namespace detail

/// @brief Writes `t` as Chrome Trace Event Format JSON (object form) that ui.perfetto.dev and
/// chrome://tracing open. Each rank is a process (pid = rank + 1, named "rank r"); its compute
/// actions are its first thread ("compute") and its transfers the next ("transfers"), with further
/// threads ("transfers 2", ...) only for transfers that overlap. Each action is a complete ("X")
/// event named like "F3" or "SEND_B0" ("2F3" when a rank runs several stages), with ts and dur in
/// microseconds and args {stage, microbatch, step}. A negative duration is written as 0. Throws
/// ppipe::error (invalid_argument) before writing anything if a time is not finite.
/// @param os the stream to write to; the JSON is built in memory and written in one call, and a
/// failure of the stream is left in its state, not thrown
/// @param t the measured run
inline void write_chrome_trace(std::ostream& os, const run_trace& t) {
  bool several_stages = false;
  for (std::size_t r = 0; r < t.ranks.size(); ++r) {
    for (const trace_event& e : t.ranks[r]) {
      if (!std::isfinite(e.start) || !std::isfinite(e.end)) {
        detail::fail(errc::invalid_argument, "rank ", r, "'s event ", to_string(e.act), " (step ", e.step,
                     ") has start ", e.start, " and end ", e.end,
                     "; a trace needs finite times, so record it with a steady clock");
      }
      several_stages = several_stages || e.act.stage != t.ranks[r].front().act.stage;
    }
  }
  std::string out = "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"schedule\":";
  detail::json_string(out, t.schedule_name);
  out += ",\"microbatches\":";
  detail::json_number(out, static_cast<long long>(t.microbatches));
  out += ",\"ranks\":";
  detail::json_number(out, static_cast<long long>(t.num_ranks()));
  out += ",\"makespan_us\":";
  detail::json_number(out, t.makespan());
  out += ",\"measured_bubble\":";
  const double bubble = t.bubble_fraction();
  detail::json_number(out, std::isfinite(bubble) ? bubble : 0.0);
  out += "},\n\"traceEvents\":[";

  std::vector<int> lane;
  for (std::size_t r = 0; r < t.ranks.size(); ++r) {
    // Viewers take pid and tid as the machine's own ids: pid 0 is the kernel's idle task there, and
    // a tid belongs to one process. So rank r is process r+1, and its tracks are threads
    // 1000(r+1) + k, each number used once in the file.
    const auto pid = static_cast<long long>(r) + 1;
    const auto tid_of = [&](long long k) { return pid * 1000 + std::min(k, 999LL); };
    const std::vector<trace_event>& events = t.ranks[r];
    detail::chrome_metadata(out, "process_name", pid, tid_of(0), "name", detail::concat("rank ", r), 0, true);
    detail::chrome_metadata(out, "process_sort_index", pid, tid_of(0), "sort_index", {}, static_cast<long long>(r), false);
    lane.assign(events.size(), 0);
    detail::assign_lanes(events, true, lane);
    const int transfer_lanes = std::max(detail::assign_lanes(events, false, lane), 1);
    for (long long k = 0; k <= std::min(transfer_lanes, 999); ++k) {
      const std::string label = k == 0 ? "compute" : k == 1 ? "transfers" : detail::concat("transfers ", k);
      detail::chrome_metadata(out, "thread_name", pid, tid_of(k), "name", label, 0, true);
      detail::chrome_metadata(out, "thread_sort_index", pid, tid_of(k), "sort_index", {}, k, false);
    }
    for (std::size_t i = 0; i < events.size(); ++i) {
      const trace_event& e = events[i];
      const bool compute = is_compute(e.act.kind);
      const std::string label = several_stages ? to_string(e.act)
                                               : std::string(code(e.act.kind)) + std::to_string(e.act.microbatch);
      detail::chrome_next(out);
      out += "\"ph\":\"X\",\"name\":";
      detail::json_string(out, label);
      out += compute ? ",\"cat\":\"compute\",\"pid\":" : ",\"cat\":\"transfer\",\"pid\":";
      detail::json_number(out, pid);
      out += ",\"tid\":";
      // A compute action that overlaps another means the trace is odd, not that it needs a track;
      // it stays on thread 0 where the viewer nests or flags it.
      detail::json_number(out, tid_of(compute ? 0 : 1 + lane[i]));
      out += ",\"ts\":";
      detail::json_number(out, e.start);
      out += ",\"dur\":";
      detail::json_number(out, std::max(e.end - e.start, 0.0));
      out += ",\"args\":{\"stage\":";
      detail::json_number(out, static_cast<long long>(e.act.stage));
      out += ",\"microbatch\":";
      detail::json_number(out, static_cast<long long>(e.act.microbatch));
      out += ",\"step\":";
      detail::json_number(out, static_cast<long long>(e.step));
      out += "}}";
    }
  }
  out += "\n]}\n";
  os.write(out.data(), static_cast<std::streamsize>(out.size()));
}

/// @brief Writes `t` to the file `path` as Chrome trace JSON (see write_chrome_trace()). Throws
/// ppipe::error (invalid_argument) naming the path and the reason if the file cannot be written.
/// @param path the file to create, or to truncate if it exists
/// @param t the measured run; a time that is not finite throws as in write_chrome_trace()
inline void save_chrome_trace(const std::string& path, const run_trace& t) {
  detail::save_file(path, "the Chrome trace file", [&](std::ostream& os) { write_chrome_trace(os, t); });
}

}  // namespace ppipe
