#pragma once
/// @file
/// @brief Predicts what a partition will do under a schedule: the step time, the bubble, and each
/// rank's peak memory, by simulating the schedule with the partition's stage costs.

#include <algorithm>
#include <cstddef>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/partition/partition.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/partition/report.hpp"
#include "ppipe/schedule/recompute.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/simulate.hpp"

namespace ppipe {

/// @brief How predict() simulates.
struct prediction_options {
  double transfer = 0.0;  ///< time for one activation or gradient message, in the costs' unit
  /// When a transfer lets its rank go on: rendezvous (NCCL) or buffered (host mailboxes, MPI);
  /// match the backend the plan will run on.
  transfer_model transfers = transfer_model::rendezvous;
  bool record_timeline = false;  ///< keep the timeline (to draw it with render_timeline)
};

/// @brief A partition's figures under a schedule.
struct plan_prediction {
  partition_report report;  ///< the static figures (per-stage cost, time, memory; the bottleneck)
  simulation sim;           ///< the simulated step
  /// Per rank: parameters plus the most activation memory it holds at once during the step, from
  /// replaying its actions in order. Exact, where report.ranks[r].memory may over-count a rank with
  /// several stages.
  std::vector<double> rank_memory;
  /// One reference device (speed 1) running every layer for every microbatch, with no pipeline.
  double single_device_time = 0;

