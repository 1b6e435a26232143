#pragma once
// Builds schedules from text, one row per rank ("0F0 0SEND_F0 0RECV_B0 0B0"), so that tests can
// write broken schedules the way a person would write them down.
#include <string>
#include <vector>

#include <ppipe/ppipe.hpp>

namespace ppipe_test {

inline ppipe::schedule from_rows(ppipe::placement place, int microbatches,
                                 const std::vector<std::string>& rows,
                                 ppipe::schedule_mode mode = ppipe::schedule_mode::training) {
  ppipe::schedule s{"hand-written", std::move(place), microbatches, mode, {}};
  for (const std::string& row : rows) s.ranks.push_back(ppipe::parse_actions(row));
  return s;
}

// Rank r's compute actions (F, B, I, W) in order, as "F0 B0 ..." without stages.
inline std::string compute_order(const ppipe::schedule& s, int r) {
  std::string out;
  for (const ppipe::action& a : s.ranks[static_cast<std::size_t>(r)]) {
    if (!ppipe::is_compute(a.kind)) continue;
    if (!out.empty()) out += ' ';
    out += ppipe::to_string(a);
  }
  return out;
}

}  // namespace ppipe_test
