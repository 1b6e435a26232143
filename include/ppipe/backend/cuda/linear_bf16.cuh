#pragma once
/// @file
/// @brief ppipe::cuda::linear_bf16: a fully connected layer on bf16 tensors with fp32 accumulation
/// (cuBLAS GEMMs) and fp32 master weights, a layer of the CUDA kit (nvcc only).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "ppipe/backend/cuda/cublas.hpp"
#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/cuda/error.hpp"
#include "ppipe/backend/cuda/kernels.cuh"
#include "ppipe/backend/cuda/parameter.hpp"
#include "ppipe/error.hpp"
#include "ppipe/layers/linear.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::cuda {
namespace kernels {

template <class T>
__global__ void round_to_bf16(const T* from, __nv_bfloat16* to, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    to[i] = __float2bfloat16_rn(static_cast<float>(from[i]));
  }
}

// Every row of out [rows, n] set to the bias, rounded to bf16 (the GEMM then adds x W^T to it).
template <class T>
__global__ void rows_of_bias(const T* bias, __nv_bfloat16* out, std::int64_t rows, int n) {
  const std::size_t total = static_cast<std::size_t>(rows) * static_cast<std::size_t>(n);
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < total; i += std::size_t{gridDim.x} * blockDim.x) {
    out[i] = __float2bfloat16_rn(static_cast<float>(bias[i % static_cast<std::size_t>(n)]));
  }
}

}  // namespace kernels

/// @brief out = in W^T + b on bf16 tensors [rows, in_features] -> [rows, out_features], the
/// products summed in fp32 and rounded to bf16 once (cublasGemmEx, CUBLAS_COMPUTE_32F; tensor
/// cores where the GPU has them). The weights are kept in fp32 (the master copy, which the
/// gradients update) and in bf16 (what the GEMMs read, rounded from the master after each
/// update); the gradients accumulate in fp32. The weights for a seed are ppipe::layers::linear's,
/// its CPU reference with the inputs and weights rounded to bf16.
///
/// backward() is backward_input() then backward_weight(), for the zero-bubble schedules.
class linear_bf16 {
 public:
  /// @brief True: the layer launches its own work on the stage's stream.
  static constexpr bool enqueues_work = true;
  /// @brief What a stage hands each call: its device, stream and per-stage slots.
  using context = basic_layer_context<device>;
  /// @brief The layer's inputs and outputs: device tensors.
  using payload = basic_payload<device_tensor>;

  /// @brief A layer from `in_features` to `out_features` whose weights, drawn as
  /// ppipe::layers::linear draws them for `seed`, go to the GPU when the stage materializes it.
  /// @param in_features the width of each input row
  /// @param out_features the width of each output row
  /// @param seed the seed the weights are drawn from
  linear_bf16(int in_features, int out_features, std::uint64_t seed)
      : host_(in_features, out_features, seed, ppipe::layers::deferred) {}

