#pragma once
/// @file
/// @brief ppipe::cuda::gelu: GELU (tanh form) on the GPU, a layer of the CUDA kit (nvcc only).

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>

#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/cuda/kernels.cuh"
#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::cuda {
namespace kernels {

// ppipe::layers::activation's constants: sqrt(2 / pi), and the cubic term's.
inline constexpr float gelu_c = 0.7978845608028654f;
inline constexpr float gelu_a = 0.044715f;

template <class T>
__global__ void gelu_forward(const T* x, T* y, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    const float v = static_cast<float>(x[i]);
    y[i] = T(0.5f * v * (1.0f + tanhf(gelu_c * (v + gelu_a * v * v * v))));
  }
}

template <class T>
__global__ void gelu_backward(const T* x, const T* gy, T* gx, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    const float v = static_cast<float>(x[i]);
    const float t = tanhf(gelu_c * (v + gelu_a * v * v * v));
    const float d = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * gelu_c * (1.0f + 3.0f * gelu_a * v * v);
    gx[i] = T(static_cast<float>(gy[i]) * d);
  }
}

}  // namespace kernels

/// @brief out = GELU(in) elementwise on [rows, width] tensors of f32 or bf16 (computed in float),
/// the tanh form that ppipe::layers::activation computes on the CPU (the GPU's tanhf and
/// contracted multiply-adds round differently: results agree to rounding, not bit for bit). No
/// parameters; it enqueues its kernels on the stage's stream.
class gelu {
 public:
  /// @brief True: the layer launches its own work on the stage's stream.
  static constexpr bool enqueues_work = true;
  /// @brief What a stage hands each call: its device, stream and per-stage slots.
  using context = basic_layer_context<device>;
  /// @brief The layer's inputs and outputs: device tensors.
  using payload = basic_payload<device_tensor>;

  /// @brief A GELU over rows of `width` values of `type`.
  /// @param width the columns; throws ppipe::error (invalid_argument) unless >= 1
  /// @param type f32 or bf16
  explicit gelu(int width, dtype type = dtype::f32) : width_(width), type_(type) {
    if (width < 1) ppipe::detail::fail(errc::invalid_argument, "gelu of width ", width, "; give a width >= 1");
    if (type != dtype::f32 && type != dtype::bf16) {
      ppipe::detail::fail(errc::invalid_argument, "gelu of ", to_string(type), "; give f32 or bf16");
    }
  }

  /// @brief "gelu 16", for messages.
  /// @return the description
  [[nodiscard]] std::string describe() const { return ppipe::detail::concat("gelu ", width_); }

  /// @brief The input's shapes, one [rows, width] tensor; throws ppipe::error (invalid_argument)
  /// for any other.
  /// @param in the shapes of the input
  /// @return the shapes of the output
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    return kernels::one_tensor(in, width_, type_, describe());
  }

  /// @brief An estimate for the partitioner, for a microbatch of `rows` rows: about 10 flops per
  /// element forward and twice that backward; no parameters; the input kept for the backward.
  /// @param rows the rows of a call (1 gives per-row figures, which balance the same)
  /// @return the cost
  [[nodiscard]] layer_cost cost(std::int64_t rows = 1) const noexcept {
    const double n = static_cast<double>(rows) * width_;
    return {10.0 * n, 20.0 * n, 0.0, n * static_cast<double>(size_of(type_))};
  }

  /// @brief out[0] = GELU(in[0]), one grid-stride kernel enqueued on the context's stream;
  /// nothing waits for it.
  /// @param ctx the stage's context
  /// @param in one tensor [rows, width] of the layer's dtype on the GPU
  /// @param out one tensor of the same shape and dtype on the GPU, overwritten
  /// @throws ppipe::error (errc::invalid_argument) for other shapes or dtypes; ppipe::error
  /// (errc::backend) when the launch fails
  void forward(const context& ctx, const payload& in, payload& out) const {
    const std::int64_t rows = kernels::rows_of(in, width_, 0, describe(), "in", type_);
    kernels::rows_of(out, width_, rows, describe(), "out", type_);
    const std::size_t n = elements(rows);
    kernels::with_float_data(in[0], "gelu", [&](const auto* x) {
      using T = std::remove_cvref_t<decltype(*x)>;
      kernels::gelu_forward<<<kernels::blocks_for(n), kernels::block_threads, 0, ctx.device->stream.handle()>>>(
          x, reinterpret_cast<T*>(out[0].byte_data()), n);
    });
    kernels::launched("gelu forward");
  }

  /// @brief grad_in[0] = grad_out[0] * GELU'(in[0]) (nothing when grad_in is empty), one kernel
  /// enqueued on the context's stream.
  /// @param ctx the stage's context
  /// @param in the forward input, [rows, width]
  /// @param grad_out the output's gradient, [rows, width]
  /// @param grad_in the input's gradient, [rows, width], overwritten; or empty
  /// @throws ppipe::error as forward() does
  void backward_input(const context& ctx, const payload& in, const payload& /*out*/, const payload& grad_out,
                      payload& grad_in) const {
    if (grad_in.empty()) return;
    const std::int64_t rows = kernels::rows_of(in, width_, 0, describe(), "in", type_);
    kernels::rows_of(grad_out, width_, rows, describe(), "grad_out", type_);
    kernels::rows_of(grad_in, width_, rows, describe(), "grad_in", type_);
    const std::size_t n = elements(rows);
    kernels::with_float_data(in[0], "gelu", [&](const auto* x) {
      using T = std::remove_cvref_t<decltype(*x)>;
      kernels::gelu_backward<<<kernels::blocks_for(n), kernels::block_threads, 0, ctx.device->stream.handle()>>>(
          x, reinterpret_cast<const T*>(grad_out[0].byte_data()), reinterpret_cast<T*>(grad_in[0].byte_data()), n);
    });
    kernels::launched("gelu backward");
  }

  /// @brief Nothing: the layer has no weights.
  void backward_weight(const context& /*ctx*/, const payload& /*in*/, const payload& /*out*/,
                       const payload& /*grad_out*/) const {}

  /// @brief backward_input(): the layer has no weight gradients.
  /// @param ctx the stage's context
  /// @param in the forward input
  /// @param out the forward output (unused)
  /// @param grad_out the output's gradient
  /// @param grad_in the input's gradient, overwritten; or empty
  void backward(const context& ctx, const payload& in, const payload& out, const payload& grad_out,
                payload& grad_in) const {
    backward_input(ctx, in, out, grad_out, grad_in);
  }

 private:
  [[nodiscard]] std::size_t elements(std::int64_t rows) const noexcept {
    return static_cast<std::size_t>(rows) * static_cast<std::size_t>(width_);
  }

  int width_;
  dtype type_;
};

}  // namespace ppipe::cuda
