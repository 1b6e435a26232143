#pragma once
/// @file
/// @brief ppipe::layers::decoder, the CPU layer kit's small decoder-only transformer: a
/// ppipe::layer_stack of its embedding, attention, MLP and head layers that is a generative model
/// (ppipe::generative_model) with a per-sequence KV cache, for token-generation tests and examples.

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/layers/attention.hpp"
#include "ppipe/layers/embedding.hpp"
#include "ppipe/layers/lm_head.hpp"
#include "ppipe/layers/mlp_block.hpp"
#include "ppipe/layers/transformer_parts.hpp"
#include "ppipe/model/layer_stack.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::layers {

/// @brief One layer of a decoder's blocks: the attention or the MLP half of a block.
using decoder_block_layer = std::variant<attention, mlp_block>;

/// @brief The layer_stack a decoder is: its embedding, its blocks' layers, its head.
using decoder_stack = layer_stack<embedding, std::vector<decoder_block_layer>, lm_head>;

/// @brief A decoder-only transformer over token ids, split into layers for a pipeline:
///
/// - layer 0, the embedding (ppipe::layers::embedding): one i32 tensor [rows] of token ids ->
///   [rows, d_model], the token's embedding plus its position's;
/// - for block b, layer 1 + 2b: causal attention (ppipe::layers::attention), which keeps each
///   sequence's keys and values (state_shapes());
/// - for block b, layer 2 + 2b: the MLP (ppipe::layers::mlp_block);
/// - the last layer, 1 + 2 blocks: the final LayerNorm and the head (ppipe::layers::lm_head),
///   [rows, d_model] -> [rows, vocab] logits (ppipe::layers::greedy() samples them).
///
/// The plain forward takes its whole input as one sequence at positions 0..rows-1 without a cache;
/// the generation forward reads which rows belong to which sequence from its generation_context.
///
/// Numerics: every row is computed on its own, in float, in a fixed loop order, and attention
/// always reads keys and values from a cache buffer (the sequence's state, or a temporary in the
/// plain forward) after the call's new rows were written there. So an output row has the same bits
/// whichever other rows or sequences share its batch, however its prompt was split into calls, and
/// whether its keys were computed in this call or an earlier one.
///
/// Threads: the model is immutable after construction and every call works in its own locals, so
/// any calls may run at the same time, provided two calls do not write the same sequence's state.
class decoder : public decoder_stack {
 public:
  /// @brief A decoder of the sizes in `config`, its weights drawn from `config.seed` (splitmix64,
  /// the same on every platform).
  /// @param config the sizes; throws ppipe::error (invalid_argument) for a size < 1 or a d_model
  /// that is not a multiple of heads
  explicit decoder(const transformer_config& config = {})
      : decoder_stack(build(detail::validated(config))), config_(config) {}

  /// @brief The sizes the model was built with.
  /// @return the transformer_config given to the constructor
  [[nodiscard]] const transformer_config& config() const noexcept { return config_; }

  /// @brief "embedding", "block 1 attention", "block 1 mlp" or "head", for messages.
  /// @param layer the layer's index
  /// @return the layer's describe()
  [[nodiscard]] std::string describe(int layer) const { return decoder_stack::describe(layer); }

  /// @brief The shapes layer `layer` makes from `in`: [rows, d_model] from the embedding's [rows]
  /// and the blocks' [rows, d_model], [rows, vocab] from the head's [rows, d_model].
  /// @param layer the layer's index
  /// @param in the shapes of the layer's input
  /// @return the shapes of its output; throws ppipe::error (invalid_argument) naming the layer,
  /// the shapes it got and what it takes
  [[nodiscard]] std::vector<shape> output_shapes(int layer, const std::vector<shape>& in) const {
    std::vector<shape> out;
    visit(layer, [&](const auto& l) {
      if (const std::string problem = l.shape_problem(in); !problem.empty()) {
        ppipe::detail::fail(errc::invalid_argument, "decoder layer ", layer, " (", l.describe(), ") ", problem);
      }
      out = l.output_shapes(in);
    });
    return out;
  }

  /// @brief The state layer `layer` keeps per sequence of up to `capacity` tokens.
  /// @param layer the layer's index
  /// @param capacity the most tokens a sequence may hold (>= 0)
  /// @return the keys [capacity, d_model] and values [capacity, d_model] of an attention layer;
  /// none for the others
  [[nodiscard]] std::vector<shape> state_shapes(int layer, int capacity) const {
    return decoder_stack::state_shapes(layer, capacity);
  }

  /// @brief Layer `layer` over one sequence: the input's rows are its tokens at positions
  /// 0..rows-1, attended causally without a cache.
  /// @param layer the layer's index
  /// @param ctx the call's context
  /// @param in the layer's input: token ids [rows] (i32) for the embedding, else [rows, d_model]
  /// @param out the layer's output, allocated in output_shapes()' shapes
  void forward(int layer, const layer_context& ctx, const payload& in, payload& out) const {
    run(layer, ctx, in, out);
  }

  /// @brief Layer `layer` over a generation batch: the input's rows are ctx.sequences' new rows,
  /// stacked in order; sequence s's row j is at position s.position + j, and an attention layer
  /// keeps the sequence's keys and values in *s.state, in state_shapes()' shapes. Throws
  /// ppipe::error (invalid_argument), before writing anything, when the sequences' rows do not add
  /// up to the input's, a sequence would pass max_positions or its state's capacity, or an
  /// attention layer's state is missing or not in state_shapes()'s shapes.
  /// @param layer the layer's index
  /// @param ctx the batch's sequences, with each one's state for this layer
  /// @param in the layer's input, the sequences' new rows stacked in order
  /// @param out the layer's output, allocated in output_shapes()' shapes
  void forward(int layer, const generation_context<host_tensor>& ctx, const payload& in, payload& out) const {
    run(layer, ctx, in, out);
  }

  /// @brief A rough forward cost of layer `layer` for `rows` rows, for the partitioner to balance:
  /// flops (a multiply-add counts 2), the backward nominally twice that (the decoder does not
  /// train), parameter bytes, and the bytes of the output and working rows.
  /// @param layer the layer's index
  /// @param rows the rows of a call (1 gives per-row figures, which balance the same)
  /// @return the layer's cost(rows)
  [[nodiscard]] layer_cost cost(int layer, std::int64_t rows = 1) const {
    layer_cost c;
    visit(layer, [&](const auto& l) { c = l.cost(rows); });
    return c;
  }

 private:
  // The weights follow from one splitmix64 stream drawn layer by layer in model order, so the
  // layers are made one statement at a time here rather than as constructor arguments.
  static decoder_stack build(const transformer_config& config) {
    std::uint64_t seeds = config.seed;
    embedding first(config, seeds);
    std::vector<decoder_block_layer> blocks;
    blocks.reserve(2 * detail::to_size(config.blocks));
    for (int b = 0; b < config.blocks; ++b) {
      blocks.emplace_back(std::in_place_type<attention>, config, b, seeds);
      blocks.emplace_back(std::in_place_type<mlp_block>, config, b, seeds);
    }
    lm_head last(config, seeds);
    return decoder_stack(std::move(first), std::move(blocks), std::move(last));
  }

  // A layer names itself in its errors; the decoder adds where in the model it is.
  template <class Context>
  void run(int layer, const Context& ctx, const payload& in, payload& out) const {
    visit(layer, [&](const auto& l) {
      try {
        l.forward(ctx, in, out);
      } catch (const error& e) {
        ppipe::detail::fail(e.code(), "decoder layer ", layer, ", ", e.message());
      }
    });
  }

  transformer_config config_;
};

}  // namespace ppipe::layers
