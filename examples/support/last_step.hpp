#pragma once
// What the training demos print about their last step: the measured bubble next to the one the
// simulator predicts from the measured kernel times, its advice, a text timeline, and the Chrome
// trace. Plain C++ (no CLI11), so that nvcc-compiled halves of the tools include it too.

#include <cstdio>
#include <iostream>
#include <string>

#include <ppipe/ppipe.hpp>
#include <ppipe/runtime/chrome_trace.hpp>
#include <ppipe/runtime/trace_timeline.hpp>

namespace examples {

// Reports the last step of `plan` as it ran (`trace`); the timeline when `timeline`, and the
// trace into `trace_file` unless it is empty.
inline void report_last_step(const ppipe::schedule& plan, const ppipe::run_trace& trace, bool timeline,
                             const std::string& trace_file) {
  const ppipe::simulation predicted = ppipe::predict_from_trace(plan, trace);
  std::printf("bubble, last step: measured %.1f%%, predicted %.1f%% (the simulator, from the measured kernel times)\n",
              100.0 * trace.bubble_fraction(), 100.0 * predicted.bubble_fraction());
  for (const std::string& line : ppipe::advise(plan, predicted)) std::cout << "advice: " << line << "\n";
  if (timeline) {
    // Three blocks of 90 columns: enough to see the warm-up, the steady state and the drain.
    ppipe::timeline_options chart;
    chart.width = 100;
    chart.time_per_column = trace.makespan() / 270.0;
    std::cout << "\nlast step as it ran (microseconds):\n" << ppipe::render_timeline(plan, trace, chart);
  }
  if (!trace_file.empty()) {
    ppipe::save_chrome_trace(trace_file, trace);
    std::cout << "\ntrace of the last step: " << trace_file << " (open it at https://ui.perfetto.dev)\n";
  }
}

}  // namespace examples
