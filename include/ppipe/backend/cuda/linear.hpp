#pragma once
/// @file
/// @brief ppipe::cuda::linear: a fully connected layer on cuBLAS (fp32), its backward split into
/// the input-gradient and weight-gradient GEMMs for zero-bubble schedules.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "ppipe/backend/cuda/cublas.hpp"
#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/cuda/error.hpp"
#include "ppipe/backend/cuda/parameter.hpp"
#include "ppipe/error.hpp"
#include "ppipe/layers/linear.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::cuda {

/// @brief out = in W^T + b on the GPU, with `in` [rows, in_features] and W [out_features,
/// in_features] row-major, as ppipe::layers::linear computes it on the CPU (the same weights for
/// the same seed; cuBLAS sums in its own order, so results agree to rounding, not bit for bit).
/// A layer for ppipe::cuda::backend: it takes device tensors of f32 and launches its GEMMs on the
/// stage's stream with the stage's cuBLAS handle (cublas_workspace).
///
/// Gradients accumulate in device memory over a step's microbatches; sgd() updates the weights on
/// the stage's stream and zeroes them.
class linear {
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
  linear(int in_features, int out_features, std::uint64_t seed)
      : host_(in_features, out_features, seed, ppipe::layers::deferred) {}

  /// @brief The shapes ppipe::layers::linear gives.
  /// @param in the input shapes: one, [rows, in_features]
  /// @return the output shape, [rows, out_features]
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const { return host_.output_shapes(in); }
  /// @brief What ppipe::layers::linear costs.
  /// @return the cost the partitioner weighs
  [[nodiscard]] layer_cost cost() const noexcept { return host_.cost(); }
  /// @brief "linear 16->4".
  /// @return the description
  [[nodiscard]] std::string describe() const { return host_.describe(); }

  /// @brief Draws the weights and copies them to the stage's GPU; zeroes the gradients there.
  /// Does nothing once the weights are on the GPU. It waits for its copies to finish.
  /// @param ctx the stage's context, which names the GPU
  /// @throws ppipe::error (errc::backend) when the GPU cannot hold the weights
  void materialize(const context& ctx) {
    if (weight_.on_device()) return;
    host_.materialize(ctx);
    weight_.upload(ctx.device->ordinal, host_.weight(), "linear weight");
    bias_.upload(ctx.device->ordinal, host_.bias(), "linear bias");
  }