  /// @brief [rows, out_features] bf16 for one [rows, in_features] bf16 tensor; throws
  /// ppipe::error (invalid_argument) for any other input.
  /// @param in the shapes of the input
  /// @return the shapes of the output
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    const std::int64_t rows = kernels::one_tensor(in, ins(), dtype::bf16, describe())[0][0];
    return {shape({rows, static_cast<std::int64_t>(outs())}, dtype::bf16)};
  }

  /// @brief ppipe::layers::linear's flops; the fp32 master, gradients and bf16 copy; a bf16
  /// output row kept for the backward. Per row.
  /// @return the cost
  [[nodiscard]] layer_cost cost() const noexcept {
    const layer_cost c = host_.cost();
    const double params = static_cast<double>(ins()) * outs() + outs();
    return {c.forward, c.backward, params * (2.0 * sizeof(float) + 2.0), 2.0 * outs()};
  }
  /// @brief "linear_bf16 16->4".
  /// @return the description
  [[nodiscard]] std::string describe() const { return ppipe::detail::concat("linear_bf16 ", ins(), "->", outs()); }

  /// @brief Draws the weights, copies them to the stage's GPU and rounds the bf16 copy there.
  /// Does nothing once the weights are on the GPU. It waits for the GPU to finish.
  /// @param ctx the stage's context, which names the GPU
  /// @throws ppipe::error (errc::backend) when the GPU cannot hold the weights
  void materialize(const context& ctx) {
    if (weight16_) return;
    host_.materialize(ctx);
    weight_.upload(ctx.device->ordinal, host_.weight(), "linear_bf16 weight");
    bias_.upload(ctx.device->ordinal, host_.bias(), "linear_bf16 bias");
    const detail::current_device on(ctx.device->ordinal);
    __nv_bfloat16* p = nullptr;
    check(cudaMalloc(reinterpret_cast<void**>(&p), weight_.size() * sizeof(__nv_bfloat16)),
          "cudaMalloc (linear_bf16 bf16 weights)");
    weight16_ = std::shared_ptr<__nv_bfloat16>(p, [](__nv_bfloat16* q) { static_cast<void>(cudaFree(q)); });
    round_weights(nullptr);
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (linear_bf16 weights)");
  }

  /// @brief out[0] = in[0] W^T + b: the bias, rounded to bf16, written into the output, then one
  /// GEMM adding in W^T to it in fp32 and rounding once; both enqueued on the context's stream.
  /// @param ctx the stage's context
  /// @param in one bf16 tensor [rows, in_features] on the GPU
  /// @param out one bf16 tensor [rows, out_features] on the GPU, overwritten
  /// @throws ppipe::error (errc::invalid_argument) before materialize(), for other shapes or
  /// dtypes, or for 2^31 rows or more; ppipe::error when a launch or cuBLAS call fails
  void forward(const context& ctx, const payload& in, payload& out) {
    const std::int64_t rows = check_input(in, "in");
    check_rows(out, outs(), rows, "out");
    if (rows == 0) return;
    const cudaStream_t s = ctx.device->stream.handle();
    kernels::rows_of_bias<<<kernels::blocks_for(static_cast<std::size_t>(rows) * outs()), kernels::block_threads, 0, s>>>(
        bias_.value(), kernels::bf16_data(out[0]), rows, outs());
    kernels::launched("linear_bf16 bias");
    const float one = 1.0f;
    check_cublas(cublasGemmEx(handle(ctx), CUBLAS_OP_T, CUBLAS_OP_N, outs(), static_cast<int>(rows), ins(), &one,
                              weight16_.get(), CUDA_R_16BF, ins(), kernels::bf16_data(in[0]), CUDA_R_16BF, ins(), &one,
                              kernels::bf16_data(out[0]), CUDA_R_16BF, outs(), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx (linear_bf16 forward)");
  }

  /// @brief grad_in[0] = grad_out[0] W with the bf16 weights, summed in fp32 (nothing when grad_in
  /// is empty); one GEMM enqueued on the context's stream.
  /// @param ctx the stage's context
  /// @param in the forward input, bf16 [rows, in_features]
  /// @param grad_out the output's gradient, bf16 [rows, out_features]
  /// @param grad_in the input's gradient, bf16 [rows, in_features], overwritten; or empty
  /// @throws ppipe::error as forward() does
  void backward_input(const context& ctx, const payload& in, const payload& /*out*/, const payload& grad_out,
                      payload& grad_in) {
    if (grad_in.empty()) return;
    const std::int64_t rows = check_input(in, "in");
    check_rows(grad_out, outs(), rows, "grad_out");
    check_rows(grad_in, ins(), rows, "grad_in");
    if (rows == 0) return;
    const float one = 1.0f;
    const float zero = 0.0f;
    check_cublas(cublasGemmEx(handle(ctx), CUBLAS_OP_N, CUBLAS_OP_N, ins(), static_cast<int>(rows), outs(), &one,
                              weight16_.get(), CUDA_R_16BF, ins(), kernels::bf16_data(grad_out[0]), CUDA_R_16BF, outs(),
                              &zero, kernels::bf16_data(grad_in[0]), CUDA_R_16BF, ins(), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx (linear_bf16 input gradient)");
  }

  /// @brief dW += grad_out[0]^T in[0] in fp32, and db += the column sums of grad_out[0] (rows in
  /// order), into the fp32 gradients; a GEMM and a kernel enqueued on the context's stream.
  /// @param ctx the stage's context
  /// @param in the forward input, bf16 [rows, in_features]
  /// @param grad_out the output's gradient, bf16 [rows, out_features]
  /// @throws ppipe::error as forward() does
  void backward_weight(const context& ctx, const payload& in, const payload& /*out*/, const payload& grad_out) {
    const std::int64_t rows = check_input(in, "in");
    check_rows(grad_out, outs(), rows, "grad_out");
    if (rows == 0) return;
    const float one = 1.0f;
    check_cublas(cublasGemmEx(handle(ctx), CUBLAS_OP_N, CUBLAS_OP_T, ins(), outs(), static_cast<int>(rows), &one,
                              kernels::bf16_data(in[0]), CUDA_R_16BF, ins(), kernels::bf16_data(grad_out[0]), CUDA_R_16BF,
                              outs(), &one, weight_.grad(), CUDA_R_32F, ins(), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx (linear_bf16 weight gradient)");
    kernels::column_sums<<<kernels::column_blocks(outs()), kernels::block_threads, 0, ctx.device->stream.handle()>>>(
        kernels::bf16_data(grad_out[0]), bias_.grad(), rows, outs());
    kernels::launched("linear_bf16 bias gradient");
  }

  /// @brief Both halves: backward_input(), then backward_weight(), on the context's stream.
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

  /// @brief The fp32 master weights updated (W -= lr dW, b -= lr db), the gradients zeroed and
  /// the bf16 copy rounded again, on the stage's stream.
  /// @param ctx the stage's device context
  /// @param lr the learning rate
  void sgd(device_context<device>& ctx, float lr) {
    weight_.sgd(ctx, lr);
    bias_.sgd(ctx, lr);
    round_weights(ctx.stream.handle());
  }

  /// @brief The fp32 master weights, W then b, copied to the host once the GPU's work is done.
  /// @return W row-major, then b
  [[nodiscard]] std::vector<float> download() const {
    return parameter::download_all({&weight_, &bias_});
  }

 private:
  [[nodiscard]] int ins() const noexcept { return host_.in_features(); }
  [[nodiscard]] int outs() const noexcept { return host_.out_features(); }
  static cublasHandle_t handle(const context& ctx) {
    return cublas_workspace::of(ctx).on(ctx.device->stream.handle());
  }
  void round_weights(cudaStream_t s) {
    kernels::round_to_bf16<<<kernels::blocks_for(weight_.size()), kernels::block_threads, 0, s>>>(
        weight_.value(), weight16_.get(), weight_.size());
    kernels::launched("linear_bf16 weights to bf16");
  }
  std::int64_t check_input(const payload& in, const char* name) const {
    if (!weight16_) {
      ppipe::detail::fail(errc::invalid_argument, describe(), " holds no weights on the GPU: the pipeline materializes "
                          "a stage's layers; call materialize(ctx) to use it alone");
    }
    return check_rows(in, ins(), 0, name);
  }
  std::int64_t check_rows(const payload& p, int width, std::int64_t rows, const char* name) const {
    const std::int64_t got = kernels::rows_of(p, width, rows, describe(), name, dtype::bf16);
    if (got > 2147483647) {
      ppipe::detail::fail(errc::invalid_argument, describe(), " got ", got, " rows; cuBLAS takes at most 2^31 - 1");
    }
    return got;
  }

  ppipe::layers::linear host_;  // shapes, costs, and the weights' first values
  parameter weight_, bias_;     // the fp32 master copy and its gradients
  std::shared_ptr<__nv_bfloat16> weight16_;
};

}  // namespace ppipe::cuda
