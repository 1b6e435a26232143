#pragma once
/// @file
/// @brief ppipe::layers::layer_norm, the CPU layer kit's trainable layer normalization:
/// y = (x - mean) / sqrt(var + eps) * gamma + beta, each row on its own.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/tensor/tensor_view.hpp"

namespace ppipe::layers {
namespace detail {

/// A row's mean and 1 / sqrt(var + eps), the variance taken about the mean in a second pass (no
/// cancellation of a one-pass sum of squares).
struct row_stats {
  float mean = 0.0f;
  float inv = 0.0f;
};
inline row_stats stats_of_row(const float* x, std::size_t n, float eps) noexcept {
  float mean = 0.0f;
  for (std::size_t k = 0; k < n; ++k) mean += x[k];
  mean /= static_cast<float>(n);
  float var = 0.0f;
  for (std::size_t k = 0; k < n; ++k) var += (x[k] - mean) * (x[k] - mean);
  var /= static_cast<float>(n);
  return {mean, 1.0f / std::sqrt(var + eps)};
}

}  // namespace detail

/// @brief Layer normalization over the last dimension of one tensor [rows, width], with a learned
/// scale gamma (starting at 1) and shift beta (starting at 0). The backward recomputes each row's
/// mean and variance from the saved input, so the layer keeps nothing between calls.
///
/// As for ppipe::layers::linear, backward() is exactly backward_input() followed by
/// backward_weight(), and each call's parameter gradients are summed on their own before they are
/// added to the accumulators: a pipelined run gives the bits of the unpipelined one with the same
/// microbatches, whether the schedule splits the backward or not.
class layer_norm {
 public:
  /// @brief A layer normalizing rows of `width` values, `eps` added to the variance.
  /// @param width the number of values in a row, >= 1
  /// @param eps added to each row's variance before the square root, > 0
  /// @throws ppipe::error (invalid_argument) when width < 1 or eps is not > 0.
  layer_norm(int width, float eps = 1e-5f)
      : width_(width), eps_(eps), gamma_(size(width), 1.0f), beta_(size(width), 0.0f),
        grad_gamma_(size(width), 0.0f), grad_beta_(size(width), 0.0f) {
    if (width < 1 || !(eps > 0.0f)) {
      ppipe::detail::fail(errc::invalid_argument, "layer_norm of width ", width, " and eps ", eps,
                          "; give a width >= 1 and an eps > 0");
    }
  }

  /// @brief The number of values in a row.
  /// @return width, as given to the constructor
  [[nodiscard]] int width() const noexcept { return width_; }
  /// @brief "layer_norm 16", for messages.
  /// @return the name and the width
  [[nodiscard]] std::string describe() const { return ppipe::detail::concat("layer_norm ", width_); }

  /// @brief gamma, [width].
  /// @return a mutable view of gamma
  [[nodiscard]] std::span<float> gamma() noexcept { return gamma_; }
  /// @brief gamma, [width], read-only.
  /// @return a read-only view of gamma
  [[nodiscard]] std::span<const float> gamma() const noexcept { return gamma_; }
  /// @brief beta, [width].
  /// @return a mutable view of beta
  [[nodiscard]] std::span<float> beta() noexcept { return beta_; }
  /// @brief beta, [width], read-only.
  /// @return a read-only view of beta
  [[nodiscard]] std::span<const float> beta() const noexcept { return beta_; }
  /// @brief The accumulated d(loss)/d(gamma), [width].
  /// @return a read-only view of the gamma gradient
  [[nodiscard]] std::span<const float> grad_gamma() const noexcept { return grad_gamma_; }
  /// @brief The accumulated d(loss)/d(beta), [width].
  /// @return a read-only view of the beta gradient
  [[nodiscard]] std::span<const float> grad_beta() const noexcept { return grad_beta_; }

  /// @brief Calls f(tensor_view value, tensor_view gradient) for gamma, then beta.
  /// @tparam F a callable taking (tensor_view, tensor_view)
  /// @param f called once per parameter with its values and its gradient accumulator
  template <class F>
  void for_each_parameter(F&& f) {
    f(tensor_view(std::span<float>(gamma_)), tensor_view(std::span<float>(grad_gamma_)));
    f(tensor_view(std::span<float>(beta_)), tensor_view(std::span<float>(grad_beta_)));
  }