  /// @brief out[0] = in[0] W^T + b: one GEMM, then the bias as a rank-1 update with ones.
  /// Both are enqueued on the context's stream; nothing waits for them.
  /// @param ctx the stage's context
  /// @param in one f32 tensor [rows, in_features] on the GPU
  /// @param out one f32 tensor [rows, out_features] on the GPU, overwritten
  /// @throws ppipe::error (errc::invalid_argument) before materialize() or for another input
  /// shape; ppipe::error when cuBLAS refuses a call
  void forward(const context& ctx, const payload& in, payload& out) {
    const int rows = check_input(in);
    cublas_workspace& ws = cublas_workspace::of(ctx);
    cublasHandle_t h = ws.on(ctx.device->stream.handle());
    const float one = 1.0f;
    const float zero = 0.0f;
    // Row-major [rows, n] is column-major [n, rows]: out^T = W^T^T in^T, W read transposed.
    check_cublas(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, outs(), rows, ins(), &one, weight_.value(), ins(),
                             in[0].data<float>(), ins(), &zero, out[0].data<float>(), outs()),
                 "cublasSgemm (linear forward)");
    check_cublas(cublasSger(h, outs(), rows, &one, bias_.value(), 1, ws.ones(static_cast<std::size_t>(rows)), 1,
                            out[0].data<float>(), outs()),
                 "cublasSger (linear bias)");
  }

  /// @brief grad_in[0] = grad_out[0] W (nothing when grad_in is empty), enqueued on the context's
  /// stream.
  /// @param ctx the stage's context
  /// @param in the forward input, [rows, in_features]
  /// @param grad_out the output's gradient, [rows, out_features]
  /// @param grad_in the input's gradient, [rows, in_features], overwritten; or empty
  /// @throws ppipe::error as forward() does
  void backward_input(const context& ctx, const payload& in, const payload& /*out*/, const payload& grad_out,
                      payload& grad_in) {
    if (grad_in.empty()) return;
    const int rows = check_input(in);
    cublasHandle_t h = cublas_workspace::of(ctx).on(ctx.device->stream.handle());
    const float one = 1.0f;
    const float zero = 0.0f;
    check_cublas(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, ins(), rows, outs(), &one, weight_.value(), ins(),
                             grad_out[0].data<float>(), outs(), &zero, grad_in[0].data<float>(), ins()),
                 "cublasSgemm (linear input gradient)");
  }

  /// @brief dW += grad_out[0]^T in[0] and db += the column sums of grad_out[0], enqueued on the
  /// context's stream.
  /// @param ctx the stage's context
  /// @param in the forward input, [rows, in_features]
  /// @param grad_out the output's gradient, [rows, out_features]
  /// @throws ppipe::error as forward() does
  void backward_weight(const context& ctx, const payload& in, const payload& /*out*/, const payload& grad_out) {
    const int rows = check_input(in);
    cublas_workspace& ws = cublas_workspace::of(ctx);
    cublasHandle_t h = ws.on(ctx.device->stream.handle());
    const float one = 1.0f;
    check_cublas(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, ins(), outs(), rows, &one, in[0].data<float>(), ins(),
                             grad_out[0].data<float>(), outs(), &one, weight_.grad(), ins()),
                 "cublasSgemm (linear weight gradient)");
    check_cublas(cublasSgemv(h, CUBLAS_OP_N, outs(), rows, &one, grad_out[0].data<float>(), outs(),
                             ws.ones(static_cast<std::size_t>(rows)), 1, &one, bias_.grad(), 1),
                 "cublasSgemv (linear bias gradient)");
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

  /// @brief W -= lr dW, b -= lr db, then both gradients zeroed, on the stage's stream.
  /// @param ctx the stage's context (an optimizer hook's basic_stage_info gives its device context)
  /// @param lr the learning rate
  void sgd(device_context<device>& ctx, float lr) {
    weight_.sgd(ctx, lr);
    bias_.sgd(ctx, lr);
  }

  /// @brief The weights, W then b, copied to the host once the GPU's work is done: for tests and
  /// checkpoints.
  /// @return W row-major, then b
  [[nodiscard]] std::vector<float> download() const {
    return parameter::download_all({&weight_, &bias_});
  }

 private:
  [[nodiscard]] int ins() const noexcept { return host_.in_features(); }
  [[nodiscard]] int outs() const noexcept { return host_.out_features(); }
  // The rows of a [rows, in_features] f32 input, once the layer holds its weights.
  int check_input(const payload& in) const {
    if (!weight_.on_device()) {
      ppipe::detail::fail(errc::invalid_argument, describe(), " holds no weights on the GPU: the pipeline materializes "
                          "a stage's layers; call materialize(ctx) to use it alone");
    }
    if (in.size() != 1 || in[0].shape().rank() != 2 || in[0].shape()[1] != ins()) {
      ppipe::detail::fail(errc::invalid_argument, describe(), " takes one tensor [rows, ", ins(), "]");
    }
    if (in[0].shape()[0] > 2147483647) {
      ppipe::detail::fail(errc::invalid_argument, describe(), " got ", in[0].shape()[0],
                          " rows; cuBLAS takes at most 2^31 - 1");
    }
    return static_cast<int>(in[0].shape()[0]);
  }

  ppipe::layers::linear host_;  // shapes, costs, and the weights' first values
  parameter weight_, bias_;
};

}  // namespace ppipe::cuda
