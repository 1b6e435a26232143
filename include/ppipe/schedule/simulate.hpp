#pragma once
/// @file
/// @brief Times a schedule under a cost model: makespan, per-rank busy and idle time, the bubble,
/// and the peak number of microbatches whose activations each stage holds.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

#include "ppipe/detail/replay.hpp"
#include "ppipe/error.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/validate.hpp"

namespace ppipe {

/// @brief How long one stage's actions take, in any unit of time (the simulator's results use
/// the same unit).
struct stage_costs {
  double forward = 1.0;          ///< F
  double backward = 2.0;         ///< B (full backward)
  double backward_input = 1.0;   ///< I (input-gradient half of a split backward)
  double backward_weight = 1.0;  ///< W (weight-gradient half)
};

/// @brief The costs the simulator charges: per stage compute, and one transfer latency per message.
struct cost_model {
  /// One entry per stage, or a single entry that every stage shares.
  std::vector<stage_costs> stages{stage_costs{}};
  /// Time from posting a send to the data being ready at the receiver. Sends do not occupy the
  /// sending rank: transfers overlap with compute.
  double transfer = 0.0;

  /// @brief Every stage costs `forward` and `backward`; a split backward's halves cost
  /// backward/2 each.
  static cost_model uniform(double forward, double backward, double transfer = 0.0) {
    return cost_model{{stage_costs{forward, backward, backward / 2, backward / 2}}, transfer};
  }

  /// @brief The cost of a compute action.
  [[nodiscard]] double of(const action& a) const noexcept {
    const stage_costs& c = stages.size() == 1 ? stages.front() : stages[static_cast<std::size_t>(a.stage)];
    switch (a.kind) {
      case action_kind::forward: return c.forward;
      case action_kind::backward: return c.backward;
      case action_kind::backward_input: return c.backward_input;
      case action_kind::backward_weight: return c.backward_weight;
      default: return 0.0;
    }
  }
};

/// @brief A compute action with the time it ran.
struct timed_action {
  action act;
  int step = 0;  ///< position in the rank's action list
  double start = 0.0;
  double end = 0.0;
};

/// @brief What simulate() records beyond the summary figures.
struct simulate_options {
  bool record_timeline = true;  ///< keep every compute action's start and end (needed to draw it)
};

/// @brief The simulator's result.
struct simulation {
  double makespan = 0.0;                        ///< time until the last rank finishes
  std::vector<double> busy;                     ///< per rank: time spent computing
  std::vector<int> peak_stage_activations;      ///< per stage: most microbatches held at once
  std::vector<int> peak_rank_activations;       ///< per rank: the same, summed over its stages
  std::vector<std::vector<timed_action>> timeline;  ///< per rank, when recorded

  /// @brief Time rank `r` spends idle within the makespan.
  [[nodiscard]] double idle(int r) const { return makespan - busy.at(static_cast<std::size_t>(r)); }
  [[nodiscard]] double total_busy() const { return std::accumulate(busy.begin(), busy.end(), 0.0); }
  [[nodiscard]] double total_idle() const {
    return makespan * static_cast<double>(busy.size()) - total_busy();
  }
  /// @brief Idle share of the step over all ranks: idle / (p * makespan). (p-1)/(m+p-1) for GPipe
  /// and 1F1B with equal stage costs.
  [[nodiscard]] double bubble_fraction() const {
    return makespan > 0 ? total_idle() / (makespan * static_cast<double>(busy.size())) : 0.0;
  }
  /// @brief Idle time relative to compute time: idle / busy. (p-1)/m for GPipe and 1F1B and
  /// (p-1)/(v*m) for interleaved 1F1B with equal stage costs.
  [[nodiscard]] double bubble_overhead() const {
    const double b = total_busy();
    return b > 0 ? total_idle() / b : 0.0;
  }
  /// @brief How much faster than one device running every stage in turn: total busy / makespan.
  /// Below 1, the pipeline is slower than not pipelining.
  [[nodiscard]] double speedup() const { return makespan > 0 ? total_busy() / makespan : 0.0; }
};

namespace detail {

inline void check_costs(const cost_model& costs, int stages) {
  const auto bad_time = [](double t) { return !std::isfinite(t) || t < 0; };
  if (costs.stages.size() != 1 && costs.stages.size() != static_cast<std::size_t>(stages)) {
    fail(errc::invalid_argument, "the cost model has ", costs.stages.size(),
         " stage entries for a schedule of ", stages,
         " stages; give one entry per stage or a single entry for all");
  }
  if (bad_time(costs.transfer)) {
    fail(errc::invalid_argument, "transfer cost ", costs.transfer,
         " is not a time; give a finite value >= 0");
  }
  for (std::size_t s = 0; s < costs.stages.size(); ++s) {
    const stage_costs& c = costs.stages[s];
    const double values[] = {c.forward, c.backward, c.backward_input, c.backward_weight};
    const char* names[] = {"forward", "backward", "backward_input", "backward_weight"};
    for (int k = 0; k < 4; ++k) {
      if (!std::isfinite(values[k]) || values[k] <= 0) {
        fail(errc::invalid_argument, "stage ", s, " has ", names[k], " cost ", values[k],
             "; every compute cost must be a finite time > 0");
      }
    }
  }
}

/// Replay hooks that keep each rank's clock.
struct timing_hooks {
  const cost_model& costs;
  bool training;
  bool record;
  std::vector<double> clock, busy, arrival;
  std::vector<int> held_stage, held_rank;
  simulation& out;

