#pragma once
/// @file
/// @brief The layer concept: one block of a model, written without layer indices. A
/// ppipe::layer_stack composes layers of different types into a Model.

#include <concepts>
#include <string>
#include <type_traits>
#include <vector>

#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/tensor/tensor_view.hpp"

namespace ppipe {

// The parts of the layer concept, one requirement each, so that a type missing one is told which.

/// @brief `std::vector<shape> output_shapes(const std::vector<shape>& in) const`: the shapes the
/// layer makes from inputs of shapes `in` (it throws when it cannot take them).
template <class L>
concept layer_has_shapes = requires(const L& l, const std::vector<shape>& in) {
  { l.output_shapes(in) } -> std::convertible_to<std::vector<shape>>;
};

/// @brief `void forward(const Context& ctx, const P& in, P& out)`: fills `out`, which ppipe
/// allocated in output_shapes()' shapes.
template <class L, class Tensor = host_tensor, class Context = host_layer_context>
concept layer_has_forward = requires(L& l, const Context& ctx, const basic_payload<Tensor>& in,
                                     basic_payload<Tensor>& out) { l.forward(ctx, in, out); };

/// @brief `void backward(const Context& ctx, const P& in, const P& out, const P& grad_out, P& grad_in)`:
/// writes the input's gradient into `grad_in` (empty when nobody needs it) and adds the weights'
/// gradients to the layer's accumulators.
template <class L, class Tensor = host_tensor, class Context = host_layer_context>
concept layer_has_backward = requires(L& l, const Context& ctx, const basic_payload<Tensor>& in,
                                      basic_payload<Tensor>& grad_in) { l.backward(ctx, in, in, in, grad_in); };

/// @brief The optional split of backward for zero-bubble schedules: `backward_input(ctx, in, out,
/// grad_out, grad_in)` and `backward_weight(ctx, in, out, grad_out)`.
template <class L, class Tensor = host_tensor, class Context = host_layer_context>
concept layer_has_split_backward = requires(L& l, const Context& ctx, const basic_payload<Tensor>& in,
                                            basic_payload<Tensor>& grad_in) {
  l.backward_input(ctx, in, in, in, grad_in);
  l.backward_weight(ctx, in, in, in);
};

/// @brief The optional `layer_cost cost() const`: what the partitioner balances.
template <class L>
concept layer_has_cost = requires(const L& l) {
  { l.cost() } -> std::convertible_to<layer_cost>;
};

/// @brief The optional `void for_each_parameter(F f)`, calling `f(tensor_view value,
/// tensor_view gradient)` for each of the layer's parameters in a fixed order.
template <class L>
concept layer_has_parameters = requires(L& l, void (*f)(tensor_view, tensor_view)) { l.for_each_parameter(f); };

/// @brief The optional `void materialize(const Context& ctx)`: allocates and initializes the
/// layer's weights on the stage's device. ppipe calls it only for the layers of the stages this
/// process runs, so a process holds only its own weights (see docs/runtime.md).
template <class L, class Context = host_layer_context>
concept layer_has_materialize = requires(L& l, const Context& ctx) { l.materialize(ctx); };

/// @brief The optional `std::vector<shape> state_shapes(int capacity) const`: what the layer keeps
/// for one sequence of up to `capacity` tokens while generating (its K and V cache), empty for a
/// layer that keeps none. A stack whose every layer has it is a generative model when every layer
/// also takes a ppipe::generation_context in forward, from which it reads each sequence's state
/// (docs/inference.md); a layer that keeps none may take that context as a plain layer context.
template <class L>
concept layer_has_state = requires(const L& l, int capacity) {
  { l.state_shapes(capacity) } -> std::convertible_to<std::vector<shape>>;
};

/// @brief The optional `std::string describe() const`, for messages ("linear 16->4").
template <class L>
concept layer_has_describe = requires(const L& l) {
  { l.describe() } -> std::convertible_to<std::string>;
};

/// @brief A layer ppipe can run forward: shapes and forward.
template <class L, class Tensor = host_tensor, class Context = host_layer_context>
concept layer = layer_has_shapes<L> && layer_has_forward<L, Tensor, Context>;

/// @brief A layer ppipe can train: a layer with a backward.
template <class L, class Tensor = host_tensor, class Context = host_layer_context>
concept trainable_layer = layer<L, Tensor, Context> && layer_has_backward<L, Tensor, Context>;

namespace detail {

// A forward that compiles with a const output cannot write into it: it takes `out` by value or
// by const reference, and the tensors ppipe allocated would stay as they were.
template <class L, class Tensor, class Context>
concept forward_output_not_writable = requires(L& l, const Context& ctx, const basic_payload<Tensor>& p) {
  l.forward(ctx, p, p);
};
template <class L, class Tensor, class Context>
concept backward_grad_in_not_writable = requires(L& l, const Context& ctx, const basic_payload<Tensor>& p) {
  l.backward(ctx, p, p, p, p);
};
template <class L, class Tensor, class Context>
concept backward_input_grad_in_not_writable = requires(L& l, const Context& ctx, const basic_payload<Tensor>& p) {
  l.backward_input(ctx, p, p, p, p);
};

/// One readable message per missing member or misuse of layer type L.
template <class L, class Tensor, class Context, bool Training>
constexpr bool check_layer() {
  static_assert(layer_has_shapes<L>,
                "ppipe: a layer needs `std::vector<ppipe::shape> output_shapes(const std::vector<ppipe::shape>& in) "
                "const`, the shapes it makes from inputs of shapes `in`");
  static_assert(layer_has_forward<L, Tensor, Context>,
                "ppipe: a layer needs `void forward(const ppipe::layer_context& ctx, const payload& in, payload& out)`");
  if constexpr (Training) {
    static_assert(layer_has_backward<L, Tensor, Context>,
                  "ppipe: training needs `void backward(const ppipe::layer_context& ctx, const payload& in, const "
                  "payload& out, const payload& grad_out, payload& grad_in)` in every layer");
  }
  return check_writable<forward_output_not_writable<L, Tensor, Context>,
                        Training && (backward_grad_in_not_writable<L, Tensor, Context> ||
                                     backward_input_grad_in_not_writable<L, Tensor, Context>)>();
}

}  // namespace detail
}  // namespace ppipe
