#pragma once
/// @file
/// @brief What a generate() call takes and returns: requests, options and results.

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "ppipe/tensor/tensor.hpp"
#include "ppipe/runtime/trace.hpp"

namespace ppipe {

/// @brief One sequence to generate: its prompt (token ids) and how many tokens to add.
struct generation_request {
  std::vector<int> prompt;  ///< token ids, each >= 0; at least one
  /// Tokens to generate (the eos token included, when it ends the sequence first); 0 takes
  /// generation_options::max_new_tokens.
  int max_new_tokens = 0;
};

/// @brief Picks the next token from row `row` of the last stage's output (the logits of a
/// sequence's last new row). Runs on the last stage's rank.
///
/// It returns a token id >= 0; generate() fails with ppipe::error (errc::invalid_argument) on a
/// negative one.
/// @tparam Tensor the tensor type of the pipeline's payloads
template <class Tensor>
using sampler_function = std::function<int(const basic_payload<Tensor>& output, int row)>;

/// @brief How a generate() call batches and bounds its sequences.
/// @tparam Tensor the tensor type of the pipeline's payloads, which the sampler reads
template <class Tensor>
struct basic_generation_options {
  /// The sampler, e.g. ppipe::layers::greedy; required.
  sampler_function<Tensor> sampler;
  int max_new_tokens = 16;  ///< for requests that give 0
  int eos_token = -1;       ///< a sequence ends when it samples this token (-1: none)
  /// Groups of sequences in flight: each group is one microbatch that circulates through the
  /// stages, one decode step per round. 0: one per rank, the fewest that keep every rank busy.
  int groups = 0;
  /// The most sequences in one group. 0: the requests spread evenly over the groups.
  int max_group_size = 0;
  /// The most bytes of per-sequence state (KV cache) any one stage may hold; 0: no limit. A
  /// sequence is admitted only when its state fits on every stage; until then it waits.
  std::size_t cache_budget = 0;
};
/// @brief The options of a generate() call over host tensors, the only kind generation runs on.
using generation_options = basic_generation_options<host_tensor>;

/// @brief What a generate() call produced and how it went. Times are microseconds from the start
/// of the call: every request counts as arriving then.
struct generation_result {
  std::vector<std::vector<int>> tokens;  ///< per request: the generated tokens (not the prompt)
  /// per request: when rank 0 admitted it (each stage allocates its state when that step reaches it)
  std::vector<double> admitted_us;
  std::vector<double> first_token_us;    ///< per request: time to first token (TTFT)
  std::vector<double> finished_us;       ///< per request: when its last token came
  double elapsed_us = 0.0;               ///< the whole call
  int steps = 0;                         ///< group steps (microbatches) that went through the stages
  std::vector<double> stage_busy_us;     ///< per stage: time in its layers
  std::vector<std::size_t> peak_cache_bytes;  ///< per stage: the most state it held at once
  run_trace trace;  ///< every stage call (empty when the pipeline records no trace)

  /// @brief Generated tokens over all requests.
  /// @return the sum of the sizes of `tokens`
  [[nodiscard]] std::size_t generated() const noexcept {
    std::size_t n = 0;
    for (const auto& t : tokens) n += t.size();
    return n;
  }
  /// @brief Generated tokens per second of the call.
  /// @return generated() over elapsed_us, in tokens per second; 0 when elapsed_us is not positive
  [[nodiscard]] double tokens_per_second() const noexcept {
    return elapsed_us > 0 ? static_cast<double>(generated()) * 1e6 / elapsed_us : 0.0;
  }
  /// @brief Share of the call that stage `s` spent in its layers.
  /// @param s the stage, in [0, stage_busy_us.size()) (std::out_of_range otherwise)
  /// @return stage_busy_us[s] over elapsed_us, in [0, 1]; 0 when elapsed_us is not positive
  [[nodiscard]] double utilisation(int s) const {
    return elapsed_us > 0 ? stage_busy_us.at(static_cast<std::size_t>(s)) / elapsed_us : 0.0;
  }
};

}  // namespace ppipe
