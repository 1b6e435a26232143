#pragma once
/// @file
/// @brief ppipe::layers::mlp_block, the MLP half of a block of the kit's decoder.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ppipe/layers/transformer_parts.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::layers {

/// @brief [rows, d_model] -> x + W2 relu(W1 LayerNorm(x)), each row on its own: the MLP half of a
/// pre-norm transformer block. It keeps no state; its forwards are detail::rowwise_layer's.
///
/// Threads: immutable after construction; calls work in their own locals.
class mlp_block : public detail::rowwise_layer<mlp_block> {
 public:
  /// @brief The MLP layer of block `block` of a decoder of sizes `config`.
  /// @param config the decoder's sizes; throws ppipe::error (invalid_argument) for a size out of range
  /// @param block the block's index, for describe()
  /// @param seeds a splitmix64 state the layer draws one seed from per part (the norm, then the
  /// d_model -> d_ff and d_ff -> d_model projections), so that layers made in order from one
  /// state get the decoder's weights
  mlp_block(const transformer_config& config, int block, std::uint64_t& seeds)
      : config_(detail::validated(config)), block_(block) {
    // One part per statement: the seeds are drawn in this order.
    norm_ = detail::layer_norm(config_.d_model, detail::splitmix64(seeds));
    up_ = detail::dense(config_.d_model, config_.d_ff, detail::splitmix64(seeds));
    down_ = detail::dense(config_.d_ff, config_.d_model, detail::splitmix64(seeds));
  }

  /// @brief The sizes the layer was made with.
  /// @return the transformer_config given to the constructor
  [[nodiscard]] const transformer_config& config() const noexcept { return config_; }
  /// @brief "block 1 mlp", for messages.
  /// @return the block number and "mlp"
  [[nodiscard]] std::string describe() const { return ppipe::detail::concat("block ", block_, " mlp"); }

  /// @brief [rows, d_model] for [rows, d_model]; throws ppipe::error (invalid_argument) for any
  /// other input.
  /// @param in the shapes of the layer's input
  /// @return the shapes of its output
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    return detail::rowwise_shapes(*this, in, config_.d_model);
  }

  /// @brief A rough cost for `rows` rows, for the partitioner (see detail::row_cost()): the two
  /// projections and the norm, the weights' bytes, and the output and hidden rows.
  /// @param rows the rows of a call (1 gives per-row figures, which balance the same)
  /// @return the cost
  [[nodiscard]] layer_cost cost(std::int64_t rows = 1) const {
    const double d = config_.d_model;
    return detail::row_cost(rows, 4.0 * d * config_.d_ff + 8.0 * d,
                            norm_.parameters() + up_.parameters() + down_.parameters(), d + config_.d_ff);
  }

 private:
  friend class detail::rowwise_layer<mlp_block>;

  void apply(const float* x, float* y, std::size_t rows) const {
    const std::size_t d = detail::to_size(config_.d_model);
    std::vector<float> normed(d), hidden(detail::to_size(config_.d_ff));
    for (std::size_t r = 0; r < rows; ++r) {
      norm_.apply(x + r * d, normed.data());
      up_.apply(normed.data(), hidden.data());
      for (float& h : hidden) h = h > 0.0f ? h : 0.0f;
      down_.apply_residual(hidden.data(), y + r * d, x + r * d);
    }
  }

  transformer_config config_;
  int block_ = 0;
  detail::layer_norm norm_;
  detail::dense up_, down_;
};

}  // namespace ppipe::layers