  /// @brief Sets both gradient accumulators to zero.
  void zero_grad() noexcept {
    for (float& g : grad_gamma_) g = 0.0f;
    for (float& g : grad_beta_) g = 0.0f;
  }

  /// @brief "" when the layer takes inputs of shapes `in` (one tensor [rows, width]), else what is
  /// wrong, without a subject.
  /// @param in the shapes of the input payload
  /// @return "" when `in` is one tensor [rows, width], else a description of the mismatch
  [[nodiscard]] std::string shape_problem(const std::vector<shape>& in) const {
    if (in.size() == 1 && in[0].rank() == 2 && in[0][1] == width_) return {};
    return ppipe::detail::concat("takes one tensor [rows, ", width_, "] but got ",
                                 ppipe::to_string(std::span<const shape>(in)), "; give it the previous layer's output");
  }

  /// @brief The input's shape; throws ppipe::error (invalid_argument) for any other input.
  /// @param in the shapes of the input payload
  /// @return `in`, one shape [rows, width]
  /// @throws ppipe::error (invalid_argument) when `in` is not one tensor [rows, width].
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    if (const std::string problem = shape_problem(in); !problem.empty()) {
      ppipe::detail::fail(errc::invalid_argument, describe(), " ", problem);
    }
    return in;
  }

  /// @brief out[0] = the rows of in[0], normalized, scaled by gamma and shifted by beta.
  /// @param in one f32 tensor [rows, width]
  /// @param out one f32 tensor [rows, width], overwritten
  /// @throws ppipe::error (invalid_argument) when a payload is not one f32 tensor of that shape.
  void forward(const layer_context& /*ctx*/, const payload& in, payload& out) const {
    const std::size_t rows = check("in", in, 0);
    check("out", out, rows);
    const std::size_t n = size(width_);
    const float* x = in[0].values().data();
    float* y = out[0].values().data();
    for (std::size_t r = 0; r < rows; ++r, x += n, y += n) {
      const row_stats s = stats(x);
      for (std::size_t k = 0; k < n; ++k) y[k] = (x[k] - s.mean) * s.inv * gamma_[k] + beta_[k];
    }
  }

  /// @brief Both halves of the backward: backward_input(), then backward_weight().
  /// @param ctx the call's context, passed on to both halves
  /// @param in the forward's input, one f32 tensor [rows, width]
  /// @param out the forward's output (unused)
  /// @param grad_out d(loss)/d(out), one f32 tensor [rows, width]
  /// @param grad_in receives d(loss)/d(in), [rows, width]; empty to skip it
  /// @throws ppipe::error (invalid_argument) when a payload has other shapes.
  void backward(const layer_context& ctx, const payload& in, const payload& out, const payload& grad_out,
                payload& grad_in) {
    backward_input(ctx, in, out, grad_out, grad_in);
    backward_weight(ctx, in, out, grad_out);
  }

  /// @brief grad_in = inv / width * (width * g - sum(g) - xhat * sum(g * xhat)) per row, with
  /// g = grad_out * gamma and xhat the normalized input (overwritten, not added to). Skipped when
  /// `grad_in` is empty.
  /// @param in the forward's input, one f32 tensor [rows, width]
  /// @param grad_out d(loss)/d(out), one f32 tensor [rows, width]
  /// @param grad_in receives d(loss)/d(in), one f32 tensor [rows, width]; empty to skip the call
  /// @throws ppipe::error (invalid_argument) when a payload has other shapes.
  void backward_input(const layer_context& /*ctx*/, const payload& in, const payload& /*out*/,
                      const payload& grad_out, payload& grad_in) const {
    if (grad_in.empty()) return;
    const std::size_t rows = check("in", in, 0);
    check("grad_out", grad_out, rows);
    check("grad_in", grad_in, rows);
    const std::size_t n = size(width_);
    const float scale = 1.0f / static_cast<float>(n);
    const float* x = in[0].values().data();
    const float* gy = grad_out[0].values().data();
    float* gx = grad_in[0].values().data();
    for (std::size_t r = 0; r < rows; ++r, x += n, gy += n, gx += n) {
      const row_stats s = stats(x);
      float sum_g = 0.0f;
      float sum_gx = 0.0f;
      for (std::size_t k = 0; k < n; ++k) {
        const float g = gy[k] * gamma_[k];
        sum_g += g;
        sum_gx += g * (x[k] - s.mean) * s.inv;
      }
      for (std::size_t k = 0; k < n; ++k) {
        const float xhat = (x[k] - s.mean) * s.inv;
        gx[k] = s.inv * (gy[k] * gamma_[k] - scale * sum_g - xhat * scale * sum_gx);
      }
    }
  }

