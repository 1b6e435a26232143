#pragma once
/// @file
/// @brief ppipe::layers::attention, the kit decoder's causal multi-head attention layer, which
/// keeps each sequence's keys and values (its KV cache) during generation.

#include <cmath>
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

/// @brief [rows, d_model] -> x + Wo MHA(LayerNorm(x)), causal, with `heads` heads: the attention
/// half of a pre-norm transformer block.
///
/// Its state per sequence is the keys and values of the tokens seen (state_shapes()). The plain
/// forward takes its input as one sequence at positions 0..rows-1, in a cache of its own; the
/// generation forward writes each sequence's new keys and values into that sequence's state. Either
/// way attention reads them back from the cache after writing, so a row's bits do not depend on
/// whether its keys were computed in this call or an earlier one.
///
/// Threads: immutable after construction; calls work in their own locals, so any calls may run at
/// the same time provided two of them do not write the same sequence's state.
class attention {
 public:
  /// @brief The attention layer of block `block` of a decoder of sizes `config`.
  /// @param config the decoder's sizes; throws ppipe::error (invalid_argument) for a size out of range
  /// @param block the block's index, for describe()
  /// @param seeds a splitmix64 state the layer draws one seed from per part (the norm, then the
  /// q, k, v and o projections), so that layers made in order from one state get the decoder's weights
  attention(const transformer_config& config, int block, std::uint64_t& seeds)
      : config_(detail::validated(config)), block_(block) {
    const int d = config_.d_model;
    // One part per statement: the seeds are drawn in this order.
    norm_ = detail::layer_norm(d, detail::splitmix64(seeds));
    q_ = detail::dense(d, d, detail::splitmix64(seeds));
    k_ = detail::dense(d, d, detail::splitmix64(seeds));
    v_ = detail::dense(d, d, detail::splitmix64(seeds));
    o_ = detail::dense(d, d, detail::splitmix64(seeds));
  }

  /// @brief The sizes the layer was made with.
  /// @return the transformer_config given to the constructor
  [[nodiscard]] const transformer_config& config() const noexcept { return config_; }
  /// @brief "block 1 attention", for messages.
  /// @return the block number and "attention"
  [[nodiscard]] std::string describe() const { return ppipe::detail::concat("block ", block_, " attention"); }

