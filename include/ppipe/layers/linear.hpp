#pragma once
/// @file
/// @brief ppipe::layers::linear, the fully connected layer of the CPU layer kit: y = x W^T + b.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/layers/matmul.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/tensor/tensor_view.hpp"

namespace ppipe::layers {
namespace detail {

/// splitmix64: a tiny generator whose output is fixed by its definition, so that initial weights
/// are the same on every platform and standard library (std::uniform_real_distribution is not).
constexpr std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// A float uniform in [-bound, bound] from the generator's top 24 bits (exactly representable).
inline float uniform_symmetric(std::uint64_t& state, float bound) noexcept {
  const float unit = static_cast<float>(splitmix64(state) >> 40) * 0x1.0p-24f;  // [0, 1)
  return (2.0f * unit - 1.0f) * bound;
}

}  // namespace detail

/// @brief Tag of a layer made without its weights: materialize() allocates and initializes them
/// later, on the stage that runs the layer, so that a process holds only its own stages' weights.
struct deferred_t {
  explicit deferred_t() = default;
};
/// @brief The deferred tag: `linear(16, 4, seed, ppipe::layers::deferred)`.
inline constexpr deferred_t deferred{};

inline namespace PPIPE_LAYERS_KERNELS {

/// @brief A fully connected layer: y = x W^T + b for x of shape [rows, in], W [out, in], b [out].
///
/// It owns its weights, its bias and their gradient accumulators. Its three matrix products run
/// through cblas_sgemm when the kit is compiled with PPIPE_WITH_CBLAS=1 (link ppipe::blas), and
/// through its own loops otherwise (ppipe/layers/matmul.hpp). Either way every sum runs in float
/// in an order fixed by the call's sizes, so the same calls give the same bits and a run is
/// bitwise reproducible; the two ways differ from each other by rounding. The loops compute each
/// output row on its own; OpenBLAS may not, so a pipeline matches the unpipelined model bit for
/// bit when both use the same microbatches. backward() is exactly backward_input() followed by
/// backward_weight(), so zero-bubble schedules that split the backward give the same bits as
/// those that do not.
///
/// Made with ppipe::layers::deferred it holds no weights until materialize(): the weights then
/// drawn are the ones the eager constructor draws from the same seed, on whichever process.
class linear {
 public:
  /// @brief A layer from `in_features` to `out_features`, its weights and bias drawn uniformly
  /// from [-1/sqrt(in_features), 1/sqrt(in_features)] by a generator seeded with `seed`.
  /// @param in_features the width of an input row, >= 1
  /// @param out_features the width of an output row, >= 1
  /// @param seed the generator's seed; the same seed gives the same weights
  /// @throws ppipe::error (invalid_argument) when either width is < 1.
  linear(int in_features, int out_features, std::uint64_t seed) : linear(in_features, out_features, seed, deferred) {
    initialize();
  }
  /// @brief The same layer without its weights yet: shapes and costs are known, materialize()
  /// draws the weights.
  /// @param in_features the width of an input row, >= 1
  /// @param out_features the width of an output row, >= 1
  /// @param seed the seed that materialize() will draw the weights with
  /// @throws ppipe::error (invalid_argument) when either width is < 1.
  linear(int in_features, int out_features, std::uint64_t seed, deferred_t /*tag*/)
      : in_(in_features), out_(out_features), seed_(seed) {
    if (in_features < 1 || out_features < 1) {
      ppipe::detail::fail(errc::invalid_argument, "linear ", in_features, "->", out_features,
                          " has a width < 1; give both widths >= 1");
    }
  }

  /// @brief Whether the layer holds its weights (made eagerly, or materialized).
  /// @return true once the weights and gradients are allocated, false before materialize()
  [[nodiscard]] bool materialized() const noexcept { return !bias_.empty(); }
  /// @brief Draws the weights and zeroes the gradients, unless the layer holds them already.
  void materialize(const layer_context& /*ctx*/) {
    if (!materialized()) initialize();
  }

  /// @brief The width of an input row.
  /// @return in_features, as given to the constructor
  [[nodiscard]] int in_features() const noexcept { return in_; }
  /// @brief The width of an output row.
  /// @return out_features, as given to the constructor
  [[nodiscard]] int out_features() const noexcept { return out_; }
  /// @brief "linear 16->4", for messages.
  /// @return the name and both widths
  [[nodiscard]] std::string describe() const { return ppipe::detail::concat("linear ", in_, "->", out_); }

  /// @brief W, row-major [out, in].
  /// @return a mutable view of the weights (empty before materialize())
  [[nodiscard]] std::span<float> weight() noexcept { return weight_; }
  /// @brief W, row-major [out, in], read-only.
  /// @return a read-only view of the weights (empty before materialize())
  [[nodiscard]] std::span<const float> weight() const noexcept { return weight_; }
  /// @brief b, [out].
  /// @return a mutable view of the bias (empty before materialize())
  [[nodiscard]] std::span<float> bias() noexcept { return bias_; }
  /// @brief b, [out], read-only.
  /// @return a read-only view of the bias (empty before materialize())
  [[nodiscard]] std::span<const float> bias() const noexcept { return bias_; }
  /// @brief The accumulated d(loss)/dW, [out, in].
  /// @return a mutable view of the weight gradient (empty before materialize())
  [[nodiscard]] std::span<float> grad_weight() noexcept { return grad_weight_; }
  /// @brief The accumulated d(loss)/dW, [out, in], read-only.
  /// @return a read-only view of the weight gradient (empty before materialize())
  [[nodiscard]] std::span<const float> grad_weight() const noexcept { return grad_weight_; }
  /// @brief The accumulated d(loss)/db, [out].
  /// @return a mutable view of the bias gradient (empty before materialize())
  [[nodiscard]] std::span<float> grad_bias() noexcept { return grad_bias_; }
  /// @brief The accumulated d(loss)/db, [out], read-only.
  /// @return a read-only view of the bias gradient (empty before materialize())
  [[nodiscard]] std::span<const float> grad_bias() const noexcept { return grad_bias_; }

  /// @brief Calls f(tensor_view value, tensor_view gradient) for the weight, then the bias: what an
  /// optimizer and the replicas' averaging need (nothing before materialize()).
  /// @tparam F a callable taking (tensor_view, tensor_view)
  /// @param f called once per parameter with its values and its gradient accumulator
  template <class F>
  void for_each_parameter(F&& f) {
    f(tensor_view(weight()), tensor_view(grad_weight()));
    f(tensor_view(bias()), tensor_view(grad_bias()));
  }

  /// @brief Sets both gradient accumulators to zero.
  void zero_grad() noexcept {
    for (float& g : grad_weight_) g = 0.0f;
    for (float& g : grad_bias_) g = 0.0f;
  }

  /// @brief What is wrong with input shapes `in`, or "" when the layer takes them. The text has no
  /// subject, so that a model can put the layer's index in front.
  /// @param in the shapes of the input payload
  /// @return "" when `in` is one tensor [rows, in], else a description of the mismatch
  [[nodiscard]] std::string shape_problem(const std::vector<shape>& in) const {
    if (in.size() == 1 && in[0].rank() == 2 && in[0][1] == in_) return {};
    return ppipe::detail::concat("takes one tensor [rows, ", in_, "] but got ",
                                 ppipe::to_string(std::span<const shape>(in)), "; give it [rows, ", in_,
                                 "] (is the input's last dimension, or the previous layer's width, ", in_, "?)");
  }

  /// @brief The shape of y, [rows, out], for x of shape [rows, in]; throws ppipe::error
  /// (invalid_argument) naming both shapes for any other input.
  /// @param in the shapes of the input payload
  /// @return one shape, [rows, out]
  /// @throws ppipe::error (invalid_argument) when `in` is not one tensor [rows, in].
  [[nodiscard]] std::vector<shape> output_shapes(const std::vector<shape>& in) const {
    if (const std::string problem = shape_problem(in); !problem.empty()) {
      ppipe::detail::fail(errc::invalid_argument, describe(), " ", problem);
    }
    return {shape{in[0][0], out_}};
  }

  /// @brief out[0] = in[0] W^T + b. `out` must already have the shape output_shapes() gives.
  /// @param in one f32 tensor [rows, in]
  /// @param out one f32 tensor [rows, out], overwritten
  /// @throws ppipe::error (invalid_argument) when the layer is not materialized, a payload has
  /// other shapes, or (with a BLAS) rows exceed its int.
  void forward(const layer_context& /*ctx*/, const payload& in, payload& out) const {
    const std::size_t rows = check_input(in);
    check_tensor("out", out, rows, out_);
#if PPIPE_WITH_CBLAS
    detail::cblas::forward(in[0].data(), weight_.data(), bias_.data(), out[0].data(), dims(rows));
#else
    detail::loops::forward(in[0].data(), weight_.data(), bias_.data(), out[0].data(), dims(rows));
#endif
  }

  /// @brief Both halves of the backward: backward_input(), then backward_weight().
  /// @param ctx the call's context, passed on to both halves
  /// @param in the forward's input, one tensor [rows, in]
  /// @param out the forward's output (unused)
  /// @param grad_out d(loss)/d(out), one tensor [rows, out]
  /// @param grad_in receives d(loss)/d(in), [rows, in]; empty to skip it
  /// @throws ppipe::error (invalid_argument) as backward_input() and backward_weight() do.
  void backward(const layer_context& ctx, const payload& in, const payload& out, const payload& grad_out,
                payload& grad_in) {
    backward_input(ctx, in, out, grad_out, grad_in);
    backward_weight(ctx, in, out, grad_out);
  }

  /// @brief grad_in[0] = grad_out[0] W (overwritten, not added to). Skipped when `grad_in` is
  /// empty, as it is for the first layer of a model.
  /// @param in the forward's input, one tensor [rows, in]
  /// @param grad_out d(loss)/d(out), one tensor [rows, out]
  /// @param grad_in receives d(loss)/d(in), one tensor [rows, in]; empty to skip the call
  /// @throws ppipe::error (invalid_argument) when the layer is not materialized or a payload has
  /// other shapes.
  void backward_input(const layer_context& /*ctx*/, const payload& in, const payload& /*out*/,
                      const payload& grad_out, payload& grad_in) const {
    if (grad_in.empty()) return;
    const std::size_t rows = check_input(in);
    check_tensor("grad_out", grad_out, rows, out_);
    check_tensor("grad_in", grad_in, rows, in_);
#if PPIPE_WITH_CBLAS
    detail::cblas::backward_input(grad_out[0].data(), weight_.data(), grad_in[0].data(), dims(rows));
#else
    detail::loops::backward_input(grad_out[0].data(), weight_.data(), grad_in[0].data(), dims(rows));
#endif
  }

  /// @brief grad_w += grad_out[0]^T in[0] and grad_b += the column sums of grad_out[0].
  ///
  /// The accumulator's bits follow from the calls made on it, in their order, so a pipelined run
  /// matches the unpipelined one with the same microbatches. On OpenBLAS the product adds itself
  /// to the weight accumulator (sgemm with beta = 1). On the loops a call's gradient is summed on
  /// its own first, in a buffer the layer keeps between calls, and then added: the accumulator is
  /// then exactly the float sum of the calls' gradients. The bias gradient is summed on its own on
  /// both.
  /// @param in the forward's input, one tensor [rows, in]
  /// @param grad_out d(loss)/d(out), one tensor [rows, out]
  /// @throws ppipe::error (invalid_argument) when the layer is not materialized, a payload has
  /// other shapes, or (with a BLAS) rows exceed its int.
  void backward_weight(const layer_context& /*ctx*/, const payload& in, const payload& /*out*/,
                       const payload& grad_out) {
    const std::size_t rows = check_input(in);
    check_tensor("grad_out", grad_out, rows, out_);
    std::vector<float>& gb = scratch_.bias;
    gb.resize(bias_.size());
#if PPIPE_WITH_CBLAS
    detail::cblas::accumulate_weight(in[0].data(), grad_out[0].data(), grad_weight_.data(), gb.data(), dims(rows));
    detail::cblas::add_into(grad_bias_.data(), gb.data(), gb.size());
#else
    std::vector<float>& gw = scratch_.weight;
    gw.resize(weight_.size());
    detail::loops::backward_weight(in[0].data(), grad_out[0].data(), gw.data(), gb.data(), dims(rows));
    detail::loops::add_into(grad_weight_.data(), gw.data(), gw.size());
    detail::loops::add_into(grad_bias_.data(), gb.data(), gb.size());
#endif
  }

  /// @brief An estimate for the partitioner, for a microbatch of `rows` rows. Times are in flops
  /// (a multiply-add counts 2); the backward is twice the forward (input and weight gradients).
  /// parameter_memory is the bytes of W, b and their gradients (and, on the loops, the buffer
  /// backward_weight() sums a call's gradient in); activation_memory is the bytes of the output
  /// kept for the backward.
  /// @param rows the microbatch's rows
  /// @return the forward and backward flops and the parameter and activation bytes
  [[nodiscard]] layer_cost cost(std::int64_t rows = 1) const noexcept {
    const double n = static_cast<double>(rows);
    const double forward = 2.0 * n * static_cast<double>(in_) * static_cast<double>(out_);
    const double params = static_cast<double>(size(out_) * size(in_) + size(out_));  // known before materialize()
    const double copies = uses_cblas ? 2.0 : 3.0;
    return {forward, 2.0 * forward, copies * params * sizeof(float), n * static_cast<double>(out_) * sizeof(float)};
  }

 private:
  static std::size_t size(int n) noexcept { return static_cast<std::size_t>(n); }

  /// A call's sizes. With a BLAS they must fit its int: a larger microbatch is refused, not cut.
  detail::matmul_dims dims(std::size_t rows) const {
    const detail::matmul_dims d{rows, size(in_), size(out_)};
#if PPIPE_WITH_CBLAS
    if (!detail::cblas::fits(d)) {
      ppipe::detail::fail(errc::invalid_argument, describe(), ": a microbatch of ", rows,
                          " rows is more than the BLAS's int can count (", INT_MAX,
                          "); split the batch into more microbatches");
    }
#endif
    return d;
  }

  static std::string shapes_text(const payload& p) {
    const std::vector<shape> s = shapes_of(p);
    return ppipe::to_string(std::span<const shape>(s));
  }

  void initialize() {
    weight_.resize(size(out_) * size(in_));
    bias_.resize(size(out_));
    grad_weight_.assign(weight_.size(), 0.0f);
    grad_bias_.assign(bias_.size(), 0.0f);
    const float bound = 1.0f / std::sqrt(static_cast<float>(in_));
    std::uint64_t state = seed_;
    for (float& w : weight_) w = detail::uniform_symmetric(state, bound);
    for (float& b : bias_) b = detail::uniform_symmetric(state, bound);
  }

  /// Checks that the layer holds its weights and that `in` holds one [rows, in] tensor; returns rows.
  std::size_t check_input(const payload& in) const {
    if (!materialized()) {
      ppipe::detail::fail(errc::invalid_argument, describe(), " was made deferred and holds no weights in this "
                          "process: a pipeline materializes only its local stages' layers; call materialize() "
                          "to use it elsewhere");
    }
    if (in.size() != 1 || in[0].shape().rank() != 2 || in[0].shape()[1] != in_) {
      ppipe::detail::fail(errc::invalid_argument, describe(), ": `in` has shapes ",
                          shapes_text(in), "; it needs one tensor [rows, ", in_, "]");
    }
    return static_cast<std::size_t>(in[0].shape()[0]);
  }

  /// Checks that `p` holds one [rows, width] tensor, so that the products stay inside its storage.
  void check_tensor(const char* name, const payload& p, std::size_t rows, int width) const {
    const shape want{static_cast<std::int64_t>(rows), width};
    if (p.size() != 1 || p[0].shape() != want) {
      ppipe::detail::fail(errc::invalid_argument, describe(), ": `", name, "` has shapes ",
                          shapes_text(p), " but needs one tensor ", ppipe::to_string(want),
                          "; allocate it from output_shapes()");
    }
  }

  /// Where backward_weight() sums a microbatch's gradient before adding it to the accumulators
  /// (the weight's on the loops only).
  /// Kept between calls: allocating and faulting in a weight-sized buffer per call would cost a
  /// good part of the product itself at large widths. A copy starts empty, as the buffer holds
  /// nothing from one call to the next.
  struct scratch_buffers {
    std::vector<float> weight;
    std::vector<float> bias;
    scratch_buffers() = default;
    scratch_buffers(const scratch_buffers& /*other*/) noexcept {}
    scratch_buffers(scratch_buffers&&) noexcept = default;
    scratch_buffers& operator=(const scratch_buffers& /*other*/) noexcept { return *this; }
    scratch_buffers& operator=(scratch_buffers&&) noexcept = default;
    ~scratch_buffers() = default;
  };

  int in_;
  int out_;
  std::uint64_t seed_;
  std::vector<float> weight_;
  std::vector<float> bias_;
  std::vector<float> grad_weight_;
  std::vector<float> grad_bias_;
  scratch_buffers scratch_;
};

}  // namespace PPIPE_LAYERS_KERNELS
}  // namespace ppipe::layers
