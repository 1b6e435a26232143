#pragma once
/// @file
/// @brief The balanced partitioner: the contiguous split that minimises the largest stage cost,
/// exactly.

#include <string_view>

#include "ppipe/partition/detail/split_search.hpp"
#include "ppipe/partition/choice.hpp"
#include "ppipe/partition/problem.hpp"

namespace ppipe::partitioners {

/// @brief Minimises the largest stage cost (forward + backward per microbatch when training,
/// forward for inference) over every contiguous split, exactly: the result's bottleneck is the
/// optimum, not a heuristic's approximation. Among the optimal splits it picks one that spreads
/// the remaining slack evenly. Ignores device speeds and memory; see heterogeneous for those.
/// O(S log L) per probe, at most 64 probes.
struct balanced {
  /// @brief The name plan_partition() and reports give this partitioner.
  static constexpr std::string_view name = "balanced";

  /// @brief The balanced split of `problem`, with its optimality.
  /// @param problem the layers' costs and the schedule's stages (devices and memory are not used)
  /// @return the split; partition_choice::optimal is true when the search proved its bottleneck minimal
  /// @throws ppipe::error (errc::invalid_argument) when `problem` fails partition_problem::check()
  [[nodiscard]] partition_choice choose(const partition_problem& problem) const {
    problem.check();
    const detail::split_tables tables(problem, false);
    const detail::split_result found = detail::min_max_split(tables);
    return {partition(found.bounds), found.optimal};
  }
  /// @brief The split choose() picks, without its optimality.
  /// @param problem as for choose()
  /// @return the layers of each stage
  /// @throws ppipe::error as choose() does
  [[nodiscard]] partition split(const partition_problem& problem) const { return choose(problem).split; }
};

}  // namespace ppipe::partitioners
