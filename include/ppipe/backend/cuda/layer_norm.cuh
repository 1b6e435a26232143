#pragma once
/// @file
/// @brief ppipe::cuda::layer_norm: trainable layer normalization on the GPU, a layer of the CUDA
/// kit (nvcc only), its backward split for the zero-bubble schedules.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "ppipe/backend/cuda/cublas.hpp"
#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/cuda/kernels.cuh"
#include "ppipe/backend/cuda/parameter.hpp"
#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::cuda {
namespace kernels {

// A row's mean and 1 / sqrt(var + eps), the variance about the mean in a second pass, as
// ppipe::layers::layer_norm computes them; every kernel below gets the same bits from it.
struct norm_stats {
  float mean;
  float inv;
};

template <class T>
__device__ norm_stats row_stats(const T* x, int n, float eps, float* shared) {
  float s = 0.0f;
  for (int k = static_cast<int>(threadIdx.x); k < n; k += static_cast<int>(blockDim.x)) s += x[k];
  const float mean = block_sum(s, shared) / static_cast<float>(n);
  float v = 0.0f;
  for (int k = static_cast<int>(threadIdx.x); k < n; k += static_cast<int>(blockDim.x)) {
    const float d = static_cast<float>(x[k]) - mean;
    v += d * d;
  }
  const float var = block_sum(v, shared) / static_cast<float>(n);
  return {mean, 1.0f / sqrtf(var + eps)};
}

// One block per row.
template <class T>
__global__ void layer_norm_forward(const T* x, const float* gamma, const float* beta, T* y, int n, float eps) {
  __shared__ float shared[block_threads];
  const std::size_t row = std::size_t{blockIdx.x} * static_cast<std::size_t>(n);
  const norm_stats s = row_stats(x + row, n, eps, shared);
  for (int k = static_cast<int>(threadIdx.x); k < n; k += static_cast<int>(blockDim.x)) {
    y[row + k] = (static_cast<float>(x[row + k]) - s.mean) * s.inv * gamma[k] + beta[k];
  }
}

// One block per row: gx = inv * (g - sum(g) / n - xhat * sum(g * xhat) / n), g = gy * gamma.
template <class T>
__global__ void layer_norm_backward_input(const T* x, const T* gy, const float* gamma, T* gx, int n, float eps) {
  __shared__ float shared[block_threads];
  const std::size_t row = std::size_t{blockIdx.x} * static_cast<std::size_t>(n);
  const norm_stats s = row_stats(x + row, n, eps, shared);
  float sg = 0.0f;
  float sgx = 0.0f;
  for (int k = static_cast<int>(threadIdx.x); k < n; k += static_cast<int>(blockDim.x)) {
    const float g = static_cast<float>(gy[row + k]) * gamma[k];
    sg += g;
    sgx += g * (static_cast<float>(x[row + k]) - s.mean) * s.inv;
  }
  const float scale = 1.0f / static_cast<float>(n);
  const float sum_g = block_sum(sg, shared);
  const float sum_gx = block_sum(sgx, shared);
  for (int k = static_cast<int>(threadIdx.x); k < n; k += static_cast<int>(blockDim.x)) {
    const float xhat = (static_cast<float>(x[row + k]) - s.mean) * s.inv;
    gx[row + k] = s.inv * (static_cast<float>(gy[row + k]) * gamma[k] - scale * sum_g - xhat * scale * sum_gx);
  }
}

// One block per row: the row's statistics, for layer_norm_column_sums.
template <class T>
__global__ void layer_norm_stats(const T* x, float* stats, int n, float eps) {
  __shared__ float shared[block_threads];
  const norm_stats s = row_stats(x + std::size_t{blockIdx.x} * static_cast<std::size_t>(n), n, eps, shared);
  if (threadIdx.x == 0) {
    stats[2 * std::size_t{blockIdx.x}] = s.mean;
    stats[2 * std::size_t{blockIdx.x} + 1] = s.inv;
  }
}

// One thread per column, rows in order: this call's sums, then added to the accumulators (as
// ppipe::layers::layer_norm adds each call's sums).
template <class T>
__global__ void layer_norm_column_sums(const T* x, const T* gy, const float* stats, float* grad_gamma,
                                       float* grad_beta, std::int64_t rows, int n) {
  const int k = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (k >= n) return;
  float sum_gamma = 0.0f;
  float sum_beta = 0.0f;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::size_t i = static_cast<std::size_t>(r) * static_cast<std::size_t>(n) + static_cast<std::size_t>(k);
    const float g = gy[i];
    sum_gamma += g * (static_cast<float>(x[i]) - stats[2 * r]) * stats[2 * r + 1];
    sum_beta += g;
  }
  grad_gamma[k] += sum_gamma;
  grad_beta[k] += sum_beta;
}

}  // namespace kernels

