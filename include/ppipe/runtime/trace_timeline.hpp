#pragma once
/// @file
/// @brief A real run next to the simulator: a run_trace as a simulation (so that the simulator's
/// text chart draws it), the stage costs it measured, and the step time those costs predict.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/schedule/action.hpp"
#include "ppipe/schedule/in_flight.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/simulate.hpp"
#include "ppipe/schedule/timeline.hpp"

namespace ppipe {

namespace detail {

/// Every compute duration of a trace, by stage and kind (F, B, I, W, R). Checks what the trace
/// feeds to the simulator's structures: finite times and stages in [0, stages).
using measured_durations = std::vector<std::array<std::vector<double>, 5>>;

inline measured_durations collect_durations(const run_trace& t, int stages) {
  measured_durations out(static_cast<std::size_t>(std::max(stages, 0)));
  for (std::size_t r = 0; r < t.ranks.size(); ++r) {
    for (const trace_event& e : t.ranks[r]) {
      if (!std::isfinite(e.start) || !std::isfinite(e.end)) {
        fail(errc::invalid_argument, "rank ", r, "'s event ", to_string(e.act), " (step ", e.step,
             ") has start ", e.start, " and end ", e.end,
             "; a trace needs finite times, so record it with a steady clock");
      }
      if (e.act.stage < 0 || e.act.stage >= stages) {
        fail(errc::invalid_argument, "rank ", r, "'s event ", to_string(e.act), " names stage ", e.act.stage,
             ", outside the ", stages, " stages of the schedule; use the trace of a run of this schedule");
      }
      if (is_compute(e.act.kind)) {
        out[static_cast<std::size_t>(e.act.stage)][static_cast<std::size_t>(e.act.kind)].push_back(e.end - e.start);
      }
    }
  }
  return out;
}

/// The median, the mean of the middle two for an even count; 0 for none. One slow call (a first
/// call that allocates, a page fault) moves a mean but not a median.
inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  if (v.size() % 2 == 1) return *mid;
  return (*std::max_element(v.begin(), mid) + *mid) / 2;
}

/// The number of stages a trace shows: one past the highest stage it names.
inline int trace_stages(const run_trace& t) {
  int stages = 0;
  for (const auto& list : t.ranks) {
    for (const trace_event& e : list) stages = std::max(stages, e.act.stage + 1);
  }
  return stages;
}

inline cost_model medians(const measured_durations& d) {
  cost_model out{{}, 0.0};
  // A trace with no stages keeps one all-zero entry, so that cost_model::of() stays safe to call.
  if (d.empty()) out.stages.push_back({0.0, 0.0, 0.0, 0.0, 0.0});
  for (const auto& kinds : d) {
    // A kind that ran gets at least 1 ns, the clock's resolution, so that a call too quick to
    // measure still counts as run and the simulator accepts its cost.
    const auto cost = [&](action_kind k) {
      const auto& v = kinds[static_cast<std::size_t>(k)];
      return v.empty() ? 0.0 : std::max(median(v), 1e-3);
    };
    out.stages.push_back({cost(action_kind::forward), cost(action_kind::backward), cost(action_kind::backward_input),
                          cost(action_kind::backward_weight), cost(action_kind::recompute)});
  }
  return out;
}

}  // namespace detail