  /// @brief The simulated step's length, in the costs' unit.
  /// @return sim.makespan
  [[nodiscard]] double step_time() const noexcept { return sim.makespan; }
  /// @brief How much faster than one reference device: single_device_time / step_time. Unlike
  /// simulation::speedup() (busy time over step time), this compares with a real device when the
  /// ranks' speeds differ; the two agree when every speed is 1.
  /// @return the ratio; 0 when the simulated step took no time
  [[nodiscard]] double speedup() const noexcept {
    return sim.makespan > 0 ? single_device_time / sim.makespan : 0.0;
  }
  /// @brief The idle share of the step over all ranks (simulation::bubble_fraction()).
  /// @return a fraction from 0 to 1; 0 when the simulated step took no time
  [[nodiscard]] double bubble() const noexcept { return sim.bubble_fraction(); }
  /// @brief True when every rank's peak memory is within its capacity.
  /// @return whether rank_memory[r] <= report.ranks[r].capacity for every rank r
  [[nodiscard]] bool fits() const {
    for (std::size_t r = 0; r < rank_memory.size(); ++r) {
      if (rank_memory[r] > report.ranks[r].capacity) return false;
    }
    return true;
  }
};

/// @brief The simulator's cost model for `split`: each stage's forward and backward add up its
/// layers' and divide by its rank's speed; a split backward's halves take half each; a recompute
/// re-runs the forward of each layer whose output the stage's policy does not keep (in full,
/// where the problem gives the stage none).
/// @param problem the layers' costs and the ranks' speeds
/// @param split the layers of each stage; must cut the problem's layers into its stages
/// @param transfer time for one activation or gradient message, in the costs' unit
/// @return one cost entry per stage, in stage order, with `transfer` as the message time
/// @throws ppipe::error (errc::invalid_argument) when `split` does not match the problem's stage and
/// layer counts
inline cost_model stage_cost_model(const partition_problem& problem, const partition& split,
                                   double transfer = 0.0) {
  detail::check_split(problem, split);
  cost_model costs{{}, transfer};
  for (int s = 0; s < split.num_stages(); ++s) {
    double f = 0;
    double b = 0;
    for (int l = split.first(s); l < split.end(s); ++l) {
      f += problem.layers[static_cast<std::size_t>(l)].forward;
      b += problem.layers[static_cast<std::size_t>(l)].backward;
    }
    double r = problem.recompute_time(s, split.first(s), split.end(s));
    if (!problem.policy(s).recomputes()) r = f - problem.layers[static_cast<std::size_t>(split.end(s) - 1)].forward;
    const double speed = problem.device(problem.place.rank_of(s)).speed;
    costs.stages.push_back({f / speed, b / speed, b / speed / 2, b / speed / 2, r / speed});
  }
  return costs;
}

/// @brief Simulates `s` with the stage costs of `report.split` and replays each rank's activations
/// to find its peak memory; keeps `report` (with its partitioner's name and optimality) as the
/// prediction's report. `problem` must be the schedule's (partition_problem::for_schedule(s, ...)).
/// The stages the problem recomputes get their R actions first (with_recompute()); a recomputed
/// microbatch counts what its stage's policy keeps from its forward to its R, and all of its
/// activations from its R to its backward.
/// @param s the schedule to simulate
/// @param problem the layers' costs and memory and the devices, built for `s`
/// @param report a report of the split to predict (plan_partition() or evaluate()); one without
/// per-stage figures is completed by evaluate()
/// @param options the message time, the transfer model, and whether to keep the timeline
/// @return the report, the simulated step, each rank's peak memory, and the one-device time
/// @throws ppipe::error (errc::invalid_argument) when `problem` was not built for `s` (another
/// placement or mode) or `report.split` does not match the problem's stage and layer counts
inline plan_prediction predict(const schedule& s, const partition_problem& problem, const partition_report& report,
                               prediction_options options = {});

/// @brief The same for a bare partition (its report names the partitioner "given").
/// @param s the schedule to simulate
/// @param problem the layers' costs and memory and the devices, built for `s`
/// @param split the layers of each stage
/// @param options the message time, the transfer model, and whether to keep the timeline
/// @return the prediction, with evaluate(problem, split) as its report
/// @throws ppipe::error (errc::invalid_argument) when `problem` fails partition_problem::check(),
/// was not built for `s`, or `split` does not match its stage and layer counts
inline plan_prediction predict(const schedule& s, const partition_problem& problem, const partition& split,
                               prediction_options options = {}) {
  return predict(s, problem, evaluate(problem, split), options);
}

inline plan_prediction predict(const schedule& s, const partition_problem& problem, const partition_report& report,
                               prediction_options options) {
  const partition& split = report.split;
  if (!(s.place == problem.place) || s.mode != problem.mode) {
    detail::fail(errc::invalid_argument, "the partition problem was not built for schedule \"", s.name,
                 "\" (", s.num_stages(), " stages on ", s.num_ranks(),
                 " ranks); build it with partition_problem::for_schedule(schedule, layers, devices)");
  }
  plan_prediction out;
  detail::check_split(problem, split);
  // A report whose stages are not filled in (e.g. default-built) is completed from the split.
  out.report = report.stages.size() == static_cast<std::size_t>(problem.num_stages()) ? report : evaluate(problem, split);
  // The stages the problem recomputes get their R actions, as for_schedule() counted them.
  std::vector<bool> marked(static_cast<std::size_t>(problem.num_stages()), false);
  for (int st = 0; st < problem.num_stages(); ++st) marked[static_cast<std::size_t>(st)] = problem.policy(st).recomputes();
  const schedule run = s.mode == schedule_mode::training ? with_recompute(s, marked) : s;
  out.sim = simulate(run, stage_cost_model(problem, split, options.transfer),
                     {options.record_timeline, options.transfers});
  const bool training = s.mode == schedule_mode::training;
  const std::vector<char> recomputed = recompute_table(run.ranks, run.num_stages(), run.microbatches);
  const auto m = static_cast<std::size_t>(run.microbatches);
  std::vector<double> kept;  // per stage: what a stashed microbatch keeps
  for (int st = 0; st < problem.num_stages(); ++st) kept.push_back(problem.stashed_memory(st, split.first(st), split.end(st)));
  for (std::size_t r = 0; r < run.ranks.size(); ++r) {
    double held = 0;
    double peak = 0;
    for (const action& a : run.ranks[r]) {
      const auto st = static_cast<std::size_t>(a.stage);
      const double bytes = out.report.stages[st].activation_memory;
      const bool stashes = recomputed[st * m + static_cast<std::size_t>(a.microbatch)] != 0;
      if (a.kind == action_kind::forward) {
        peak = std::max(peak, held + bytes);
        if (training) held += stashes ? kept[st] : bytes;  // a stash keeps only what its policy keeps
      } else if (a.kind == action_kind::recompute) {
        held += bytes - kept[st];
        peak = std::max(peak, held);
      } else if (a.kind == action_kind::backward || a.kind == action_kind::backward_weight) {
        held -= bytes;
      }
    }
    double params = 0;
    for (int stage : s.place.stages_on(static_cast<int>(r))) {
      params += out.report.stages[static_cast<std::size_t>(stage)].parameter_memory;
    }
    out.rank_memory.push_back(params + peak);
  }
  for (std::size_t i = 0; i < problem.layers.size(); ++i) out.single_device_time += problem.cost(i);
  out.single_device_time *= s.microbatches;
  return out;
}

}  // namespace ppipe