/// @brief Layer normalization over the last dimension of one f32 tensor [rows, width], with a
/// learned scale gamma (starting at 1) and shift beta (starting at 0), as
/// ppipe::layers::layer_norm computes it on the CPU (the GPU sums in another order: results
/// agree to rounding, not bit for bit). Each row's statistics are recomputed from the saved input
/// in the backward, so the layer keeps nothing between calls; backward() is backward_input()
/// then backward_weight(), so schedules that split the backward compute the same bits.
/// Gradients accumulate in device memory over a step; sgd() updates gamma and beta.
class layer_norm {
 public:
  /// @brief True: the layer launches its own work on the stage's stream.
  static constexpr bool enqueues_work = true;
  /// @brief What a stage hands each call: its device, stream and per-stage slots.
  using context = basic_layer_context<device>;
  /// @brief The layer's inputs and outputs: device tensors.
  using payload = basic_payload<device_tensor>;

  /// @brief A layer normalizing rows of `width` values, `eps` added to the variance.
  /// @param width the columns; >= 1
  /// @param eps > 0
  explicit layer_norm(int width, float eps = 1e-5f) : width_(width), eps_(eps) {
    if (width < 1 || !(eps > 0.0f)) {
      ppipe::detail::fail(errc::invalid_argument, "layer_norm of width ", width, " and eps ", eps,
                          "; give a width >= 1 and an eps > 0");
    }
  }

  /// @brief "layer_norm 16", for messages.
  /// @return the description
  [[nodiscard]] std::string describe() const { return ppipe::detail::concat("layer_norm ", width_); }

