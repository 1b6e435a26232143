#pragma once
/// @file
/// @brief ppipe::cuda::mse_loss: the mean squared error as a ppipe::device_loss_function for the
/// CUDA backend (nvcc only).

#include <cstddef>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>

#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/cuda/kernels.cuh"
#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::cuda {
namespace kernels {

// grad = scale * 2 * (y - t) / n, element by element in double, as ppipe::layers::mse_loss.
template <class T>
__global__ void mse_gradient(const T* y, const T* t, T* g, double factor, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    const double d = static_cast<double>(static_cast<float>(y[i])) - static_cast<double>(static_cast<float>(t[i]));
    g[i] = T(static_cast<float>(factor * d));
  }
}

// One block: sum((y - t)^2) / n in double, in a fixed order.
template <class T>
__global__ void mse_value(const T* y, const T* t, double* value, std::size_t n) {
  __shared__ double shared[block_threads];
  double s = 0.0;
  for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) {
    const double d = static_cast<double>(static_cast<float>(y[i])) - static_cast<double>(static_cast<float>(t[i]));
    s += d * d;
  }
  const double sum = block_sum(s, shared);
  if (threadIdx.x == 0) *value = n == 0 ? 0.0 : sum / static_cast<double>(n);
}

}  // namespace kernels

/// @brief The mean squared error between tensor 0 of the output and of the target (f32 or bf16,
/// the same shape and dtype): loss = sum((output - target)^2) / N, and scale * 2 * (output - target) / N into
/// grad_output[0], as ppipe::layers::mse_loss computes them on the CPU (in double, whatever the
/// dtype). The gradient of f32 tensors is the host's bit for bit; the loss is summed in double in a fixed order of its own (it repeats run to
/// run; it agrees with the host's to rounding). Other output tensors get no gradient.
/// @return a loss for ppipe::cuda::backend pipelines
inline device_loss_function<device_tensor, basic_layer_context<device>> mse_loss() {
  return [](const basic_layer_context<device>& ctx, const basic_payload<device_tensor>& output,
            const basic_payload<device_tensor>& target, basic_payload<device_tensor>& grad_output, double scale,
            const device_tensor& value) {
    if (output.empty() || target.empty() || grad_output.size() != output.size()) {
      ppipe::detail::fail(errc::invalid_argument, "cuda::mse_loss got ", output.size(), " output, ", target.size(),
                          " target and ", grad_output.size(),
                          " gradient tensors; it compares tensor 0 of the output and of the target");
    }
    const device_tensor& y = output[0];
    const device_tensor& t = target[0];
    if (y.shape() != t.shape() || grad_output[0].shape() != y.shape()) {
      ppipe::detail::fail(errc::invalid_argument, "cuda::mse_loss: the output has shape ", ppipe::to_string(y.shape()),
                          " but the target has shape ", ppipe::to_string(t.shape()),
                          "; give a target of the output's shape (is the last layer's width right?)");
    }
    const std::size_t n = y.shape().elements();
    const cudaStream_t s = ctx.device->stream.handle();
    kernels::with_float_data(y, "cuda::mse_loss", [&](const auto* yp) {
      using T = std::remove_cvref_t<decltype(*yp)>;
      const auto* tp = reinterpret_cast<const T*>(t.byte_data());
      if (n > 0) {
        kernels::mse_gradient<<<kernels::blocks_for(n), kernels::block_threads, 0, s>>>(
            yp, tp, reinterpret_cast<T*>(grad_output[0].byte_data()), scale * 2.0 / static_cast<double>(n), n);
        kernels::launched("mse_loss gradient");
      }
      kernels::mse_value<<<1, kernels::block_threads, 0, s>>>(yp, tp, value.data<double>(), n);
    });
    kernels::launched("mse_loss value");
  };
}

}  // namespace ppipe::cuda
