#pragma once
/// @file
/// @brief ppipe::cuda::mlp_block: the residual MLP block of a pre-norm transformer on the GPU,
/// x + W2 GELU(W1 LayerNorm(x) + b1) + b2, made of the kit's layers (nvcc only).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/cuda/gelu.cuh"
#include "ppipe/backend/cuda/kernels.cuh"
#include "ppipe/backend/cuda/layer_norm.cuh"
#include "ppipe/backend/cuda/linear.hpp"
#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::cuda {
namespace kernels {

template <class T>
__global__ void add_into(T* y, const T* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    y[i] = y[i] + x[i];
  }
}

}  // namespace kernels

/// @brief [rows, width] -> x + down(GELU(up(LayerNorm(x)))), with up a linear width -> hidden
/// and down a linear hidden -> width: the MLP half of a pre-norm transformer block, one layer of
/// a ppipe::layer_stack. Its parts are the kit's cuda::layer_norm, cuda::linear (seeds `seed` and
/// `seed + 1`) and cuda::gelu, so its CPU reference is those parts' references in that order plus
/// the input.
///
/// It keeps only its input between forward and backward: the backward recomputes the normalized
/// input and the hidden activations (two GEMMs) in memory taken from the device's pool for the
/// call and handed back in stream order. backward() does the recomputation once;
/// backward_input() and backward_weight() (zero-bubble schedules) do it each, and compute the
/// same bits as backward().
class mlp_block {
 public:
  /// @brief True: the layer launches its own work on the stage's stream.
  static constexpr bool enqueues_work = true;
  /// @brief What a stage hands each call: its device, stream and per-stage slots.
  using context = basic_layer_context<device>;
  /// @brief The layer's inputs and outputs: device tensors.
  using payload = basic_payload<device_tensor>;

  /// @brief A block of `width` columns and `hidden` hidden units.
  /// @param width the block's input and output columns (>= 1)
  /// @param hidden the hidden layer's columns (>= 1; 4 * width in GPT-style models)
  /// @param seed the up projection's seed (the down projection's is seed + 1)
  mlp_block(int width, int hidden, std::uint64_t seed)
      : width_(width), hidden_(hidden), norm_(width), up_(width, hidden, seed), act_(hidden),
        down_(hidden, width, seed + 1) {}

  /// @brief "mlp_block 16->64->16", for messages.
  /// @return the description
  [[nodiscard]] std::string describe() const {
    return ppipe::detail::concat("mlp_block ", width_, "->", hidden_, "->", width_);
  }

