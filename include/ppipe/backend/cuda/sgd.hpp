#pragma once
/// @file
/// @brief ppipe::cuda::sgd: plain SGD over the CUDA kit's layers of one pipeline stage, enqueued
/// on the stage's stream from ppipe's optimizer hook.

#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/error.hpp"
#include "ppipe/layers/sgd.hpp"
#include "ppipe/model/model.hpp"

namespace ppipe::cuda {

/// @brief p -= learning_rate * g for every parameter of a stage's layers, then g = 0, on the
/// stage's compute stream (so the next step's kernels, on that stream, see the new weights). Each
/// layer that has `sgd(device_context<device>&, float)` (ppipe::cuda::linear, layer_norm) is
/// updated; layers without weights are skipped. Use it from the hook:
/// `[&](const ppipe::basic_stage_info<ppipe::cuda::device>& s) { opt.step(model, s); }`.
class sgd {
 public:
  /// @brief An optimizer with the given learning rate (finite and >= 0, as for
  /// ppipe::layers::sgd, which checks it).
  /// @param learning_rate the step size
  /// @throws ppipe::error (errc::invalid_argument) when it is negative or not finite
  explicit sgd(float learning_rate) : learning_rate_(ppipe::layers::sgd(learning_rate).learning_rate()) {}

  /// @brief The learning rate.
  /// @return the rate the optimizer was made with
  [[nodiscard]] float learning_rate() const noexcept { return learning_rate_; }

  /// @brief Enqueues the update of layers [stage.first_layer, stage.end_layer) of `model` (a
  /// ppipe::layer_stack) on the stage's stream.
  /// @param model the model the pipeline runs
  /// @param stage what the optimizer hook was given
  /// @tparam Model the model's type
  /// @throws ppipe::error (errc::invalid_argument) when `stage` has no device context
  template <class Model>
  void step(Model& model, const basic_stage_info<device>& stage) const {
    if (stage.device == nullptr) {
      ppipe::detail::fail(errc::invalid_argument, "cuda::sgd::step got a stage without a device context; call it from "
                          "the optimizer hook of a ppipe::cuda::backend pipeline");
    }
    for (int l = stage.first_layer; l < stage.end_layer; ++l) {
      model.visit(l, [&](auto& layer) {
        if constexpr (requires { layer.sgd(*stage.device, learning_rate_); }) layer.sgd(*stage.device, learning_rate_);
      });
    }
  }

 private:
  float learning_rate_;
};

}  // namespace ppipe::cuda
