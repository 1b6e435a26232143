#pragma once
/// @file
/// @brief ppipe::layers::greedy, the layer kit's sampler: the next token is the row's largest logit.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::layers {

/// @brief The index of the largest value in row `row` of out[0], a tensor [rows, vocab] of logits
/// (a decoder's last layer's output); the first such index when several tie. Throws ppipe::error
/// (invalid_argument) when `out` is not one [rows, vocab] tensor with vocab >= 1, or `row` is not in
/// [0, rows).
/// @param out the logits, tensor 0 of shape [rows, vocab]
/// @param row the row to sample, in [0, rows)
/// @return the token id, in [0, vocab)
[[nodiscard]] inline int greedy(const payload& out, int row) {
  if (out.empty() || out[0].shape().rank() != 2 || out[0].shape()[1] < 1) {
    const std::vector<shape> got = shapes_of(out);
    ppipe::detail::fail(errc::invalid_argument, "greedy samples tensor 0 of shape [rows, vocab] but got ",
                        ppipe::to_string(std::span<const shape>(got)),
                        "; give it the last layer's output (logits, with vocab >= 1)");
  }
  const std::int64_t rows = out[0].shape()[0];
  if (row < 0 || row >= rows) {
    ppipe::detail::fail(errc::invalid_argument, "greedy: row ", row, " is outside the logits' ", rows,
                        " rows; give a row in [0, ", rows, ")");
  }
  const std::size_t vocab = static_cast<std::size_t>(out[0].shape()[1]);
  const float* logits = out[0].data() + static_cast<std::size_t>(row) * vocab;
  std::size_t best = 0;
  for (std::size_t k = 1; k < vocab; ++k) {
    if (logits[k] > logits[best]) best = k;
  }
  return static_cast<int>(best);
}

}  // namespace ppipe::layers
