#pragma once
/// @file
/// @brief What a partition costs: per stage and per rank time and memory, the bottleneck, and a
/// plain-language summary. Works for any partition, chosen by a partitioner or by hand.

#include <algorithm>
#include <cstddef>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/partition/partition.hpp"
#include "ppipe/partition/problem.hpp"

namespace ppipe {

/// @brief One stage of a partition.
struct stage_report {
  /// The stage's index, from 0 in stage order.
  int stage = 0;
  int rank = 0;             ///< the rank that runs it
  int first_layer = 0;      ///< its layers are [first_layer, end_layer)
  /// One past its last layer.
  int end_layer = 0;
  /// Per microbatch, on the reference device (what partitioners balance), its recompute included.
  double cost = 0;
  double time = 0;          ///< cost / its rank's speed
  int in_flight = 0;        ///< peak microbatches of activations in flight (held or stashed) at once
  double parameter_memory = 0;   ///< its layers' parameter memory
  double activation_memory = 0;  ///< its layers' activations for one microbatch
  recompute_policy recompute{};  ///< what it keeps of a microbatch it recomputes
  /// The forward time its R re-runs per microbatch, on the reference device (part of `cost`).
  double recompute_cost = 0;
  int held = 0;                  ///< peak microbatches it holds in full (in_flight when it does not recompute)
  int stashed = 0;               ///< peak microbatches it stashes for their R
  double stashed_memory = 0;     ///< what one stashed microbatch keeps
  /// @brief The most memory the stage holds: its parameters and its in-flight microbatches'
  /// activations; where it recomputes, the smaller of that and its held microbatches' activations
  /// plus its stashed microbatches' kept inputs (an upper bound: the held and stashed peaks may
  /// fall at different moments; predict() replays the schedule for the exact peak).
  /// @return the memory, in the unit of layer_cost's memory
  [[nodiscard]] double memory() const {
    const double all = in_flight * activation_memory;
    if (stashed == 0) return parameter_memory + all;
    return parameter_memory + std::min(all, held * activation_memory + stashed * stashed_memory);
  }
  /// @brief The number of layers the stage holds.
  /// @return end_layer - first_layer
  [[nodiscard]] int layers() const { return end_layer - first_layer; }
};

/// @brief One rank of a partition.
struct rank_report {
  /// The rank's index, from 0.
  int rank = 0;
  std::string name;  ///< "rank r" or "rank r (device name)"
  double time = 0;   ///< its stages' times added: its work per microbatch
  /// Its stages' memory added. With several stages per rank this is an upper bound (their peaks may
  /// not coincide); predict() replays the schedule for the exact peak.
  double memory = 0;
  /// Its device's memory (device_spec::memory); infinity means no limit.
  double capacity = std::numeric_limits<double>::infinity();
  /// @brief Whether the rank's stages fit its device.
  /// @return memory <= capacity
  [[nodiscard]] bool fits() const { return memory <= capacity; }
};

/// @brief A partition with its figures.
struct partition_report {
  std::string partitioner;  ///< which partitioner chose it ("given" for one built by hand)
  /// The layers of each stage.
  partition split;
  /// Proven: no contiguous split of these layers over these stages has a smaller largest stage time
  /// (within the partitioner's rules: the balanced one ignores speeds and memory).
  bool optimal = false;
  /// One per stage, in stage order.
  std::vector<stage_report> stages;
  /// One per rank, in rank order.
  std::vector<rank_report> ranks;
  int bottleneck_stage = 0;  ///< the slowest stage: it sets the pipeline's pace
  /// No split can beat this: the total time over the summed speeds, or the largest layer on the
  /// fastest device, whichever is larger.
  double lower_bound = 0;
  /// When device memory limited the split: the bottleneck the best split would have without the
  /// limits (0 when they did not bind, or the partitioner does not consider memory).
  double without_memory_limits = 0;

