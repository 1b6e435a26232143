#pragma once
/// @file
/// @brief The Model concept: what ppipe needs from a user's layer stack, and the loss and optimizer
/// hooks that go with it.

#include <concepts>
#include <functional>
#include <span>
#include <type_traits>
#include <vector>

#include "ppipe/partition/problem.hpp"
#include "ppipe/runtime/tensor.hpp"

namespace ppipe {

/// @brief Whether a forward is part of a training step (its activations are kept for the
/// backward) or of inference (nothing is kept).
enum class pass_mode : unsigned char { training, inference };

/// @brief What a layer call is part of: the stage running it, the microbatch, and the pass.
/// A layer that keeps per-request state (a KV cache) finds its request through `microbatch`.
struct layer_context {
  int stage = 0;
  int microbatch = 0;
  pass_mode mode = pass_mode::training;
};

/// @brief Which stage an optimizer hook runs for: the stage, its rank and its layers
/// [first_layer, end_layer).
struct stage_info {
  int stage = 0;
  int rank = 0;
  int first_layer = 0;
  int end_layer = 0;
};

// The parts of the Model concept, one requirement each, so that a type missing one is told which.

/// @brief `int num_layers() const`: how many layers the model has.
template <class M>
concept model_has_layers = requires(const M& m) {
  { m.num_layers() } -> std::convertible_to<int>;
};

/// @brief `std::vector<shape> output_shapes(int layer, const std::vector<shape>& in) const`: the
/// shapes layer `layer` produces from inputs of shapes `in`; it throws (any exception) when it
/// cannot take `in`. ppipe allocates every output and gradient buffer from these shapes.
template <class M>
concept model_has_shapes = requires(const M& m, int layer, const std::vector<shape>& in) {
  { m.output_shapes(layer, in) } -> std::convertible_to<std::vector<shape>>;
};

/// @brief `void forward(int layer, const layer_context&, const P& in, P& out)`: fills `out`
/// (allocated by ppipe with output_shapes()) from `in`. In training it may keep what its backward
/// needs beyond `in` and `out` keyed by ctx.microbatch, but most layers need nothing more.
template <class M, class Tensor>
concept model_has_forward = requires(M& m, int layer, const layer_context& ctx,
                                     const basic_payload<Tensor>& in, basic_payload<Tensor>& out) {
  m.forward(layer, ctx, in, out);
};

/// @brief `void backward(int layer, const layer_context&, const P& in, const P& out,
/// const P& grad_out, P& grad_in)`: writes the gradient of the layer's input into `grad_in`
/// (allocated and zeroed by ppipe; empty when nobody needs it, for the model's first layer) and
/// adds the gradient of the layer's weights to the model's gradient accumulators.
template <class M, class Tensor>
concept model_has_backward = requires(M& m, int layer, const layer_context& ctx,
                                      const basic_payload<Tensor>& in, basic_payload<Tensor>& grad_in) {
  m.backward(layer, ctx, in, in, in, grad_in);
};

/// @brief The optional split of backward for zero-bubble schedules:
/// `backward_input(layer, ctx, in, out, grad_out, grad_in)` (input gradient only) and
/// `backward_weight(layer, ctx, in, out, grad_out)` (weight gradient only).
template <class M, class Tensor>
concept model_has_split_backward = requires(M& m, int layer, const layer_context& ctx,
                                            const basic_payload<Tensor>& in, basic_payload<Tensor>& grad_in) {
  m.backward_input(layer, ctx, in, in, in, grad_in);
  m.backward_weight(layer, ctx, in, in, in);
};

/// @brief The optional `layer_cost cost(int layer) const`: what the partitioner balances. Without
/// it every layer costs the same.
template <class M>
concept model_has_costs = requires(const M& m, int layer) {
  { m.cost(layer) } -> std::convertible_to<layer_cost>;
};

/// @brief The optional `void for_each_parameter(int first, int end, F f)`, calling
/// `f(std::span<float> value, std::span<float> gradient)` for every parameter of layers
/// [first, end) in a fixed order (ppipe::layers::sequential has it). With data-parallel replicas
/// ppipe averages the gradients through it after every step.
template <class M>
concept model_has_parameters = requires(M& m, int layer, void (*f)(std::span<float>, std::span<float>)) {
  m.for_each_parameter(layer, layer, f);
};

/// @brief A model ppipe can run forward (inference): layers, shapes and forward.
template <class M, class Tensor = host_tensor>
concept model = model_has_layers<M> && model_has_shapes<M> && model_has_forward<M, Tensor>;

/// @brief A model ppipe can train: a model with a backward.
template <class M, class Tensor = host_tensor>
concept trainable_model = model<M, Tensor> && model_has_backward<M, Tensor>;

/// @brief The loss on the last stage: `loss(output, target, grad_output, scale)` returns the
/// microbatch's loss and writes scale × d(loss)/d(output) into `grad_output` (allocated and zeroed
/// by ppipe in the output's shapes). ppipe passes each microbatch its share of the batch as
/// `scale` (rows / batch rows), so that a mean-reduced loss accumulates the full batch's gradient.
template <class Tensor = host_tensor>
using loss_function = std::function<double(const basic_payload<Tensor>& output, const basic_payload<Tensor>& target,
                                           basic_payload<Tensor>& grad_output, double scale)>;

/// @brief Runs once per stage after every train_step, on the stage's rank, once the stage's
/// gradients are complete: the place for the optimizer update and zeroing the gradients.
using optimizer_hook = std::function<void(const stage_info&)>;

namespace detail {

/// Turns an unsatisfied Model concept into one readable message per missing member.
template <class M, class Tensor, bool Training>
constexpr bool check_model() {
  static_assert(model_has_layers<M>,
                "ppipe: the model needs `int num_layers() const`, the number of layers to split into stages");
  static_assert(model_has_shapes<M>,
                "ppipe: the model needs `std::vector<ppipe::shape> output_shapes(int layer, "
                "const std::vector<ppipe::shape>& in) const`, the shapes layer `layer` makes from `in`");
  static_assert(model_has_forward<M, Tensor>,
                "ppipe: the model needs `void forward(int layer, const ppipe::layer_context&, "
                "const payload& in, payload& out)`");
  if constexpr (Training) {
    static_assert(model_has_backward<M, Tensor>,
                  "ppipe: training needs `void backward(int layer, const ppipe::layer_context&, const payload& in, "
                  "const payload& out, const payload& grad_out, payload& grad_in)` in the model");
  }
  return true;
}

}  // namespace detail
}  // namespace ppipe