  /// @brief The input's shapes, one [rows, width] f32 tensor; throws ppipe::error
  /// (invalid_argument) for any other.
  /// @param in the shapes of the input
  /// @return the shapes of the output
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    return kernels::one_tensor(in, width_, dtype::f32, describe());
  }

  /// @brief The parts' costs for `rows` rows, the backward charged with the recomputed forward;
  /// only the input is kept for the backward.
  /// @param rows the rows of a call (1 gives per-row figures, which balance the same)
  /// @return the cost
  [[nodiscard]] layer_cost cost(std::int64_t rows = 1) const noexcept {
    const double r = static_cast<double>(rows);
    const layer_cost n = norm_.cost(rows), g = act_.cost(rows), u = up_.cost(), d = down_.cost();  // linear's: per row
    const double forward = n.forward + g.forward + r * (u.forward + d.forward);
    const double backward = n.backward + g.backward + r * (u.backward + d.backward);
    return {forward, backward + forward, n.parameter_memory + u.parameter_memory + d.parameter_memory,
            r * width_ * sizeof(float)};
  }

  /// @brief Puts every part's weights on the stage's GPU (each part once), waiting for the copies.
  /// @param ctx the stage's context, which names the GPU
  /// @throws ppipe::error (errc::backend) when the GPU cannot hold them
  void materialize(const context& ctx) {
    norm_.materialize(ctx);
    up_.materialize(ctx);
    down_.materialize(ctx);
  }

  /// @brief out[0] = in[0] + down(GELU(up(LayerNorm(in[0])))), the parts' work and the residual
  /// add enqueued on the context's stream, the intermediates in pool memory freed in stream order.
  /// @param ctx the stage's context
  /// @param in one f32 tensor [rows, width] on the GPU
  /// @param out one f32 tensor [rows, width] on the GPU, overwritten
  /// @throws ppipe::error (errc::invalid_argument) before materialize() or for other shapes;
  /// ppipe::error when the pool, a launch or cuBLAS fails
  void forward(const context& ctx, const payload& in, payload& out) {
    const std::int64_t rows = kernels::rows_of(in, width_, 0, describe(), "in");
    kernels::rows_of(out, width_, rows, describe(), "out");
    hidden_state s(ctx, rows, width_, hidden_);
    recompute(ctx, in, s);
    down_.forward(ctx, s.a.p, out);
    add(ctx, out[0], in[0], "mlp_block residual");
  }

  /// @brief grad_in[0] = grad_out[0] + the gradient through the MLP (nothing when grad_in is
  /// empty), the forward recomputed first; all enqueued on the context's stream.
  /// @param ctx the stage's context
  /// @param in the forward input, [rows, width]
  /// @param grad_out the output's gradient, [rows, width]
  /// @param grad_in the input's gradient, [rows, width], overwritten; or empty
  /// @throws ppipe::error as forward() does
  void backward_input(const context& ctx, const payload& in, const payload& /*out*/, const payload& grad_out,
                      payload& grad_in) {
    if (grad_in.empty()) return;
    run_backward(ctx, in, grad_out, &grad_in, false);
  }

  /// @brief The parts' weight gradients, accumulated: the forward and the gradients through the
  /// MLP recomputed, as backward_input() does, all enqueued on the context's stream.
  /// @param ctx the stage's context
  /// @param in the forward input, [rows, width]
  /// @param grad_out the output's gradient, [rows, width]
  /// @throws ppipe::error as forward() does
  void backward_weight(const context& ctx, const payload& in, const payload& /*out*/, const payload& grad_out) {
    run_backward(ctx, in, grad_out, nullptr, true);
  }

  /// @brief Both halves, with one recomputation: the same bits as backward_input() then
  /// backward_weight(); only the weight gradients when grad_in is empty.
  /// @param ctx the stage's context
  /// @param in the forward input, [rows, width]
  /// @param grad_out the output's gradient, [rows, width]
  /// @param grad_in the input's gradient, [rows, width], overwritten; or empty
  /// @throws ppipe::error as forward() does
  void backward(const context& ctx, const payload& in, const payload& /*out*/, const payload& grad_out,
                payload& grad_in) {
    run_backward(ctx, in, grad_out, grad_in.empty() ? nullptr : &grad_in, true);
  }

  /// @brief Every part's update on the stage's stream (see cuda::sgd).
  /// @param ctx the stage's device context
  /// @param lr the learning rate
  void sgd(device_context<device>& ctx, float lr) {
    norm_.sgd(ctx, lr);
    up_.sgd(ctx, lr);
    down_.sgd(ctx, lr);
  }

  /// @brief The weights, copied to the host once the GPU's work is done: gamma, beta, W1, b1, W2, b2.
  /// @return the floats
  [[nodiscard]] std::vector<float> download() const {
    std::vector<float> out = norm_.download();
    for (const std::vector<float>& w : {up_.download(), down_.download()}) out.insert(out.end(), w.begin(), w.end());
    return out;
  }

 private:
  // A [rows, cols] f32 tensor from the device's pool for one call, handed back on the stream
  // when it goes (after the work enqueued so far, which is all the work that uses it).
  class scratch {
   public:
    scratch(const context& ctx, std::int64_t rows, int cols) : ctx_(&ctx) {
      const shape s{rows, cols};
      void* bytes = ctx.device->device->allocate(s.bytes(), ctx.device->stream);
      p.emplace_back(s, static_cast<std::byte*>(bytes));
    }
    ~scratch() {
      try {
        ctx_->device->device->release(p[0].byte_data(), ctx_->device->stream);
      } catch (...) {  // a fault already on its way out says what went wrong; the device frees the pool
      }
    }
    scratch(const scratch&) = delete;
    scratch& operator=(const scratch&) = delete;
    payload p;

   private:
    const context* ctx_;
  };

  // The forward's intermediates: LayerNorm(x), up(.), GELU(.).
  struct hidden_state {
    hidden_state(const context& ctx, std::int64_t rows, int width, int hidden)
        : n(ctx, rows, width), h(ctx, rows, hidden), a(ctx, rows, hidden) {}
    scratch n, h, a;
  };

  void recompute(const context& ctx, const payload& in, hidden_state& s) {
    norm_.forward(ctx, in, s.n.p);
    up_.forward(ctx, s.n.p, s.h.p);
    act_.forward(ctx, s.h.p, s.a.p);
  }

  // The input gradient (when grad_in is given) and the weight gradients (when `weights`), in the
  // same kernels whichever are asked for, so the split backward gives backward()'s bits.
  void run_backward(const context& ctx, const payload& in, const payload& grad_out, payload* grad_in, bool weights) {
    const std::int64_t rows = kernels::rows_of(in, width_, 0, describe(), "in");
    kernels::rows_of(grad_out, width_, rows, describe(), "grad_out");
    if (grad_in != nullptr) kernels::rows_of(*grad_in, width_, rows, describe(), "grad_in");
    hidden_state s(ctx, rows, width_, hidden_);
    recompute(ctx, in, s);
    scratch ga(ctx, rows, hidden_), gh(ctx, rows, hidden_), gn(ctx, rows, width_);
    down_.backward_input(ctx, s.a.p, {}, grad_out, ga.p);
    act_.backward_input(ctx, s.h.p, {}, ga.p, gh.p);
    up_.backward_input(ctx, s.n.p, {}, gh.p, gn.p);
    if (weights) {
      down_.backward_weight(ctx, s.a.p, {}, grad_out);
      up_.backward_weight(ctx, s.n.p, {}, gh.p);
      norm_.backward_weight(ctx, in, {}, gn.p);
    }
    if (grad_in != nullptr) {
      norm_.backward_input(ctx, in, {}, gn.p, *grad_in);
      add(ctx, (*grad_in)[0], grad_out[0], "mlp_block residual gradient");
    }
  }

  static void add(const context& ctx, const device_tensor& y, const device_tensor& x, const char* what) {
    const std::size_t n = y.shape().elements();
    if (n == 0) return;
    kernels::add_into<<<kernels::blocks_for(n), kernels::block_threads, 0, ctx.device->stream.handle()>>>(
        y.data<float>(), x.data<float>(), n);
    kernels::launched(what);
  }

  int width_, hidden_;
  layer_norm norm_;
  linear up_;
  gelu act_;
  linear down_;
};

}  // namespace ppipe::cuda
