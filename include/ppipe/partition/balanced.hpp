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
  static constexpr std::string_view name = "balanced";

  [[nodiscard]] partition_choice choose(const partition_problem& problem) const {
    problem.check();
    const detail::split_tables tables(problem, false);
    const detail::split_result found = detail::min_max_split(tables);
    return {partition(found.bounds), found.optimal};
  }
  [[nodiscard]] partition split(const partition_problem& problem) const { return choose(problem).split; }
};

}  // namespace ppipe::partitioners
