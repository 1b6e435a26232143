#pragma once
/// @file
/// @brief ppipe::cuda::mse_loss: the mean squared error as a ppipe::device_loss_function for the
/// CUDA backend (nvcc only).

#include <cstddef>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>

#include "ppipe/backend/cuda/cublas.hpp"
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

// Blocks the loss's sum is split over: a fixed number, so that the order of the sum (and so its
// bits) does not depend on the GPU.
inline constexpr unsigned mse_blocks = 128;

// Block b's part of sum((y - t)^2), in double, over a fixed stride of the elements.
template <class T>
__global__ void mse_partial_sums(const T* y, const T* t, double* partial, std::size_t n) {
  __shared__ double shared[block_threads];
  double s = 0.0;
  const std::size_t stride = std::size_t{gridDim.x} * blockDim.x;
  for (std::size_t i = std::size_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double d = static_cast<double>(static_cast<float>(y[i])) - static_cast<double>(static_cast<float>(t[i]));
    s += d * d;
  }
  const double sum = block_sum(s, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// One block: the partial sums in a fixed order, over n.
template <class = void>
__global__ void mse_value(const double* partial, unsigned count, double* value, std::size_t n) {
  __shared__ double shared[block_threads];
  double s = 0.0;
  for (unsigned i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  const double sum = block_sum(s, shared);
  if (threadIdx.x == 0) *value = n == 0 ? 0.0 : sum / static_cast<double>(n);
}

}  // namespace kernels

/// @brief The mean squared error between tensor 0 of the output and of the target (f32 or bf16,
/// the same shape and dtype): loss = sum((output - target)^2) / N, and scale * 2 * (output -
/// target) / N into grad_output[0], as ppipe::layers::mse_loss computes them on the CPU (in double,
/// whatever the dtype). The gradient of f32 tensors is the host's bit for bit. The loss is summed
/// in double in a fixed order of its own (128 blocks, then their sums), so it repeats run to run
/// and agrees with the host's to rounding. Other output tensors get no gradient. Its kernels go on
/// the stage's stream, and write the loss into the loss function's `value` (one device double).
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
      // The partial sums go to the stage's scratch memory (doubles in floats' room; it is aligned).
      auto* partial = reinterpret_cast<double*>(cublas_workspace::of(ctx).scratch(2 * kernels::mse_blocks));
      kernels::mse_partial_sums<<<kernels::mse_blocks, kernels::block_threads, 0, s>>>(yp, tp, partial, n);
      kernels::launched("mse_loss partial sums");
      kernels::mse_value<<<1, kernels::block_threads, 0, s>>>(partial, kernels::mse_blocks, value.data<double>(), n);
    });
    kernels::launched("mse_loss value");
  };
}

}  // namespace ppipe::cuda
