#pragma once
/// @file
/// @brief How a generate() call is laid out before anything runs: its requests and options
/// checked, its groups and their size, and each request's state on each stage.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/generation.hpp"

namespace ppipe {

/// @brief A generate() call's layout.
struct generation_plan {
  int groups = 1;      ///< sequence groups in flight
  int group_size = 1;  ///< the most sequences in one group
  /// bytes[request][stage]: the request's state on the stage at its full capacity
  std::vector<std::vector<std::size_t>> bytes;
};

/// @brief Checks a generate() call and lays it out; every refusal names the value and the fix.
/// @param requests the call's requests
/// @param options the call's options
/// @param ranks the pipeline's ranks: the default number of groups
/// @param stage_bytes `stage_bytes(capacity)`: one sequence's state on each stage, by stage
/// @return the groups, their size, and each request's state per stage (within the cache budget)
/// @throws ppipe::error (errc::invalid_argument) when the options have no sampler, a negative
/// groups or max_group_size, or a max_new_tokens below 1 that a request takes; when there are more
/// than 2^31 - 1 requests; or when a request has no prompt, a negative token id or max_new_tokens,
/// or needs more than 2^31 - 1 tokens of state. (errc::out_of_memory) when a request's state on
/// some stage exceeds a nonzero cache_budget.
/// @tparam Tensor the tensor type of the options' sampler
/// @tparam StageBytes a callable `std::vector<std::size_t>(int capacity)`
template <class Tensor, class StageBytes>
generation_plan plan_generation(std::span<const generation_request> requests,
                                const basic_generation_options<Tensor>& options, int ranks, StageBytes&& stage_bytes) {
  if (!options.sampler) {
    detail::fail(errc::invalid_argument, "generate() needs a sampler; set generation_options::sampler, "
                 "e.g. to ppipe::layers::greedy");
  }
  if (options.groups < 0 || options.max_group_size < 0) {
    detail::fail(errc::invalid_argument, "generation_options has groups=", options.groups, " and max_group_size=",
                 options.max_group_size, "; give positive values, or 0 for the defaults");
  }
  // Request ids, positions and token ids travel as i32.
  constexpr std::int64_t id_limit = std::numeric_limits<std::int32_t>::max();
  if (requests.size() > static_cast<std::size_t>(id_limit)) {
    detail::fail(errc::invalid_argument, "generate() got ", requests.size(), " requests; at most ", id_limit,
                 " per call: split them over several calls");
  }
  const auto n = static_cast<int>(requests.size());
  generation_plan plan;
  // More groups than requests would stay empty.
  plan.groups = std::min(options.groups > 0 ? options.groups : ranks, std::max(1, n));
  plan.group_size = options.max_group_size > 0 ? options.max_group_size : std::max(1, (n + plan.groups - 1) / plan.groups);
  plan.bytes.resize(requests.size());
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const generation_request& q = requests[i];
    const int max_new = q.max_new_tokens > 0 ? q.max_new_tokens : options.max_new_tokens;
    if (q.prompt.empty() || q.max_new_tokens < 0) {
      detail::fail(errc::invalid_argument, "request ", i, " has a prompt of ", q.prompt.size(),
                   " tokens and max_new_tokens=", q.max_new_tokens,
                   "; give at least one prompt token and max_new_tokens >= 0 (0: the option's default)");
    }
    if (max_new < 1) {
      detail::fail(errc::invalid_argument, "request ", i, " takes generation_options::max_new_tokens, which is ",
                   options.max_new_tokens, "; give the option or the request's max_new_tokens >= 1");
    }
    for (std::size_t k = 0; k < q.prompt.size(); ++k) {
      if (q.prompt[k] < 0) {
        detail::fail(errc::invalid_argument, "request ", i, "'s prompt token ", k, " is ", q.prompt[k],
                     "; token ids are >= 0");
      }
    }
    const std::int64_t capacity = static_cast<std::int64_t>(q.prompt.size()) + max_new - 1;
    if (capacity > id_limit) {
      detail::fail(errc::invalid_argument, "request ", i, " needs ", capacity, " tokens of state; at most ", id_limit,
                   ": shorten its prompt or max_new_tokens");
    }
    std::vector<std::size_t>& bytes = plan.bytes[i];
    bytes = stage_bytes(static_cast<int>(capacity));
    const auto most = std::max_element(bytes.begin(), bytes.end());
    if (options.cache_budget > 0 && most != bytes.end() && *most > options.cache_budget) {
      detail::fail(errc::out_of_memory, "request ", i, " needs ", *most, " bytes of cache on stage ",
                   most - bytes.begin(), " (", q.prompt.size(), " prompt tokens + ", max_new, " new - 1 = ", capacity,
                   " tokens), more than the cache budget of ", options.cache_budget,
                   " bytes per stage; raise generation_options::cache_budget to at least ", *most,
                   " or shorten the request");
    }
  }
  return plan;
}

}  // namespace ppipe
