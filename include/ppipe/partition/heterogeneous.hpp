#pragma once
/// @file
/// @brief The heterogeneous partitioner: minimises the largest stage time on devices of different
/// speeds, within each device's memory.

#include <algorithm>
#include <sstream>
#include <vector>
#include <string_view>

#include "ppipe/partition/detail/split_search.hpp"
#include "ppipe/error.hpp"
#include "ppipe/partition/choice.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/partition/report.hpp"

namespace ppipe::partitioners {

/// @brief Minimises the largest stage time, cost / speed of the stage's rank, subject to each
/// rank's memory: its stages' parameter memory plus, for each stage, the schedule's peak in-flight
/// microbatches times the stage's activation memory per microbatch (less where a stage recomputes:
/// partition_problem). So under 1F1B the first stages, which hold the most microbatches, get fewer
/// activation-heavy layers.
///
/// Exact when each rank with a memory limit holds one stage (GPipe, 1F1B, or any schedule without
/// limits). When a limited rank holds several stages (interleaved), they share its memory, and the
/// search is not exhaustive: ppipe returns the time-optimal split if it fits (then optimal), and
/// otherwise the best of several candidates that fit (fixed shares of each rank's memory per
/// stage, each solved exactly, and a greedy fill), with partition_choice::optimal false. On small
/// random problems (tests/unit/test_partition_exhaustive.cpp) it finds a fitting split for 98.5%
/// of those that have one, and proves 85% of its splits optimal.
///
/// When no split fits, throws ppipe::error (errc::out_of_memory) that names how much memory the
/// closest split still lacks, on which ranks, and what to change.
struct heterogeneous {
  /// @brief The name plan_partition() and reports give this partitioner.
  static constexpr std::string_view name = "heterogeneous";

  /// @brief The fastest split of `problem` that fits every rank's memory.
  /// @param problem the layers' costs and memory, the schedule's placement and in-flight counts, and
  /// the ranks' devices
  /// @return the split; partition_choice::optimal is true when no fitting split has a smaller largest
  /// stage time, and partition_choice::without_memory_limits > 0 when memory made the bottleneck slower
  /// @throws ppipe::error (errc::invalid_argument) when `problem` fails partition_problem::check();
  /// (errc::out_of_memory) when no split found fits
  [[nodiscard]] partition_choice choose(const partition_problem& problem) const {
    problem.check();
    const detail::split_tables tables(problem, true);
    const detail::split_result found = detail::min_max_split(tables);
    if (!found.fits) explain_shortfall(problem, partition(found.bounds), found);
    // What the limits cost: the search reports the bottleneck it would reach without them.
    const double free = found.unconstrained;
    return {partition(found.bounds), found.optimal, free > 0 && free < found.bottleneck ? free : 0.0};
  }
  /// @brief The split choose() picks.
  /// @param problem as for choose()
  /// @return the layers of each stage
  /// @throws ppipe::error as choose() does
  [[nodiscard]] partition split(const partition_problem& problem) const { return choose(problem).split; }

 private:
  [[noreturn]] static void explain_shortfall(const partition_problem& problem, const partition& closest,
                                             const detail::split_result& found) {
    const partition_report r = evaluate(problem, closest, std::string(name));
    // The ranks short of memory, worst first; the first few in detail.
    std::vector<rank_report> short_ranks;
    for (const rank_report& rank : r.ranks) {
      if (!rank.fits()) short_ranks.push_back(rank);
    }
    std::stable_sort(short_ranks.begin(), short_ranks.end(), [](const rank_report& a, const rank_report& b) {
      return a.memory - a.capacity > b.memory - b.capacity;
    });
    constexpr std::size_t shown = 3;
    std::ostringstream where;
    for (std::size_t i = 0; i < short_ranks.size() && i < shown; ++i) {
      const rank_report& rank = short_ranks[i];
      where << (i > 0 ? "; " : "") << rank.name << " lacks " << rank.memory - rank.capacity << " (needs "
            << rank.memory << ", has " << rank.capacity << ":";
      bool first = true;
      for (const stage_report& s : r.stages) {
        if (s.rank != rank.rank) continue;
        where << (first ? " " : "; ") << "stage " << s.stage << " holds layers " << s.first_layer << ".."
              << s.end_layer - 1 << ", parameters " << s.parameter_memory << " + ";
        if (s.stashed > 0 && s.held * s.activation_memory + s.stashed * s.stashed_memory <
                                 s.in_flight * s.activation_memory) {
          where << s.held << " held x activations " << s.activation_memory << " + " << s.stashed
                << " stashed (recompute " << to_string(s.recompute) << ") x " << s.stashed_memory;
        } else {
          where << s.in_flight << (s.in_flight == 1 ? " microbatch" : " microbatches") << " in flight x activations "
                << s.activation_memory;
        }
        first = false;
      }
      where << ")";
    }
    if (short_ranks.size() > shown) where << "; and " << short_ranks.size() - shown << " more ranks";
    double worst = 0;
    for (const rank_report& rank : r.ranks) worst = std::max(worst, rank.memory - rank.capacity);
    bool recomputes = false;
    for (int st = 0; st < problem.num_stages(); ++st) recomputes = recomputes || problem.policy(st).recomputes();
    detail::fail(errc::out_of_memory, "no split of the ", problem.num_layers(), " layers over ",
                 problem.num_stages(), " stages fits in memory; ",
                 found.optimal ? "the best split" : "the closest split found", ", ", r.sizes(),
                 ", still needs ", worst, " more on its worst rank: ", where.str(),
                 found.optimal ? "" : " (with several stages per rank sharing memory the search is not"
                                      " exhaustive, so a split may still exist)",
                 ". Give those ranks more memory, add ranks, use a schedule that keeps fewer microbatches"
                 " in flight (1F1B keeps p-s on stage s, GPipe m), use fewer microbatches",
                 recomputes ? "" : ", or recompute activations to shrink them (plan_recompute)");
  }
};

}  // namespace ppipe::partitioners