  /// @brief The input's shapes, one [rows, width] f32 tensor; throws ppipe::error
  /// (invalid_argument) for any other.
  /// @param in the shapes of the input
  /// @return the shapes of the output
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    return kernels::one_tensor(in, width_, dtype::f32, describe());
  }

  /// @brief What ppipe::layers::layer_norm estimates for `rows` rows.
  /// @param rows the rows of a call (1 gives per-row figures, which balance the same)
  /// @return the cost
  [[nodiscard]] layer_cost cost(std::int64_t rows = 1) const noexcept {
    const double elements = static_cast<double>(rows) * width_;
    return {8.0 * elements, 16.0 * elements, 4.0 * width_ * sizeof(float), elements * sizeof(float)};
  }

  /// @brief Puts gamma (ones) and beta (zeros) and their zeroed gradients on the stage's GPU.
  /// Does nothing once they are there. It waits for its copies to finish.
  /// @param ctx the stage's context, which names the GPU
  /// @throws ppipe::error (errc::backend) when the GPU cannot hold them
  void materialize(const context& ctx) {
    if (gamma_.on_device()) return;
    const std::vector<float> ones(static_cast<std::size_t>(width_), 1.0f);
    const std::vector<float> zeros(static_cast<std::size_t>(width_), 0.0f);
    gamma_.upload(ctx.device->ordinal, ones, "layer_norm gamma");
    beta_.upload(ctx.device->ordinal, zeros, "layer_norm beta");
  }

  /// @brief out[0] = the rows of in[0], normalized, scaled by gamma and shifted by beta: one
  /// kernel (a block per row) enqueued on the context's stream; nothing waits for it.
  /// @param ctx the stage's context
  /// @param in one f32 tensor [rows, width] on the GPU
  /// @param out one f32 tensor [rows, width] on the GPU, overwritten
  /// @throws ppipe::error (errc::invalid_argument) before materialize(), for other shapes or
  /// dtypes, or for 2^31 rows or more; ppipe::error when the launch fails
  void forward(const context& ctx, const payload& in, payload& out) const {
    const std::int64_t rows = check(in, "in", 0);
    check(out, "out", rows);
    if (rows == 0) return;
    kernels::layer_norm_forward<<<grid(rows), kernels::block_threads, 0, stream(ctx)>>>(
        in[0].data<float>(), gamma_.value(), beta_.value(), out[0].data<float>(), width_, eps_);
    kernels::launched("layer_norm forward");
  }

  /// @brief grad_in[0] = the gradient of the normalization at in[0] for grad_out[0], the rows'
  /// statistics recomputed from in[0] (nothing when grad_in is empty); one kernel enqueued on the
  /// context's stream.
  /// @param ctx the stage's context
  /// @param in the forward input, [rows, width]
  /// @param grad_out the output's gradient, [rows, width]
  /// @param grad_in the input's gradient, [rows, width], overwritten; or empty
  /// @throws ppipe::error as forward() does
  void backward_input(const context& ctx, const payload& in, const payload& /*out*/, const payload& grad_out,
                      payload& grad_in) const {
    if (grad_in.empty()) return;
    const std::int64_t rows = check(in, "in", 0);
    check(grad_out, "grad_out", rows);
    check(grad_in, "grad_in", rows);
    if (rows == 0) return;
    kernels::layer_norm_backward_input<<<grid(rows), kernels::block_threads, 0, stream(ctx)>>>(
        in[0].data<float>(), grad_out[0].data<float>(), gamma_.value(), grad_in[0].data<float>(), width_, eps_);
    kernels::launched("layer_norm input gradient");
  }

  /// @brief grad_gamma += the column sums of grad_out * xhat, grad_beta += those of grad_out:
  /// the rows' statistics into the stage's cuBLAS scratch memory, then one thread per column
  /// summing rows in order, both enqueued on the context's stream.
  /// @param ctx the stage's context
  /// @param in the forward input, [rows, width]
  /// @param grad_out the output's gradient, [rows, width]
  /// @throws ppipe::error as forward() does
  void backward_weight(const context& ctx, const payload& in, const payload& /*out*/, const payload& grad_out) {
    const std::int64_t rows = check(in, "in", 0);
    check(grad_out, "grad_out", rows);
    if (rows == 0) return;
    float* stats = cublas_workspace::of(ctx).scratch(2 * static_cast<std::size_t>(rows));
    kernels::layer_norm_stats<<<grid(rows), kernels::block_threads, 0, stream(ctx)>>>(in[0].data<float>(), stats,
                                                                                      width_, eps_);
    kernels::launched("layer_norm row statistics");
    const unsigned columns = (static_cast<unsigned>(width_) + kernels::block_threads - 1) / kernels::block_threads;
    kernels::layer_norm_column_sums<<<columns, kernels::block_threads, 0, stream(ctx)>>>(
        in[0].data<float>(), grad_out[0].data<float>(), stats, gamma_.grad(), beta_.grad(), rows, width_);
    kernels::launched("layer_norm weight gradient");
  }

  /// @brief Both halves of the backward: backward_input(), then backward_weight().
  /// @param ctx the stage's context
  /// @param in the forward input
  /// @param out the forward output (unused)
  /// @param grad_out the output's gradient
  /// @param grad_in the input's gradient, overwritten; or empty
  /// @throws ppipe::error as forward() does
  void backward(const context& ctx, const payload& in, const payload& out, const payload& grad_out, payload& grad_in) {
    backward_input(ctx, in, out, grad_out, grad_in);
    backward_weight(ctx, in, out, grad_out);
  }

  /// @brief gamma -= lr d(gamma), beta -= lr d(beta), then both gradients zeroed, on the stage's
  /// stream.
  /// @param ctx the stage's device context (an optimizer hook's basic_stage_info gives it)
  /// @param lr the learning rate
  void sgd(device_context<device>& ctx, float lr) {
    gamma_.sgd(ctx, lr);
    beta_.sgd(ctx, lr);
  }

  /// @brief gamma then beta, copied to the host once the GPU's work is done.
  /// @return 2 * width floats
  [[nodiscard]] std::vector<float> download() const {
    return parameter::download_all({&gamma_, &beta_});
  }

 private:
  static cudaStream_t stream(const context& ctx) { return ctx.device->stream.handle(); }
  static unsigned grid(std::int64_t rows) {
    if (rows > 2147483647) {
      ppipe::detail::fail(errc::invalid_argument, "layer_norm got ", rows, " rows; at most 2^31 - 1 per call");
    }
    return static_cast<unsigned>(rows);
  }
  std::int64_t check(const payload& p, const char* name, std::int64_t rows) const {
    if (!gamma_.on_device()) {
      ppipe::detail::fail(errc::invalid_argument, describe(), " holds no weights on the GPU: the pipeline "
                          "materializes a stage's layers; call materialize(ctx) to use it alone");
    }
    return kernels::rows_of(p, width_, rows, describe(), name);
  }

  int width_;
  float eps_;
  parameter gamma_, beta_;
};

}  // namespace ppipe::cuda