  void on_compute(int rank, int step, const action& a) {
    const auto r = static_cast<std::size_t>(rank);
    const auto s = static_cast<std::size_t>(a.stage);
    const double start = clock[r];
    const double cost = costs.of(a);
    clock[r] = start + cost;
    busy[r] += cost;
    if (record) out.timeline[r].push_back({a, step, start, clock[r]});
    // A microbatch's activations are held from its forward until the backward that last needs
    // them (B, or W of a split backward); inference frees them as soon as the forward is done.
    if (a.kind == action_kind::forward) {
      out.peak_stage_activations[s] = std::max(out.peak_stage_activations[s], ++held_stage[s]);
      out.peak_rank_activations[r] = std::max(out.peak_rank_activations[r], ++held_rank[r]);
      if (!training) {
        --held_stage[s];
        --held_rank[r];
      }
    } else if (a.kind == action_kind::backward || a.kind == action_kind::backward_weight) {
      --held_stage[s];
      --held_rank[r];
    }
  }
  void on_send(int rank, std::size_t key) {
    arrival[key] = clock[static_cast<std::size_t>(rank)] + costs.transfer;
  }
  void on_recv(int rank, std::size_t key) {
    double& c = clock[static_cast<std::size_t>(rank)];
    c = std::max(c, arrival[key]);
  }
};

}  // namespace detail

/// @brief Simulates `s` under `costs`. Each rank runs its actions in order; a compute action takes
/// its cost, a send takes no time on its rank and arrives `costs.transfer` later, a receive waits
/// for its data. Validates the schedule first and throws ppipe::error if it is not valid.
inline simulation simulate(const schedule& s, const cost_model& costs, simulate_options options = {}) {
  if (auto problem = detail::structure_checker(s).run()) {
    detail::throw_report(detail::report(s, std::move(*problem)));
  }
  detail::check_costs(costs, s.num_stages());
  const auto p = static_cast<std::size_t>(s.num_ranks());
  const auto stages = static_cast<std::size_t>(s.num_stages());
  simulation out;
  out.peak_stage_activations.assign(stages, 0);
  out.peak_rank_activations.assign(p, 0);
  if (options.record_timeline) {
    out.timeline.resize(p);
    for (std::size_t r = 0; r < p; ++r) {
      out.timeline[r].reserve(static_cast<std::size_t>(std::count_if(
          s.ranks[r].begin(), s.ranks[r].end(), [](const action& a) { return is_compute(a.kind); })));
    }
  }
  detail::timing_hooks hooks{costs,
                             s.mode == schedule_mode::training,
                             options.record_timeline,
                             std::vector<double>(p, 0.0),
                             std::vector<double>(p, 0.0),
                             std::vector<double>(2 * stages * static_cast<std::size_t>(s.microbatches), 0.0),
                             std::vector<int>(stages, 0),
                             std::vector<int>(p, 0),
                             out};
  const detail::replay_result run = detail::replay(s, s.place.rank_table(), hooks);
  if (!run.finished) detail::throw_report(detail::report(s, detail::deadlock_problem(s, run)));
  out.makespan = *std::max_element(hooks.clock.begin(), hooks.clock.end());
  out.busy = std::move(hooks.busy);
  return out;
}

}  // namespace ppipe
