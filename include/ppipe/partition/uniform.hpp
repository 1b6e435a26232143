#pragma once
/// @file
/// @brief The uniform partitioner: equal layer counts, as DeepSpeed's "uniform" and Megatron-LM's
/// even split do.

#include <string_view>
#include <vector>

#include "ppipe/partition/choice.hpp"
#include "ppipe/partition/problem.hpp"

namespace ppipe::partitioners {

/// @brief Every stage gets L / S layers; when S does not divide L, the first L % S stages get one
/// more (as DeepSpeed's partition_uniform does), so 10 layers on 4 stages are 3/3/2/2. Ignores
/// costs, speeds and memory: a baseline to compare the others against.
struct uniform {
  /// @brief The name plan_partition() and reports give this partitioner.
  static constexpr std::string_view name = "uniform";

  /// @brief The equal-count split of `problem`.
  /// @param problem gives the layer and stage counts (costs, devices and memory are not used)
  /// @return the split, with partition_choice::optimal always false
  /// @throws ppipe::error (errc::invalid_argument) when `problem` fails partition_problem::check()
  [[nodiscard]] partition_choice choose(const partition_problem& problem) const {
    problem.check();
    const int L = problem.num_layers();
    const int S = problem.num_stages();
    std::vector<int> bounds{0};
    for (int s = 0; s < S; ++s) bounds.push_back(bounds.back() + L / S + (s < L % S ? 1 : 0));
    return {partition(std::move(bounds)), false};
  }
  /// @brief The split choose() picks.
  /// @param problem as for choose()
  /// @return the layers of each stage
  /// @throws ppipe::error as choose() does
  [[nodiscard]] partition split(const partition_problem& problem) const { return choose(problem).split; }
};

}  // namespace ppipe::partitioners