/// @brief The trace as a simulation, with times in microseconds shifted so that the earliest
/// event starts at 0: makespan, busy per rank, the timeline of compute actions, the peak
/// activations held and stashed (counted as the simulator counts them: from F until B, or W of a
/// split backward, a recomputed microbatch stashed from F to R; a trace with no backward is
/// inference), and as costs the measured medians. Its
/// bubble_fraction() equals t.bubble_fraction(). Throws ppipe::error (invalid_argument) if a time
/// is not finite or an event names a negative stage.
/// @param t the measured run; its stage count is one past the highest stage it names
/// @return the simulation, with the buffered transfer model recorded and no transfer cost
inline simulation to_simulation(const run_trace& t) {
  const int stages = detail::trace_stages(t);
  simulation out;
  out.costs = detail::medians(detail::collect_durations(t, stages));
  out.transfers = transfer_model::buffered;
  const std::size_t p = t.ranks.size();
  out.makespan = t.makespan();
  out.busy.resize(p);
  out.timeline.resize(p);

  double origin = 0.0;
  bool any = false;
  bool training = false;
  for (const auto& list : t.ranks) {
    for (const trace_event& e : list) {
      origin = any ? std::min(origin, e.start) : e.start;
      any = true;
      training = training || (is_compute(e.act.kind) && is_backward_pass(e.act.kind));
    }
  }
  int microbatches = 0;
  std::vector<std::vector<action>> ran(p);
  for (std::size_t r = 0; r < p; ++r) {
    out.busy[r] = t.busy(static_cast<int>(r));
    for (const trace_event& e : t.ranks[r]) {
      if (!is_compute(e.act.kind)) continue;
      out.timeline[r].push_back({e.act, e.step, e.start - origin, e.end - origin});
      ran[r].push_back(e.act);
      microbatches = std::max(microbatches, e.act.microbatch + 1);
    }
  }
  held_peaks held =
      activation_peaks(ran, stages, microbatches, training ? schedule_mode::training : schedule_mode::inference);
  out.peak_stage_activations = std::move(held.stage);
  out.peak_rank_activations = std::move(held.rank);
  out.peak_stage_stashed = std::move(held.stashed_stage);
  out.peak_rank_stashed = std::move(held.stashed_rank);
  return out;
}

/// @brief The text chart render_timeline(schedule, simulation) draws, for a real run: one row per
/// rank, time in microseconds. Throws ppipe::error (invalid_argument) if the trace's rank count is
/// not the schedule's, or as to_simulation() does for the trace.
/// @param s the schedule the trace was recorded with
/// @param t the measured run
/// @param options the chart's settings; a `unit` left at its default becomes "microseconds"
/// @return the chart, as text
inline std::string render_timeline(const schedule& s, const run_trace& t, timeline_options options = {}) {
  if (t.num_ranks() != s.num_ranks()) {
    detail::fail(errc::invalid_argument, "the trace has ", t.num_ranks(), " ranks but schedule \"", s.name,
                 "\" has ", s.num_ranks(), "; draw a trace with the schedule it was recorded with");
  }
  if (options.unit == timeline_options{}.unit) options.unit = "microseconds";
  return render_timeline(s, to_simulation(t), options);
}

/// @brief Per stage of `s`, the median measured duration of its F, B, I and W actions in
/// microseconds (a kind that never ran costs 0; one that ran, at least 1 ns); transfer = 0, since
/// the trace's transfer times include waiting. Throws ppipe::error (invalid_argument) if the
/// trace's rank count is not the schedule's, it names a stage the schedule does not have, or a
/// time is not finite.
/// @param s the schedule the trace was recorded with
/// @param t the measured run
/// @return one entry per stage of `s`, in microseconds
inline cost_model measured_costs(const schedule& s, const run_trace& t) {
  if (t.num_ranks() != s.num_ranks()) {
    detail::fail(errc::invalid_argument, "the trace has ", t.num_ranks(), " ranks but schedule \"", s.name,
                 "\" has ", s.num_ranks(), "; measure costs with the schedule the trace was recorded with");
  }
  return detail::medians(detail::collect_durations(t, s.num_stages()));
}

/// @brief What the simulator predicts for `s` under the costs measured in `t`: simulate(s,
/// measured_costs(s, t)) with the timeline recorded. Its bubble_fraction() is the bubble the
/// schedule would have if compute were all that took time; t.bubble_fraction() is what the run
/// had. Throws ppipe::error (invalid_argument) if the trace never ran a compute kind that the
/// schedule runs on some stage, as well as where measured_costs() or simulate() throws.
/// @param s the schedule the trace was recorded with
/// @param t the measured run
/// @param m the transfer model to simulate under (transfers take no time either way)
/// @return the simulation, with its timeline, in microseconds
inline simulation predict_from_trace(const schedule& s, const run_trace& t,
                                     transfer_model m = transfer_model::buffered) {
  const cost_model costs = measured_costs(s, t);
  for (const auto& list : s.ranks) {
    for (const action& a : list) {
      if (is_compute(a.kind) && !(costs.of(a) > 0)) {
        detail::fail(errc::invalid_argument, "the trace has no ", name(a.kind), " of stage ", a.stage,
                     ", which schedule \"", s.name, "\" runs (", to_string(a),
                     "); predict from the trace of a run of this schedule");
      }
    }
  }
  return simulate(s, costs, {true, m});
}

}  // namespace ppipe
