#pragma once
/// @file
/// @brief ppipe::layers::mse_loss, the mean squared error for the last stage.

#include <cstddef>
#include <span>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::layers {

/// @brief The mean squared error between tensor 0 of the output and tensor 0 of the target:
/// loss = sum((output - target)^2) / N over the N elements. A callable that fits
/// ppipe::loss_function<>.
///
/// The loss is summed in double in element order, so it is reproducible. Other tensors of the
/// output (if any) get no gradient.
struct mse_loss {
  /// @brief Returns the loss and writes scale * d(loss)/d(output), that is
  /// scale * 2 * (output - target) / N, into grad_output[0]. `grad_output` is used as given when it
  /// has the output's shapes (as ppipe allocates it) and allocated when it is empty. Throws
  /// ppipe::error (invalid_argument) naming the shapes when output and target differ.
  /// @param output the last stage's output; tensor 0 is compared
  /// @param target tensor 0 must have the shape of output's tensor 0
  /// @param grad_output receives the scaled gradient in tensor 0; empty, or of the output's shapes
  /// @param scale the factor applied to the gradient (not to the returned loss)
  /// @return the mean squared error, unscaled; 0 when tensor 0 has no elements
  double operator()(const payload& output, const payload& target, payload& grad_output, double scale) const {
    if (output.empty() || target.empty()) {
      ppipe::detail::fail(errc::invalid_argument, "mse_loss got ", output.size(), " output and ", target.size(),
                          " target tensors; it compares tensor 0 of each, so give at least one of each");
    }
    const host_tensor& y = output[0];
    const host_tensor& t = target[0];
    if (y.shape() != t.shape()) {
      ppipe::detail::fail(errc::invalid_argument, "mse_loss: the output has shape ", ppipe::to_string(y.shape()),
                          " but the target has shape ", ppipe::to_string(t.shape()),
                          "; give a target of the output's shape (is the last layer's width right?)");
    }
    if (grad_output.empty()) {
      for (const host_tensor& o : output) grad_output.emplace_back(o.shape());
    }
    const std::vector<shape> want = shapes_of(output);
    if (shapes_of(grad_output) != want) {
      const std::vector<shape> got = shapes_of(grad_output);
      ppipe::detail::fail(errc::invalid_argument, "mse_loss: grad_output has shapes ",
                          ppipe::to_string(std::span<const shape>(got)), " but the output has ",
                          ppipe::to_string(std::span<const shape>(want)),
                          "; pass it with the output's shapes, or empty to have it allocated");
    }
    const std::size_t n = y.size();
    if (n == 0) return 0.0;
    const double factor = scale * 2.0 / static_cast<double>(n);
    float* g = grad_output[0].data();
    double sum = 0.0;
    for (std::size_t k = 0; k < n; ++k) {
      const double d = static_cast<double>(y[k]) - static_cast<double>(t[k]);
      sum += d * d;
      g[k] = static_cast<float>(factor * d);
    }
    return sum / static_cast<double>(n);
  }
};

}  // namespace ppipe::layers