  /// @brief The slowest stage's time: the pipeline's time per microbatch at best.
  /// @return stages[bottleneck_stage].time
  /// @throws std::out_of_range when `stages` does not hold bottleneck_stage (a default-built report)
  [[nodiscard]] double bottleneck_time() const {
    return stages.at(static_cast<std::size_t>(bottleneck_stage)).time;
  }
  /// @brief The slowest stage's time over the average stage time (1 is perfect balance).
  /// @return the ratio, >= 1; 1 when the stages' times add up to 0
  [[nodiscard]] double imbalance() const {
    double total = 0;
    for (const stage_report& s : stages) total += s.time;
    return total > 0 ? bottleneck_time() * static_cast<double>(stages.size()) / total : 1.0;
  }
  /// @brief True when every rank's memory is within its capacity.
  /// @return whether rank_report::fits() holds for every rank (true when `ranks` is empty)
  [[nodiscard]] bool fits() const {
    return std::all_of(ranks.begin(), ranks.end(), [](const rank_report& r) { return r.fits(); });
  }
  /// @brief Layers per stage, e.g. "40/40"; with more than `most` stages, the first and last few
  /// around "...", and the stage count.
  /// @param most the most stages listed one by one; with more, the first and last most / 2 are listed
  /// @return the text, e.g. "40/40"
  [[nodiscard]] std::string sizes(std::size_t most = 16) const {
    std::ostringstream os;
    const std::size_t n = stages.size();
    for (std::size_t s = 0; s < n; ++s) {
      if (n > most && s >= most / 2 && s < n - most / 2) {
        if (s == most / 2) os << "/...";
        continue;
      }
      os << (s > 0 ? "/" : "") << stages[s].layers();
    }
    if (n > most) os << " (" << n << " stages)";
    return os.str();
  }
  /// @brief Two or three sentences: the split, its bottleneck and why, and memory that does not fit.
  /// @return the summary, in the costs' and memory's own units
  /// @throws std::out_of_range when the report has no stages (a default-built one)
  [[nodiscard]] std::string summary() const {
    std::ostringstream os;
    const stage_report& b = stages.at(static_cast<std::size_t>(bottleneck_stage));
    os << partitioner << " split " << sizes() << ": the bottleneck is stage " << b.stage << ", layers "
       << b.first_layer << ".." << b.end_layer - 1 << " on " << ranks.at(static_cast<std::size_t>(b.rank)).name
       << ", at " << b.time << " per microbatch (the ideal is " << lower_bound << ")";
    if (optimal) {
      os << ", and no contiguous split does better";
      if (without_memory_limits > 0) os << " within the devices' memory";
    }
    os << ".";
    if (without_memory_limits > 0) {
      os << " Memory limits cost " << b.time - without_memory_limits << " per microbatch: without them "
         << "the bottleneck would be " << without_memory_limits << ".";
    }
    for (const rank_report& r : ranks) {
      if (!r.fits()) {
        os << " " << r.name << " needs " << r.memory << " but has " << r.capacity << ".";
      }
    }
    return os.str();
  }
};

namespace detail {

/// Throws unless `split` cuts the problem's own layers into the problem's stages.
inline void check_split(const partition_problem& problem, const partition& split) {
  if (split.num_stages() != problem.num_stages() || split.num_layers() != problem.num_layers()) {
    fail(errc::invalid_argument, "the partition has ", split.num_stages(), " stages over ",
         split.num_layers(), " layers, but the problem has ", problem.num_stages(), " stages and ",
         problem.num_layers(), " layers; partition the problem's own layers");
  }
}

}  // namespace detail

/// @brief The figures of `split` for `problem`: its stages' costs, times and memory, each rank's
/// total, and the bottleneck. `partitioner` and `optimal` are recorded as given.
/// @param problem the layers' costs and memory, the placement, the in-flight counts and the devices
/// @param split the layers of each stage; must cut the problem's layers into its stages
/// @param partitioner the name the report gives the split's origin
/// @param optimal whether the split is proven optimal (not checked)
/// @return the report, with lower_bound filled in and without_memory_limits left 0
/// @throws ppipe::error (errc::invalid_argument) when `problem` fails partition_problem::check() or
/// `split` does not match its stage and layer counts
inline partition_report evaluate(const partition_problem& problem, const partition& split,
                                 std::string partitioner = "given", bool optimal = false) {
  problem.check();
  detail::check_split(problem, split);
  partition_report out;
  out.partitioner = std::move(partitioner);
  out.split = split;
  out.optimal = optimal;
  const int R = problem.num_ranks();
  for (int r = 0; r < R; ++r) {
    out.ranks.push_back({r, problem.rank_name(r), 0.0, 0.0, problem.device(r).memory});
  }
  double total = 0;
  double largest = 0;
  double fastest = 0;
  double speeds = 0;
  for (int r = 0; r < R; ++r) {
    fastest = std::max(fastest, problem.device(r).speed);
    speeds += problem.device(r).speed * static_cast<double>(problem.place.stages_on(r).size());
  }
  for (int s = 0; s < problem.num_stages(); ++s) {
    stage_report st;
    st.stage = s;
    st.rank = problem.place.rank_of(s);
    st.first_layer = split.first(s);
    st.end_layer = split.end(s);
    st.in_flight = problem.in_flight[static_cast<std::size_t>(s)];
    for (int l = st.first_layer; l < st.end_layer; ++l) {
      const auto i = static_cast<std::size_t>(l);
      st.cost += problem.cost(i);
      st.parameter_memory += problem.layers[i].parameter_memory;
      st.activation_memory += problem.layers[i].activation_memory;
      largest = std::max(largest, problem.cost(i));
    }
    st.recompute = problem.policy(s);
    st.recompute_cost = problem.recompute_time(s, st.first_layer, st.end_layer);
    st.cost += st.recompute_cost;
    st.held = problem.held_of(s);
    st.stashed = problem.stashed_of(s);
    if (st.stashed > 0) st.stashed_memory = problem.stashed_memory(s, st.first_layer, st.end_layer);
    total += st.cost;
    st.time = st.cost / problem.device(st.rank).speed;
    rank_report& rr = out.ranks[static_cast<std::size_t>(st.rank)];
    rr.time += st.time;
    rr.memory += st.memory();
    if (out.stages.empty() || st.time > out.bottleneck_time()) out.bottleneck_stage = s;
    out.stages.push_back(st);
  }
  out.lower_bound = std::max(total / speeds, largest / fastest);
  return out;
}

}  // namespace ppipe