  /// @brief What is wrong with input shapes `in`, or "" when the layer takes them; the text has no
  /// subject, so that a model can put the layer's index in front.
  /// @param in the shapes of the layer's input
  /// @return the problem, or ""
  [[nodiscard]] std::string shape_problem(const std::vector<shape>& in) const {
    return detail::width_problem(in, config_.d_model);
  }
  /// @brief [rows, d_model] for [rows, d_model]; throws ppipe::error (invalid_argument) for any
  /// other input.
  /// @param in the shapes of the layer's input
  /// @return the shapes of its output
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    return detail::rowwise_shapes(*this, in, config_.d_model);
  }
  /// @brief The keys [capacity, d_model] and values [capacity, d_model] of one sequence of up to
  /// `capacity` tokens.
  /// @param capacity the most tokens the sequence may hold
  /// @return the keys' and the values' shapes
  [[nodiscard]] std::vector<shape> state_shapes(int capacity) const {
    return {shape{capacity, config_.d_model}, shape{capacity, config_.d_model}};
  }

  /// @brief The input's rows as one sequence at positions 0..rows-1, attended causally.
  /// @param in the residual stream [rows, d_model]
  /// @param out [rows, d_model], allocated in output_shapes()' shapes
  void forward(const layer_context& /*ctx*/, const payload& in, payload& out) const {
    const std::size_t rows = detail::check_io(*this, in, out);
    const std::size_t d = detail::to_size(config_.d_model);
    std::vector<float> keys(rows * d), values(rows * d);
    attend(in[0].data(), out[0].data(), rows, 0, keys.data(), values.data());
  }

  /// @brief The rows of a generation batch: sequence s's row j is at position s.position + j. It
  /// writes the new rows' keys and values into (*s.state)[0] and [1] at those positions, then lets
  /// row j attend over cache positions 0 .. s.position + j. Throws ppipe::error (invalid_argument),
  /// before writing anything, when the sequences' rows do not add up to the input's, a sequence
  /// would pass max_positions or its state's capacity, or a state is missing or not in
  /// state_shapes()' shapes.
  /// @param ctx the batch's sequences, with each one's keys and values
  /// @param in the sequences' new rows of the residual stream, stacked in order
  /// @param out [rows, d_model], allocated in output_shapes()' shapes
  void forward(const generation_context<host_tensor>& ctx, const payload& in, payload& out) const {
    const std::size_t rows = detail::check_io(*this, in, out);
    detail::check_batch(*this, ctx, rows);
    for (std::size_t s = 0, first = 0; s < ctx.sequences.size(); ++s) {
      detail::check_positions(*this, ctx.sequences[s], first);
      check_state(ctx.sequences[s], s);
      first += detail::to_size(ctx.sequences[s].rows);
    }
    const std::size_t d = detail::to_size(config_.d_model);
    for (std::size_t first = 0; const sequence_view<host_tensor>& seq : ctx.sequences) {
      attend(in[0].data() + first * d, out[0].data() + first * d, detail::to_size(seq.rows),
             detail::to_size(seq.position), (*seq.state)[0].data(), (*seq.state)[1].data());
      first += detail::to_size(seq.rows);
    }
  }

  /// @brief A rough cost for `rows` rows, for the partitioner (see detail::row_cost()): the four
  /// projections and the norm (attention itself grows with the position), the weights' bytes, and
  /// the output and working rows.
  /// @param rows the rows of a call (1 gives per-row figures, which balance the same)
  /// @return the cost
  [[nodiscard]] layer_cost cost(std::int64_t rows = 1) const {
    const double d = config_.d_model;
    return detail::row_cost(rows, 8.0 * d * d + 8.0 * d,
                            norm_.parameters() + q_.parameters() + k_.parameters() + v_.parameters() + o_.parameters(),
                            4.0 * d);
  }

 private:
  void check_state(const sequence_view<host_tensor>& seq, std::size_t entry) const {
    const payload* state = seq.state;
    const bool shaped = state != nullptr && state->size() == 2 && (*state)[0].shape().rank() == 2 &&
                        (*state)[0].shape()[1] == config_.d_model && (*state)[1].shape() == (*state)[0].shape();
    if (!shaped) {
      const std::string got = state == nullptr ? std::string("no state (null)")
                                               : ppipe::to_string(std::span<const shape>(shapes_of(*state)));
      ppipe::detail::fail(errc::invalid_argument, describe(), ": sequence ", seq.id, " (entry ", entry, ") has ",
                          got, " but the layer needs its keys and values, [capacity, ", config_.d_model,
                          "] each; allocate them from state_shapes() for the sequence's capacity");
    }
    const std::int64_t capacity = (*state)[0].shape()[0];
    if (seq.position + seq.rows > capacity) {
      ppipe::detail::fail(errc::invalid_argument, describe(), ": sequence ", seq.id, " at position ", seq.position,
                          " with ", seq.rows, " new rows needs ", seq.position + seq.rows,
                          " cache rows but its state holds ", capacity,
                          "; allocate the state with state_shapes() for a capacity >= ", seq.position + seq.rows);
    }
  }

  /// One sequence's rows: x and y are [rows, d], the sequence's rows at positions
  /// position..position+rows-1; keys and values hold its cache (at least position + rows rows of
  /// d), rows 0..position-1 already filled.
  void attend(const float* x, float* y, std::size_t rows, std::size_t position, float* keys, float* values) const {
    const std::size_t d = detail::to_size(config_.d_model);
    const std::size_t heads = detail::to_size(config_.heads);
    const std::size_t hd = d / heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::vector<float> normed(d), queries(rows * d), mixed(d), weights(position + rows);
    // Every new row's keys and values go into the cache first, so that attention below reads
    // them from there whether they were written by this call or an earlier one.
    for (std::size_t r = 0; r < rows; ++r) {
      norm_.apply(x + r * d, normed.data());
      q_.apply(normed.data(), queries.data() + r * d);
      k_.apply(normed.data(), keys + (position + r) * d);
      v_.apply(normed.data(), values + (position + r) * d);
    }
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t seen = position + r + 1;  // causal: positions 0 .. position + r
      for (std::size_t h = 0; h < heads; ++h) {
        const float* q = queries.data() + r * d + h * hd;
        float top = 0.0f;
        for (std::size_t i = 0; i < seen; ++i) {
          weights[i] = detail::dot_lanes(q, keys + i * d + h * hd, hd) * scale;
          if (i == 0 || weights[i] > top) top = weights[i];
        }
        float total = 0.0f;
        for (std::size_t i = 0; i < seen; ++i) {
          weights[i] = std::exp(weights[i] - top);
          total += weights[i];
        }
        float* acc = mixed.data() + h * hd;
        for (std::size_t k = 0; k < hd; ++k) acc[k] = 0.0f;
        for (std::size_t i = 0; i < seen; ++i) {
          const float w = weights[i];
          const float* v = values + i * d + h * hd;
          for (std::size_t k = 0; k < hd; ++k) acc[k] += w * v[k];
        }
        const float inv = 1.0f / total;
        for (std::size_t k = 0; k < hd; ++k) acc[k] *= inv;
      }
      o_.apply_residual(mixed.data(), y + r * d, x + r * d);
    }
  }

  transformer_config config_;
  int block_ = 0;
  detail::layer_norm norm_;
  detail::dense q_, k_, v_, o_;
};

}  // namespace ppipe::layers
