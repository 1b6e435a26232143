#pragma once
/// @file
/// @brief Times a schedule under a cost model: makespan, per-rank busy and idle time, the bubble,
/// and the peak number of microbatches whose activations each stage holds (and, with recompute,
/// of those it keeps only the input and output of).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

#include "ppipe/schedule/detail/held.hpp"
#include "ppipe/schedule/detail/replay.hpp"
#include "ppipe/schedule/recompute.hpp"
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
  double recompute = 1.0;        ///< R (the forward re-run before a backward), at most `forward`; may be 0
};

/// @brief The costs the simulator charges: per stage compute, and one transfer latency per message.
struct cost_model {
  /// One entry per stage, or a single entry that every stage shares.
  std::vector<stage_costs> stages{stage_costs{}};
  /// Time from posting a send to the data being ready at the receiver. Sends do not occupy the
  /// sending rank: transfers overlap with compute.
  double transfer = 0.0;

  /// @brief Every stage costs `forward` and `backward`; a split backward's halves cost
  /// backward/2 each, and a recompute as much as a forward.
  /// @param forward the time of one forward (F), the same for every stage
  /// @param backward the time of one full backward (B); I and W each take half of it
  /// @param transfer the latency of one message, >= 0
  /// @return a model with a single stage_costs entry that every stage shares
  static cost_model uniform(double forward, double backward, double transfer = 0.0) {
    return cost_model{{stage_costs{forward, backward, backward / 2, backward / 2, forward}}, transfer};
  }

  /// @brief The cost of a compute action.
  /// @param a the action; its stage must index `stages` unless `stages` has a single entry (not
  /// checked)
  /// @return the time of F, B, I, W or R for its stage; 0 for a transfer kind
  [[nodiscard]] double of(const action& a) const noexcept {
    const stage_costs& c = stages.size() == 1 ? stages.front() : stages[static_cast<std::size_t>(a.stage)];
    switch (a.kind) {
      case action_kind::forward: return c.forward;
      case action_kind::backward: return c.backward;
      case action_kind::backward_input: return c.backward_input;
      case action_kind::backward_weight: return c.backward_weight;
      case action_kind::recompute: return c.recompute;
      default: return 0.0;
    }
  }
};

/// @brief A compute action with the time it ran.
struct timed_action {
  action act;  ///< the compute action (F, B, I or W)
  int step = 0;  ///< position in the rank's action list
  double start = 0.0;  ///< when it started, from 0 at the start of the step, in the cost model's unit
  double end = 0.0;  ///< when it ended: start plus its cost
};

/// @brief How simulate() runs.
struct simulate_options {
  bool record_timeline = true;  ///< keep every compute action's start and end (needed to draw it)
  /// When a transfer lets its rank go on (see transfer_model). Under `rendezvous` a transfer group
  /// completes when its last message has arrived, `transfer` after both ends were posted; under
  /// `buffered` a send costs its rank nothing and a receive waits for the data.
  transfer_model transfers = transfer_model::rendezvous;
};

/// @brief The simulator's result.
struct simulation {
  double makespan = 0.0;                        ///< time until the last rank finishes
  std::vector<double> busy;                     ///< per rank: time spent computing
  /// Per stage: most microbatches whose activations it held at once (a recomputed microbatch's
  /// from its R to its backward, and for the length of its forward).
  std::vector<int> peak_stage_activations;
  std::vector<int> peak_rank_activations;       ///< per rank: the same, summed over its stages
  /// Per stage: most recomputed microbatches kept at once as the stage's input and output only,
  /// from their forward to their R; all zero without R actions.
  std::vector<int> peak_stage_stashed;
  std::vector<int> peak_rank_stashed;           ///< per rank: the same, summed over its stages
  std::vector<std::vector<timed_action>> timeline;  ///< per rank, when recorded
  cost_model costs;                             ///< the costs it ran with
  transfer_model transfers = transfer_model::rendezvous;  ///< the transfer model it ran with

