#pragma once
/// @file
/// @brief ppipe::layers::sgd, plain stochastic gradient descent over a model's layers (a sequential
/// model, or any layer_stack of the kit's layers).

#include <cmath>
#include <cstddef>
#include <span>

#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor_view.hpp"

namespace ppipe::layers {
inline namespace PPIPE_LAYERS_KERNELS {

/// @brief Plain SGD: p -= learning_rate * g for every parameter of the layers it is given, then
/// their gradients are zeroed for the next step. It works on a range of layers so that each
/// pipeline stage can update its own layers from ppipe's optimizer hook:
/// `[&](const ppipe::stage_info& s) { opt.step(model, s); }`.
class sgd {
 public:
  /// @brief An optimizer with the given learning rate (finite and >= 0).
  /// @param learning_rate the step size, finite and >= 0
  /// @throws ppipe::error (invalid_argument) when learning_rate is negative, infinite or NaN.
  explicit sgd(float learning_rate) : learning_rate_(learning_rate) {
    if (!std::isfinite(learning_rate) || learning_rate < 0.0f) {
      ppipe::detail::fail(errc::invalid_argument, "sgd learning rate ", learning_rate,
                          " is not a finite number >= 0; give e.g. 0.01");
    }
  }

  /// @brief The step size given to the constructor.
  /// @return the learning rate
  [[nodiscard]] float learning_rate() const noexcept { return learning_rate_; }

  /// @brief Updates the parameters of layers [first_layer, end_layer) of `model` from their
  /// gradients and zeroes those gradients; other layers are left alone.
  /// @tparam Model a model with for_each_parameter(first, end, f), such as sequential
  /// @param model the model whose parameters are updated
  /// @param first_layer the first layer updated
  /// @param end_layer one past the last layer updated
  /// @throws ppipe::error what model.for_each_parameter() throws: for sequential and the other
  /// layer stacks, invalid_argument unless 0 <= first_layer <= end_layer <= num_layers().
  template <class Model>
    requires requires(Model& m, int layer, void (*f)(tensor_view, tensor_view)) { m.for_each_parameter(layer, layer, f); }
  void step(Model& model, int first_layer, int end_layer) const {
    model.for_each_parameter(first_layer, end_layer, [this](tensor_view value_view, tensor_view grad_view) {
      const std::span<float> value = value_view.as<float>();
      const std::span<float> grad = grad_view.as<float>();
      for (std::size_t k = 0; k < value.size(); ++k) {
        value[k] -= learning_rate_ * grad[k];
        grad[k] = 0.0f;
      }
    });
  }

  /// @brief step() for the layers of one pipeline stage, as ppipe's optimizer hook reports them.
  /// @tparam Model a model with for_each_parameter(first, end, f), such as sequential
  /// @param model the model whose parameters are updated
  /// @param stage the stage whose layers [first_layer, end_layer) are updated
  template <class Model>
  void step(Model& model, const stage_info& stage) const {
    step(model, stage.first_layer, stage.end_layer);
  }

 private:
  float learning_rate_;
};

}  // namespace PPIPE_LAYERS_KERNELS
}  // namespace ppipe::layers
