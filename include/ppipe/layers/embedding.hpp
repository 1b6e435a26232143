#pragma once
/// @file
/// @brief ppipe::layers::embedding, the first layer of the kit's decoder: token ids to the sum of
/// their token's and their position's embeddings.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/layers/transformer_parts.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::layers {

/// @brief One i32 tensor [rows] of token ids -> [rows, d_model]: each row is its token's embedding
/// plus its position's. It keeps no state, but reads positions from a generation context.
///
/// Threads: immutable after construction; calls work in their own locals.
class embedding {
 public:
  /// @brief The embedding of a decoder of sizes `config`: a token table [vocab, d_model] and a
  /// position table [max_positions, d_model].
  /// @param config the decoder's sizes; throws ppipe::error (invalid_argument) for a size out of range
  /// @param seeds a splitmix64 state the layer draws one seed from per table (tokens, then
  /// positions), so that layers made in order from one state get the decoder's weights
  embedding(const transformer_config& config, std::uint64_t& seeds) : config_(detail::validated(config)) {
    const std::size_t d = detail::to_size(config_.d_model);
    std::uint64_t table = detail::splitmix64(seeds);
    token_.resize(detail::to_size(config_.vocab) * d);
    for (float& v : token_) v = detail::uniform_symmetric(table, 1.0f);
    table = detail::splitmix64(seeds);
    position_.resize(detail::to_size(config_.max_positions) * d);
    for (float& v : position_) v = detail::uniform_symmetric(table, 0.5f);
  }

  /// @brief The sizes the layer was made with.
  /// @return the transformer_config given to the constructor
  [[nodiscard]] const transformer_config& config() const noexcept { return config_; }
  /// @brief "embedding", for messages.
  /// @return "embedding"
  [[nodiscard]] std::string describe() const { return "embedding"; }

  /// @brief What is wrong with input shapes `in`, or "" when the layer takes them; the text has no
  /// subject, so that a model can put the layer's index in front.
  /// @param in the shapes of the layer's input
  /// @return the problem, or ""
  [[nodiscard]] std::string shape_problem(const std::vector<shape>& in) const {
    if (in.size() == 1 && in[0].rank() == 1 && in[0].dtype() == dtype::i32) return {};
    return ppipe::detail::concat("takes one i32 tensor [rows] of token ids but got ",
                                 ppipe::to_string(std::span<const shape>(in)),
                                 "; give it the tokens as one rank-1 tensor of shape({rows}, dtype::i32)");
  }
  /// @brief [rows, d_model] for the token ids [rows]; throws ppipe::error (invalid_argument) for
  /// any other input.
  /// @param in the shapes of the layer's input
  /// @return the shapes of its output
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    return detail::rowwise_shapes(*this, in, config_.d_model);
  }
  /// @brief None: the embedding keeps no state per sequence.
  /// @return no shapes
  [[nodiscard]] std::vector<shape> state_shapes(int /*capacity*/) const { return {}; }

  /// @brief The input's rows as one sequence at positions 0..rows-1. Throws ppipe::error
  /// (invalid_argument) for more rows than max_positions or a token id outside [0, vocab).
  /// @param in the token ids, one i32 tensor [rows]
  /// @param out [rows, d_model], allocated in output_shapes()' shapes
  void forward(const layer_context& /*ctx*/, const payload& in, payload& out) const {
    const std::size_t rows = detail::check_io(*this, in, out);
    if (rows > detail::to_size(config_.max_positions)) {
      ppipe::detail::fail(errc::invalid_argument, describe(), ": ", rows, " rows are positions 0..", rows - 1,
                          " of one sequence but the model has ", config_.max_positions,
                          " positions; give at most max_positions rows (or build it with more)");
    }
    check_tokens(in[0].data<std::int32_t>(), 0, rows);
    embed(in[0].data<std::int32_t>(), out[0].data(), rows, 0);
  }

  /// @brief The rows of a generation batch: sequence s's row j is at position s.position + j.
  /// Throws ppipe::error (invalid_argument), before writing anything, when the sequences' rows do
  /// not add up to the input's, a sequence would pass max_positions, or a token id is out of range.
  /// @param ctx the batch's sequences
  /// @param in the sequences' new token ids, stacked in order
  /// @param out [rows, d_model], allocated in output_shapes()' shapes
  void forward(const generation_context<host_tensor>& ctx, const payload& in, payload& out) const {
    const std::size_t rows = detail::check_io(*this, in, out);
    detail::check_batch(*this, ctx, rows);
    const std::int32_t* ids = in[0].data<std::int32_t>();
    for (std::size_t first = 0; const sequence_view<host_tensor>& seq : ctx.sequences) {
      detail::check_positions(*this, seq, first);
      check_tokens(ids, first, detail::to_size(seq.rows));
      first += detail::to_size(seq.rows);
    }
    const std::size_t d = detail::to_size(config_.d_model);
    for (std::size_t first = 0; const sequence_view<host_tensor>& seq : ctx.sequences) {
      embed(ids + first, out[0].data() + first * d, detail::to_size(seq.rows), detail::to_size(seq.position));
      first += detail::to_size(seq.rows);
    }
  }

  /// @brief A rough cost for `rows` rows, for the partitioner (see detail::row_cost()): d_model
  /// flops a row and the tables' bytes.
  /// @param rows the rows of a call (1 gives per-row figures, which balance the same)
  /// @return the cost
  [[nodiscard]] layer_cost cost(std::int64_t rows = 1) const {
    const double d = config_.d_model;
    return detail::row_cost(rows, d, token_.size() + position_.size(), d);
  }

 private:
  /// Checks that rows [first, first + rows) of the input are token ids.
  void check_tokens(const std::int32_t* ids, std::size_t first, std::size_t rows) const {
    for (std::size_t r = first; r < first + rows; ++r) {
      const std::int32_t id = ids[r];
      if (id < 0 || id >= config_.vocab) {
        ppipe::detail::fail(errc::invalid_argument, describe(), ": row ", r, " holds token id ", id,
                            ", which is not in [0, ", config_.vocab, "); give token ids below the vocabulary size");
      }
    }
  }

  void embed(const std::int32_t* ids, float* y, std::size_t rows, std::size_t position) const {
    const std::size_t d = detail::to_size(config_.d_model);
    for (std::size_t r = 0; r < rows; ++r) {
      const float* token = token_.data() + static_cast<std::size_t>(ids[r]) * d;
      const float* place = position_.data() + (position + r) * d;
      for (std::size_t k = 0; k < d; ++k) y[r * d + k] = token[k] + place[k];
    }
  }

  transformer_config config_;
  std::vector<float> token_;     // [vocab, d_model]
  std::vector<float> position_;  // [max_positions, d_model]
};

}  // namespace ppipe::layers