  /// @brief Time rank `r` spends idle within the makespan.
  /// @param r a rank, 0 .. p-1
  /// @return makespan minus the rank's busy time
  /// @throws std::out_of_range when `r` is not a rank of the simulation
  [[nodiscard]] double idle(int r) const { return makespan - busy.at(static_cast<std::size_t>(r)); }
  /// @brief Compute time summed over all ranks.
  /// @return the sum of `busy`
  [[nodiscard]] double total_busy() const { return std::accumulate(busy.begin(), busy.end(), 0.0); }
  /// @brief Idle time summed over all ranks, each counted up to the makespan.
  /// @return p * makespan minus total_busy()
  [[nodiscard]] double total_idle() const {
    return makespan * static_cast<double>(busy.size()) - total_busy();
  }
  /// @brief Idle share of the step over all ranks: idle / (p * makespan). (p-1)/(m+p-1) for GPipe
  /// and 1F1B with equal stage costs.
  /// @return a share from 0 to 1; 0 when the makespan is 0
  [[nodiscard]] double bubble_fraction() const {
    return makespan > 0 ? total_idle() / (makespan * static_cast<double>(busy.size())) : 0.0;
  }
  /// @brief Idle time relative to compute time: idle / busy. (p-1)/m for GPipe and 1F1B and
  /// (p-1)/(v*m) for interleaved 1F1B with equal stage costs.
  /// @return a ratio >= 0; 0 when no rank computed
  [[nodiscard]] double bubble_overhead() const {
    const double b = total_busy();
    return b > 0 ? total_idle() / b : 0.0;
  }
  /// @brief How much faster than one device running every stage in turn: total busy / makespan.
  /// Below 1, the pipeline is slower than not pipelining.
  /// @return a ratio from 0 to p; 0 when the makespan is 0
  [[nodiscard]] double speedup() const { return makespan > 0 ? total_busy() / makespan : 0.0; }
};

namespace detail {

/// Checks the costs of the compute kinds each stage runs (bit k of used[s] set for kind k on stage
/// s); a single shared entry is checked for what any stage runs.
inline void check_costs(const cost_model& costs, int stages, const std::vector<unsigned>& used) {
  if (costs.stages.size() != 1 && costs.stages.size() != static_cast<std::size_t>(stages)) {
    fail(errc::invalid_argument, "the cost model has ", costs.stages.size(),
         " stage entries for a schedule of ", stages,
         " stages; give one entry per stage or a single entry for all");
  }
  if (!std::isfinite(costs.transfer) || costs.transfer < 0) {
    fail(errc::invalid_argument, "transfer cost ", costs.transfer,
         " is not a time; give a finite value >= 0");
  }
  unsigned any_stage = 0;
  for (const unsigned u : used) any_stage |= u;
  for (std::size_t s = 0; s < costs.stages.size(); ++s) {
    const stage_costs& c = costs.stages[s];
    const unsigned kinds = costs.stages.size() == 1 ? any_stage : used[s];
    const double values[] = {c.forward, c.backward, c.backward_input, c.backward_weight, c.recompute};
    const char* names[] = {"forward", "backward", "backward_input", "backward_weight", "recompute"};
    for (unsigned k = 0; k < 5; ++k) {
      // R of a one-layer stage re-runs nothing: it may cost 0.
      const bool bad = k == 4 ? values[k] < 0 : values[k] <= 0;
      if ((kinds & (1U << k)) != 0 && (!std::isfinite(values[k]) || bad)) {
        fail(errc::invalid_argument, "stage ", s, " has ", names[k], " cost ", values[k],
             k == 4 ? "; a recompute cost must be a finite time >= 0"
                    : "; every compute cost the schedule uses must be a finite time > 0");
      }
    }
  }
}

/// Replay hooks that keep each rank's clock.
struct timing_hooks {
  const cost_model& costs;
  bool record;
  std::vector<double> clock, busy;
  std::vector<double> arrival;             // buffered: per message
  std::vector<double> posted, group_done;  // rendezvous: per rank, for its current group
  held_counter& held;
  simulation& out;

