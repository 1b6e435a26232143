#pragma once
/// @file
/// @brief What ppipe needs from a model to generate tokens: per-sequence state (a KV cache) that
/// each stage keeps for its own layers, and a forward that sees which rows belong to which sequence.

#include <concepts>
#include <cstddef>
#include <span>
#include <vector>

#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe {

/// @brief One sequence's part of a generation batch: its id, the position of its first new row,
/// and how many new rows it brings.
struct sequence_step {
  int id = 0;        ///< the request's index in the generate() call
  int position = 0;  ///< tokens already in its state, where its first new row goes (0: prompt)
  int rows = 0;      ///< its new rows: the prompt's length, then 1
  /// @brief Compares member by member.
  /// @return whether both steps have the same id, position and rows
  friend bool operator==(const sequence_step&, const sequence_step&) = default;
};

/// @brief One sequence's rows in a generation batch, as one layer sees them.
///
/// A generation batch stacks the new rows of several sequences along dimension 0, in the order of
/// the context's `sequences`: a sequence joining the batch brings its whole prompt (prefill, at
/// position 0), one that is decoding brings its last generated token (one row, at the position
/// after the tokens already in its cache).
/// @tparam Tensor the tensor type of the pipeline's payloads
template <class Tensor>
struct sequence_view {
  int id = 0;        ///< the request's index in the generate() call
  int position = 0;  ///< tokens already in the cache: the position of this sequence's first new row
  int rows = 0;      ///< new rows of this sequence in the batch
  /// This layer's state for the sequence, allocated by ppipe in the shapes of
  /// state_shapes(layer, capacity) and zero-filled on admission; empty for a stateless layer.
  basic_payload<Tensor>* state = nullptr;
};

/// @brief The layer_context of a generation forward (mode == pass_mode::inference): which rows of
/// the batch belong to which sequence, with each sequence's state for the layer being called.
/// @tparam Tensor the tensor type of the pipeline's payloads
/// @tparam Device the backend's device model, as in basic_layer_context
template <class Tensor, class Device = inline_device>
struct generation_context : basic_layer_context<Device> {
  /// @brief The batch's sequences, in the order of their rows, each with its state for this layer.
  /// The views are valid only during the forward call that gets the context.
  std::span<const sequence_view<Tensor>> sequences;
};

/// @brief `std::vector<shape> state_shapes(int layer, int capacity) const`: the state layer `layer`
/// keeps for one sequence of up to `capacity` tokens (its K and V cache); empty for a layer that
/// keeps none. ppipe allocates it when a sequence is admitted and frees it when the sequence ends,
/// on the stage that holds the layer, and counts its bytes against the stage's cache budget.
/// @tparam M the model type
template <class M>
concept model_has_state = requires(const M& m, int layer, int capacity) {
  { m.state_shapes(layer, capacity) } -> std::convertible_to<std::vector<shape>>;
};

/// @brief `void forward(int layer, const generation_context<Tensor>&, const P& in, P& out)`. A
/// model whose layers keep no state may take the plain layer_context overload, which a
/// generation_context converts to; a model with a cache reads ctx.sequences.
/// @tparam M the model type
/// @tparam Tensor the tensor type of the pipeline's payloads
template <class M, class Tensor>
concept model_has_generation_forward = requires(M& m, int layer, const generation_context<Tensor>& ctx,
                                                const basic_payload<Tensor>& in, basic_payload<Tensor>& out) {
  m.forward(layer, ctx, in, out);
};

/// @brief A model ppipe can generate tokens with: a model (ppipe::model) with per-sequence state
/// and a generation forward. The first stage receives one i32 tensor of shape [rows] holding token
/// ids (`shape({rows}, dtype::i32)`); the last layer's output row i is what the sampler reads for
/// row i (logits, for the layer kit's greedy sampler).
/// @tparam M the model type
/// @tparam Tensor the tensor type of the pipeline's payloads
template <class M, class Tensor = host_tensor>
concept generative_model = model<M, Tensor> && model_has_state<M> && model_has_generation_forward<M, Tensor>;

namespace detail {

/// One readable message per missing member of generative_model.
template <class M, class Tensor>
constexpr bool check_generative_model() {
  static_assert(model_has_state<M>,
                "ppipe: generation needs `std::vector<ppipe::shape> state_shapes(int layer, int capacity) const` "
                "in the model: the per-sequence state (KV cache) of each layer, empty for stateless layers");
  static_assert(model_has_generation_forward<M, Tensor>,
                "ppipe: generation needs `void forward(int layer, const ppipe::generation_context<Tensor>&, "
                "const payload& in, payload& out)` in the model");
  return true;
}

/// The bytes of one sequence's state for layers [first, end) at `capacity` tokens.
template <class M, class Tensor>
std::size_t state_bytes(const M& m, int first, int end, int capacity) {
  std::size_t bytes = 0;
  for (int layer = first; layer < end; ++layer) {
    for (const shape& s : m.state_shapes(layer, capacity)) bytes += s.bytes();
  }
  return bytes;
}

}  // namespace detail
}  // namespace ppipe
