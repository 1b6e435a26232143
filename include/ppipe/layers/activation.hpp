#pragma once
/// @file
/// @brief ppipe::layers::activation, the elementwise nonlinearities of the CPU layer kit: relu,
/// tanh and GELU.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::layers {

/// @brief Which nonlinearity an activation layer applies.
enum class activation_kind : unsigned char {
  relu,  ///< max(x, 0); its backward reads the saved input
  tanh,  ///< tanh(x); its backward reads the saved output (1 - y^2)
  /// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the tanh form of GELU that GPT-2 and
  /// Megatron-LM use; its backward reads the saved input
  gelu,
};

/// @brief "relu", "tanh" or "gelu".
/// @param kind the nonlinearity to name
/// @return its lower-case name, or "?" for a value outside the enumeration
constexpr std::string_view to_string(activation_kind kind) noexcept {
  switch (kind) {
    case activation_kind::relu: return "relu";
    case activation_kind::tanh: return "tanh";
    case activation_kind::gelu: return "gelu";
  }
  return "?";
}

namespace detail {
// GELU's tanh form and its derivative, in float as the layer computes them.
constexpr float gelu_c = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float gelu_a = 0.044715f;
inline float gelu(float x) noexcept { return 0.5f * x * (1.0f + std::tanh(gelu_c * (x + gelu_a * x * x * x))); }
inline float gelu_derivative(float x) noexcept {
  const float t = std::tanh(gelu_c * (x + gelu_a * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * gelu_c * (1.0f + 3.0f * gelu_a * x * x);
}
}  // namespace detail

/// @brief An elementwise nonlinearity without parameters. It applies to every tensor of its
/// payload and gives outputs of the input's shapes. Its backward needs nothing beyond the `in` and
/// `out` payloads that ppipe keeps, so the layer holds no state at all.
class activation {
 public:
  /// @brief A layer applying `kind` elementwise.
  /// @param kind the nonlinearity, relu by default
  explicit activation(activation_kind kind = activation_kind::relu) noexcept : kind_(kind) {}

  /// @brief The nonlinearity the layer applies.
  /// @return the kind given to the constructor
  [[nodiscard]] activation_kind kind() const noexcept { return kind_; }
  /// @brief "relu", "tanh" or "gelu", for messages.
  /// @return the kind's name
  [[nodiscard]] std::string describe() const { return std::string(to_string(kind_)); }

  /// @brief "" when the layer takes inputs of shapes `in` (one or more tensors, any shapes), else
  /// what is wrong, without a subject.
  /// @param in the shapes of the input payload
  /// @return "" when `in` holds at least one tensor, else a description of the problem
  [[nodiscard]] std::string shape_problem(const std::vector<shape>& in) const {
    if (!in.empty()) return {};
    return "takes one or more tensors but got none; give it the previous layer's output";
  }

  /// @brief The input's shapes; throws ppipe::error (invalid_argument) for an empty input.
  /// @param in the shapes of the input payload
  /// @return `in`, unchanged
  /// @throws ppipe::error (invalid_argument) when `in` is empty.
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    if (const std::string problem = shape_problem(in); !problem.empty()) {
      ppipe::detail::fail(errc::invalid_argument, describe(), " ", problem);
    }
    return in;
  }

  /// @brief out = f(in), tensor by tensor.
  /// @param in the input payload, tensors of any shapes
  /// @param out a payload of the input's shapes, overwritten
  /// @throws ppipe::error (invalid_argument) when `out` does not have the input's shapes.
  void forward(const layer_context& /*ctx*/, const payload& in, payload& out) const {
    check_same("out", in, out);
    for (std::size_t t = 0; t < in.size(); ++t) {
      const std::span<const float> x = in[t].values();
      const std::span<float> y = out[t].values();
      switch (kind_) {
        case activation_kind::relu:
          for (std::size_t k = 0; k < x.size(); ++k) y[k] = x[k] > 0.0f ? x[k] : 0.0f;
          break;
        case activation_kind::tanh:
          for (std::size_t k = 0; k < x.size(); ++k) y[k] = std::tanh(x[k]);
          break;
        case activation_kind::gelu:
          for (std::size_t k = 0; k < x.size(); ++k) y[k] = detail::gelu(x[k]);
          break;
      }
    }
  }

  /// @brief The same as backward_input(): the layer has no weights.
  /// @param ctx the call's context, passed on
  /// @param in the forward's input
  /// @param out the forward's output, read by tanh
  /// @param grad_out d(loss)/d(out), of the input's shapes
  /// @param grad_in receives d(loss)/d(in), of the input's shapes; empty to skip it
  /// @throws ppipe::error (invalid_argument) as backward_input() does.
  void backward(const layer_context& ctx, const payload& in, const payload& out, const payload& grad_out,
                payload& grad_in) const {
    backward_input(ctx, in, out, grad_out, grad_in);
  }

  /// @brief grad_in = grad_out * f'(in), overwritten; skipped when `grad_in` is empty. relu's
  /// derivative at 0 is taken as 0.
  /// @param in the forward's input, read by relu and gelu
  /// @param out the forward's output, read by tanh
  /// @param grad_out d(loss)/d(out), of the input's shapes
  /// @param grad_in receives d(loss)/d(in), of the input's shapes; empty to skip the call
  /// @throws ppipe::error (invalid_argument) when a payload it reads or writes does not have the
  /// input's shapes.
  void backward_input(const layer_context& /*ctx*/, const payload& in, const payload& out,
                      const payload& grad_out, payload& grad_in) const {
    if (grad_in.empty()) return;
    check_same("grad_out", in, grad_out);
    check_same("grad_in", in, grad_in);
    if (kind_ == activation_kind::tanh) check_same("out", in, out);
    for (std::size_t t = 0; t < in.size(); ++t) {
      const std::span<const float> gy = grad_out[t].values();
      const std::span<float> gx = grad_in[t].values();
      if (kind_ == activation_kind::relu) {
        const std::span<const float> x = in[t].values();
        for (std::size_t k = 0; k < gy.size(); ++k) gx[k] = x[k] > 0.0f ? gy[k] : 0.0f;
      } else if (kind_ == activation_kind::gelu) {
        const std::span<const float> x = in[t].values();
        for (std::size_t k = 0; k < gy.size(); ++k) gx[k] = gy[k] * detail::gelu_derivative(x[k]);
      } else {
        const std::span<const float> y = out[t].values();
        for (std::size_t k = 0; k < gy.size(); ++k) gx[k] = gy[k] * (1.0f - y[k] * y[k]);
      }
    }
  }

  /// @brief Nothing: the layer has no weights.
  void backward_weight(const layer_context& /*ctx*/, const payload& /*in*/, const payload& /*out*/,
                       const payload& /*grad_out*/) const noexcept {}

  /// @brief An estimate for the partitioner, for a microbatch of `rows` rows of `width` elements
  /// each: one flop per element forward, twice that backward, no parameters, and the bytes of the
  /// output kept for the backward.
  /// @param width the elements in a row
  /// @param rows the microbatch's rows
  /// @return the forward and backward flops, zero parameter bytes and the activation bytes
  [[nodiscard]] static layer_cost cost(std::int64_t width, std::int64_t rows = 1) noexcept {
    const double elements = static_cast<double>(width) * static_cast<double>(rows);
    return {elements, 2.0 * elements, 0.0, elements * sizeof(float)};
  }

 private:
  /// Checks that `p` has the tensors and shapes of `in`, so that the loops stay inside storage.
  void check_same(const char* name, const payload& in, const payload& p) const {
    const std::vector<shape> want = shapes_of(in);
    const std::vector<shape> got = shapes_of(p);
    if (got != want) {
      ppipe::detail::fail(errc::invalid_argument, describe(), ": `", name, "` has shapes ",
                          ppipe::to_string(std::span<const shape>(got)), " but needs the input's, ",
                          ppipe::to_string(std::span<const shape>(want)), "; allocate it from output_shapes()");
    }
  }

  activation_kind kind_;
};

}  // namespace ppipe::layers
