#pragma once
/// @file
/// @brief Recomputation as a planning choice: per stage, the recompute policy that gives the
/// fastest predicted step within device memory, and the split that goes with it.

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/partition/partitioner.hpp"
#include "ppipe/partition/predict.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/partition/report.hpp"
#include "ppipe/schedule/recompute.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

/// @brief A split planned together with each stage's recompute policy.
struct recompute_plan {
  std::vector<recompute_policy> policies;  ///< per stage, what pipeline_options::recompute takes
  partition_problem problem;               ///< the problem with those policies (for_schedule())
  partition_report report;                 ///< the partitioner's split under them
  plan_prediction prediction;              ///< its predicted step and exact peak memory per rank

  /// @brief Whether every rank's predicted peak is within its device's memory.
  /// @return prediction.fits()
  [[nodiscard]] bool fits() const { return prediction.fits(); }
  /// @brief Whether some stage recomputes.
  /// @return true when a policy is not none
  [[nodiscard]] bool recomputes() const {
    for (const recompute_policy p : policies) {
      if (p.recomputes()) return true;
    }
    return false;
  }
};

/// @brief The policies plan_recompute() tries for each stage, least recompute first.
/// @return none, every(2), every(3), every(4), every(6), every(8) and full
inline const std::vector<recompute_policy>& recompute_candidates() {
  static const std::vector<recompute_policy> all{
      recompute_policy::none,     recompute_policy::every(2), recompute_policy::every(3), recompute_policy::every(4),
      recompute_policy::every(6), recompute_policy::every(8), recompute_policy::full};
  return all;
}

/// @brief Chooses recomputation per stage with the split: of the policy sets it tries, the one
/// whose split (by `p`) has the shortest predicted step among those that fit every rank's memory.
/// It starts from no recomputation and from full recomputation on every stage, then changes one
/// stage's policy at a time (recompute_candidates()) while that shortens the step, for up to three
/// rounds over the stages: a local search, not an exhaustive one. A model that fits without
/// recomputation still gets it where it buys a faster split (memory that forced layers off a fast
/// device). Predictions replay the schedule with its R actions (predict()), so the memory is the
/// exact peak of the model of partition_problem, and the step includes each R's forward time.
/// @tparam P a type that models ppipe::partitioner
/// @param p the partitioner
/// @param s the schedule, without R actions of its own (a forward-only one gets no recomputation)
/// @param layers one cost per layer of the model
/// @param devices one per rank of `s`, or empty (then nothing limits memory and no stage recomputes)
/// @param options the message time and transfer model for predict()
/// @return the plan; fits() is false only where `p` ignores memory and nothing it split fits
/// @throws ppipe::error (errc::out_of_memory) when no policy set tried gives a split that fits,
/// naming the shortfall with every stage recomputing in full (or, for a forward-only schedule,
/// without recomputation); (errc::invalid_argument) when `s` has R actions; what `p` throws otherwise
template <partitioner P>
recompute_plan plan_recompute(const P& p, const schedule& s, const std::vector<layer_cost>& layers,
                              const std::vector<device_spec>& devices = {}, prediction_options options = {}) {
  const auto S = static_cast<std::size_t>(s.num_stages());
  for (const auto& list : s.ranks) {
    for (const action& a : list) {
      if (a.kind == action_kind::recompute) {
        detail::fail(errc::invalid_argument, "plan_recompute chooses where schedule \"", s.name,
                     "\" recomputes, but it has R actions of its own (", to_string(a),
                     "); give it the schedule without them");
      }
    }
  }
  std::optional<ppipe::error> none_failure;
  std::optional<ppipe::error> full_failure;
  const auto attempt = [&](const std::vector<recompute_policy>& policies) -> std::optional<recompute_plan> {
    try {
      partition_problem problem = partition_problem::for_schedule(s, layers, devices, policies);
      partition_report report = plan_partition(p, problem);
      plan_prediction prediction = predict(s, problem, report, options);
      return recompute_plan{policies, std::move(problem), std::move(report), std::move(prediction)};
    } catch (const ppipe::error& e) {
      if (e.code() != errc::out_of_memory) throw;
      if (policies == std::vector<recompute_policy>(S, recompute_policy::full)) full_failure = e;
      if (policies == std::vector<recompute_policy>(S, recompute_policy::none)) none_failure = e;
      return std::nullopt;
    }
  };
  // a replaces b when it fits and b does not, or both fit (or neither does) and a is faster.
  const auto better = [](const std::optional<recompute_plan>& a, const std::optional<recompute_plan>& b) {
    if (!a) return false;
    if (!b) return true;
    if (a->fits() != b->fits()) return a->fits();
    return a->prediction.step_time() < b->prediction.step_time();
  };
  std::optional<recompute_plan> best = attempt(std::vector<recompute_policy>(S, recompute_policy::none));
  const bool limited = std::any_of(devices.begin(), devices.end(), [](const device_spec& d) { return std::isfinite(d.memory); });
  if (limited && s.mode == schedule_mode::training) {
    std::optional<recompute_plan> full = attempt(std::vector<recompute_policy>(S, recompute_policy::full));
    if (better(full, best)) best = std::move(full);
    for (int round = 0; round < 3 && best; ++round) {
      bool changed = false;
      for (std::size_t st = 0; st < S; ++st) {
        for (const recompute_policy candidate : recompute_candidates()) {
          if (candidate == best->policies[st]) continue;
          std::vector<recompute_policy> trial = best->policies;
          trial[st] = candidate;
          std::optional<recompute_plan> r = attempt(trial);
          if (better(r, best)) {
            best = std::move(r);
            changed = true;
          }
        }
      }
      if (!changed) break;
    }
  }
  if (!best) {
    if (full_failure) {
      detail::fail(errc::out_of_memory, "even with every stage recomputing in full: ", full_failure->message());
    }
    if (none_failure) throw *none_failure;  // a forward-only schedule: the split's own reason
    detail::fail(errc::out_of_memory, "no split of schedule \"", s.name, "\" fits in memory");
  }
  return std::move(*best);
}

}  // namespace ppipe
