// The helpers the schedule_*.cpp programs share to check the numbers of docs/schedules/*.md: a
// counting expect(), a few ways to print a schedule, and finish() to run the checks from main().
#pragma once

#include <climits>
#include <cstddef>
#include <exception>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>

#include <ppipe/schedule.hpp>

namespace schedule_check {

inline int failures = 0;
inline const char* current_program = "schedule_check";

// Counts a failed check and says which, as "<program>: <what>" on stderr.
inline void expect(bool ok, const char* what) {
  if (!ok) {
    std::cerr << current_program << ": " << what << '\n';
    ++failures;
  }
}

inline int transfer_actions(const ppipe::schedule& s) {
  int n = 0;
  for (const auto& list : s.ranks) {
    for (const ppipe::action& a : list) n += ppipe::is_transfer(a.kind) ? 1 : 0;
  }
  return n;
}

// Rank r's compute actions in order, e.g. "0F0 0F1 0B0"; past the first `most`, just " ...".
inline std::string compute_order(const ppipe::schedule& s, int r, int most = INT_MAX) {
  std::string out;
  int n = 0;
  for (const ppipe::action& a : s.ranks[static_cast<std::size_t>(r)]) {
    if (ppipe::is_compute(a.kind) && n++ < most) {
      out += (out.empty() ? "" : " ") + ppipe::to_string(a);
    }
  }
  return n > most ? out + " ..." : out;
}

inline std::string percent(double share) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << share * 100 << '%';
  return os.str();
}

// What main() returns: runs the checks, 1 if any failed or run() threw (said on stderr), else 0.
template <class Run>
int finish(const char* program, Run&& run) {
  current_program = program;
  try {
    run();
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << '\n';
    return 1;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace schedule_check