  /// @brief grad_gamma += the column sums of grad_out * xhat, grad_beta += those of grad_out.
  /// @param in the forward's input, one f32 tensor [rows, width]
  /// @param grad_out d(loss)/d(out), one f32 tensor [rows, width]
  /// @throws ppipe::error (invalid_argument) when a payload has other shapes.
  void backward_weight(const layer_context& /*ctx*/, const payload& in, const payload& /*out*/,
                       const payload& grad_out) {
    const std::size_t rows = check("in", in, 0);
    check("grad_out", grad_out, rows);
    const std::size_t n = size(width_);
    call_gamma_.assign(n, 0.0f);
    call_beta_.assign(n, 0.0f);
    const float* x = in[0].values().data();
    const float* gy = grad_out[0].values().data();
    for (std::size_t r = 0; r < rows; ++r, x += n, gy += n) {
      const row_stats s = stats(x);
      for (std::size_t k = 0; k < n; ++k) {
        call_gamma_[k] += gy[k] * (x[k] - s.mean) * s.inv;
        call_beta_[k] += gy[k];
      }
    }
    for (std::size_t k = 0; k < n; ++k) {
      grad_gamma_[k] += call_gamma_[k];
      grad_beta_[k] += call_beta_[k];
    }
  }

  /// @brief An estimate for the partitioner, for a microbatch of `rows` rows: about 8 flops per
  /// element forward and twice that backward; gamma, beta, their gradients and the per-call sums;
  /// the output kept for the backward.
  /// @param rows the microbatch's rows
  /// @return the forward and backward flops and the parameter and activation bytes
  [[nodiscard]] layer_cost cost(std::int64_t rows = 1) const noexcept {
    const double elements = static_cast<double>(rows) * static_cast<double>(width_);
    return {8.0 * elements, 16.0 * elements, 6.0 * static_cast<double>(width_) * sizeof(float),
            elements * sizeof(float)};
  }

 private:
  using row_stats = detail::row_stats;

  static std::size_t size(int n) noexcept { return static_cast<std::size_t>(n); }

  [[nodiscard]] row_stats stats(const float* x) const noexcept { return detail::stats_of_row(x, size(width_), eps_); }

  // Checks that `p` holds one [rows, width] f32 tensor (any rows when `rows` is 0); returns rows.
  std::size_t check(const char* name, const payload& p, std::size_t rows) const {
    const bool ok = p.size() == 1 && p[0].shape().rank() == 2 && p[0].shape()[1] == width_ &&
                    p[0].dtype() == dtype::f32 &&
                    (rows == 0 || static_cast<std::size_t>(p[0].shape()[0]) == rows);
    if (!ok) {
      const std::vector<shape> got = shapes_of(p);
      ppipe::detail::fail(errc::invalid_argument, describe(), ": `", name, "` has shapes ",
                          ppipe::to_string(std::span<const shape>(got)), " but needs one f32 tensor [",
                          rows == 0 ? std::string("rows") : std::to_string(rows), ", ", width_, "]");
    }
    return static_cast<std::size_t>(p[0].shape()[0]);
  }

  int width_;
  float eps_;
  std::vector<float> gamma_, beta_, grad_gamma_, grad_beta_;
  std::vector<float> call_gamma_, call_beta_;  // one backward_weight() call's sums
};

}  // namespace ppipe::layers
