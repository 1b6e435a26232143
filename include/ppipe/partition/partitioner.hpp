#pragma once
/// @file
/// @brief The Partitioner concept, and planning a split with any partitioner.

#include <concepts>
#include <string>
#include <string_view>

#include "ppipe/partition/balanced.hpp"
#include "ppipe/partition/choice.hpp"
#include "ppipe/partition/heterogeneous.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/partition/report.hpp"
#include "ppipe/partition/uniform.hpp"

namespace ppipe {

/// @brief A partitioner: a type with a `name` and a `split(problem)` that returns the contiguous
/// layer ranges of the problem's stages. ppipe's are in ppipe::partitioners (uniform, balanced,
/// heterogeneous); a user's own type works the same. One that also has `choose(problem)`
/// returning a partition_choice can say that its split is proven optimal.
template <class P>
concept partitioner = requires(const P& p, const partition_problem& problem) {
  { P::name } -> std::convertible_to<std::string_view>;
  { p.split(problem) } -> std::same_as<partition>;
};

/// @brief Splits `problem` with `p` and reports the result's figures.
/// @tparam P a type that models ppipe::partitioner
/// @param p the partitioner; its `choose()` is used where it has one, so the report carries the
/// optimality and the cost of memory limits, otherwise its `split()`
/// @param problem what to split (partition_problem::for_schedule())
/// @return evaluate()'s report of the split, naming `P::name` as the partitioner
/// @throws ppipe::error what `p` throws, or (errc::invalid_argument) when the split does not cut
/// the problem's layers into its stages
template <partitioner P>
partition_report plan_partition(const P& p, const partition_problem& problem) {
  if constexpr (requires { { p.choose(problem) } -> std::same_as<partition_choice>; }) {
    const partition_choice c = p.choose(problem);
    partition_report r = evaluate(problem, c.split, std::string(P::name), c.optimal);
    r.without_memory_limits = c.without_memory_limits;
    return r;
  } else {
    return evaluate(problem, p.split(problem), std::string(P::name), false);
  }
}

/// @brief The names plan_partition(std::string_view, ...) accepts.
inline constexpr std::string_view partitioner_names[] = {
    partitioners::uniform::name, partitioners::balanced::name, partitioners::heterogeneous::name};

/// @brief plan_partition with a built-in partitioner chosen at run time by name.
/// @param name "uniform", "balanced" or "heterogeneous" (see partitioner_names)
/// @param problem what to split (partition_problem::for_schedule())
/// @return the named partitioner's report
/// @throws ppipe::error (errc::invalid_argument) for any other name, or what that partitioner throws
inline partition_report plan_partition(std::string_view name, const partition_problem& problem) {
  if (name == partitioners::uniform::name) return plan_partition(partitioners::uniform{}, problem);
  if (name == partitioners::balanced::name) return plan_partition(partitioners::balanced{}, problem);
  if (name == partitioners::heterogeneous::name) return plan_partition(partitioners::heterogeneous{}, problem);
  detail::fail(errc::invalid_argument, "unknown partitioner \"", name,
               "\"; use uniform, balanced or heterogeneous");
}

}  // namespace ppipe
