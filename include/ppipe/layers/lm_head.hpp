#pragma once
/// @file
/// @brief ppipe::layers::lm_head, the last layer of the kit's decoder: the residual stream to
/// logits over the vocabulary.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ppipe/layers/transformer_parts.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::layers {

/// @brief [rows, d_model] -> [rows, vocab] logits, W LayerNorm(x) + b for each row on its own:
/// the final norm and the output head (ppipe::layers::greedy() samples them). It keeps no state;
/// its forwards are detail::rowwise_layer's.
///
/// Threads: immutable after construction; calls work in their own locals.
class lm_head : public detail::rowwise_layer<lm_head> {
 public:
  /// @brief The head of a decoder of sizes `config`.
  /// @param config the decoder's sizes; throws ppipe::error (invalid_argument) for a size out of range
  /// @param seeds a splitmix64 state the layer draws one seed from per part (the norm, then the
  /// projection), so that layers made in order from one state get the decoder's weights
  lm_head(const transformer_config& config, std::uint64_t& seeds) : config_(detail::validated(config)) {
    // One part per statement: the seeds are drawn in this order.
    norm_ = detail::layer_norm(config_.d_model, detail::splitmix64(seeds));
    head_ = detail::dense(config_.d_model, config_.vocab, detail::splitmix64(seeds));
  }

  /// @brief The sizes the layer was made with.
  /// @return the transformer_config given to the constructor
  [[nodiscard]] const transformer_config& config() const noexcept { return config_; }
  /// @brief "head", for messages.
  /// @return "head"
  [[nodiscard]] std::string describe() const { return "head"; }

  /// @brief [rows, vocab] for [rows, d_model]; throws ppipe::error (invalid_argument) for any
  /// other input.
  /// @param in the shapes of the layer's input
  /// @return the shapes of its output
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    return detail::rowwise_shapes(*this, in, config_.vocab);
  }

  /// @brief A rough cost for `rows` rows, for the partitioner (see detail::row_cost()): the
  /// vocab-wide projection and the norm, the weights' bytes, and the input and logit rows.
  /// @param rows the rows of a call (1 gives per-row figures, which balance the same)
  /// @return the cost
  [[nodiscard]] layer_cost cost(std::int64_t rows = 1) const {
    const double d = config_.d_model;
    return detail::row_cost(rows, 2.0 * d * config_.vocab + 8.0 * d, norm_.parameters() + head_.parameters(),
                            d + config_.vocab);
  }

 private:
  friend class detail::rowwise_layer<lm_head>;

  void apply(const float* x, float* y, std::size_t rows) const {
    const std::size_t d = detail::to_size(config_.d_model);
    const std::size_t v = detail::to_size(config_.vocab);
    std::vector<float> normed(d);
    for (std::size_t r = 0; r < rows; ++r) {
      norm_.apply(x + r * d, normed.data());
      head_.apply(normed.data(), y + r * v);
    }
  }

  transformer_config config_;
  detail::layer_norm norm_;
  detail::dense head_;
};

}  // namespace ppipe::layers