  void on_compute(int rank, int step, const action& a) {
    const auto r = static_cast<std::size_t>(rank);
    const double start = clock[r];
    const double cost = costs.of(a);
    clock[r] = start + cost;
    busy[r] += cost;
    if (record) out.timeline[r].push_back({a, step, start, clock[r]});
    held.on(r, a);
  }
  // buffered: a message arrives `transfer` after its send; its receive waits for it.
  void on_send(int rank, std::size_t key) {
    arrival[key] = clock[static_cast<std::size_t>(rank)] + costs.transfer;
  }
  void on_recv(int rank, std::size_t key) {
    double& c = clock[static_cast<std::size_t>(rank)];
    c = std::max(c, arrival[key]);
  }
  // rendezvous: a message moves once both ends are posted and takes `transfer`; the group is done
  // when its last message has arrived.
  void on_post(int rank) {
    const auto r = static_cast<std::size_t>(rank);
    posted[r] = group_done[r] = clock[r];
  }
  void on_match(int from, int to) {
    const auto f = static_cast<std::size_t>(from);
    const auto t = static_cast<std::size_t>(to);
    const double arrives = std::max(posted[f], posted[t]) + costs.transfer;
    group_done[f] = std::max(group_done[f], arrives);
    group_done[t] = std::max(group_done[t], arrives);
  }
  void on_group_done(int rank) {
    const auto r = static_cast<std::size_t>(rank);
    clock[r] = group_done[r];
  }
};

}  // namespace detail

/// @brief Simulates `s` under `costs`. Each rank runs its actions in order; a compute action takes
/// its cost, and transfers take time as `options.transfers` says. Checks the schedule's structure
/// first, and throws ppipe::error if it is not valid or deadlocks under that transfer model.
/// Also throws ppipe::error (invalid_argument) if `costs` has neither one entry nor one per stage,
/// if a compute cost the schedule uses is not finite and > 0, if the transfer cost is negative or
/// not finite, or if the step time overflows.
/// @param s the schedule to time
/// @param costs the time of each compute action and of each message
/// @param options whether to record the timeline, and the transfer model
/// @return the makespan, busy time, activation peaks (held and stashed) and (if recorded) timeline,
/// with the costs used
inline simulation simulate(const schedule& s, const cost_model& costs, simulate_options options = {}) {
  if (auto problem = detail::structure_checker(s).run()) {
    detail::throw_report(detail::report(s, std::move(*problem)));
  }
  const auto p = static_cast<std::size_t>(s.num_ranks());
  const auto stages = static_cast<std::size_t>(s.num_stages());
  std::vector<unsigned> used(stages, 0);
  std::vector<std::size_t> computes(p, 0);
  for (std::size_t r = 0; r < p; ++r) {
    for (const action& a : s.ranks[r]) {
      used[static_cast<std::size_t>(a.stage)] |= 1U << static_cast<unsigned>(a.kind);
      computes[r] += is_compute(a.kind) ? 1 : 0;
    }
  }
  detail::held_counter held(stages, p, s.mode == schedule_mode::training,
                            recompute_table(s.ranks, s.num_stages(), s.microbatches),
                            static_cast<std::size_t>(s.microbatches));
  detail::check_costs(costs, s.num_stages(), used);
  simulation out;
  if (options.record_timeline) {
    out.timeline.resize(p);
    for (std::size_t r = 0; r < p; ++r) out.timeline[r].reserve(computes[r]);
  }
  const bool buffered = options.transfers == transfer_model::buffered;
  const std::size_t messages = 2 * stages * static_cast<std::size_t>(s.microbatches);
  detail::timing_hooks hooks{costs,
                             options.record_timeline,
                             std::vector<double>(p, 0.0),
                             std::vector<double>(p, 0.0),
                             std::vector<double>(buffered ? messages : 0, 0.0),
                             std::vector<double>(p, 0.0),
                             std::vector<double>(p, 0.0),
                             held,
                             out};
  const detail::replay_result run = detail::replay(s, options.transfers, hooks);
  if (!run.finished) {
    detail::throw_report(detail::report(s, detail::deadlock_problem(s, run, options.transfers)));
  }
  out.makespan = *std::max_element(hooks.clock.begin(), hooks.clock.end());
  if (!std::isfinite(out.makespan)) {
    detail::fail(errc::invalid_argument, "the simulated step time overflows (", out.makespan,
                 "); scale the costs down to a smaller unit of time");
  }
  out.busy = std::move(hooks.busy);
  out.peak_stage_activations = std::move(held.peak_stage);
  out.peak_rank_activations = std::move(held.peak_rank);
  out.peak_stage_stashed = std::move(held.peak_stashed_stage);
  out.peak_rank_stashed = std::move(held.peak_stashed_rank);
  out.costs = costs;
  out.transfers = options.transfers;
  return out;
}

}  // namespace ppipe
