#pragma once
/// @file
/// @brief What the layers of ppipe::layers::decoder share: the transformer_config that sizes them,
/// their per-row kernels (dense, LayerNorm), the checks of a call's output and generation batch,
/// and the forwards of the layers whose rows do not see each other.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/layers/layer_norm.hpp"
#include "ppipe/layers/linear.hpp"
#include "ppipe/layers/matmul.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::layers {

/// @brief The sizes of a decoder. Every value must be >= 1, and d_model a multiple of heads.
struct transformer_config {
  int vocab = 64;           ///< token ids are 0 .. vocab-1; the head gives vocab logits per row
  int d_model = 32;         ///< the width of the residual stream
  int heads = 4;            ///< attention heads, each d_model / heads wide
  int d_ff = 64;            ///< the hidden width of each MLP
  int blocks = 2;           ///< transformer blocks (an attention and an MLP layer each)
  int max_positions = 256;  ///< learned positions: no sequence may grow past this many tokens
  std::uint64_t seed = 1;   ///< the weights are a function of the config and this seed alone
};

namespace detail {

/// `c` itself; throws ppipe::error (invalid_argument) naming the first size out of range. Every
/// layer checks its config, so that one made on its own cannot index past its tables.
inline const transformer_config& validated(const transformer_config& c) {
  const auto positive = [](const char* name, int value) {
    if (value < 1) {
      ppipe::detail::fail(errc::invalid_argument, "transformer_config.", name, " is ", value, "; give ", name,
                          " >= 1");
    }
  };
  positive("vocab", c.vocab);
  positive("d_model", c.d_model);
  positive("heads", c.heads);
  positive("d_ff", c.d_ff);
  positive("blocks", c.blocks);
  positive("max_positions", c.max_positions);
  if (c.d_model % c.heads != 0) {
    ppipe::detail::fail(errc::invalid_argument, "transformer_config.d_model ", c.d_model,
                        " is not a multiple of heads ", c.heads, "; give a d_model divisible by heads (e.g. ",
                        (c.d_model / c.heads + 1) * c.heads, ") or another head count");
  }
  return c;
}

inline std::size_t to_size(int n) noexcept { return static_cast<std::size_t>(n); }

/// y = W x + b for one row: W [out, in] row-major, drawn like linear's from [-1/sqrt(in), 1/sqrt(in)].
struct dense {
  std::size_t in = 0;
  std::size_t out = 0;
  std::vector<float> weight;
  std::vector<float> bias;

  dense() = default;
  dense(int in_features, int out_features, std::uint64_t seed)
      : in(static_cast<std::size_t>(in_features)), out(static_cast<std::size_t>(out_features)),
        weight(in * out), bias(out) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(in_features));
    std::uint64_t state = seed;
    for (float& w : weight) w = uniform_symmetric(state, bound);
    for (float& b : bias) b = uniform_symmetric(state, bound);
  }
  void apply(const float* x, float* y) const noexcept {
    for (std::size_t o = 0; o < out; ++o) y[o] = dot_lanes(x, weight.data() + o * in, in) + bias[o];
  }
  /// y = W h + b + x, x the residual stream's row: how a block's half ends. The sum is added
  /// after the projection, not fused into it, so that the bits stay apply()'s plus x.
  void apply_residual(const float* h, float* y, const float* x) const noexcept {
    apply(h, y);
    for (std::size_t o = 0; o < out; ++o) y[o] += x[o];
  }
  [[nodiscard]] std::size_t parameters() const noexcept { return weight.size() + bias.size(); }
};

/// LayerNorm of one row, its scale and shift drawn near 1 and 0 so that a mixed-up parameter shows.
struct layer_norm {
  std::vector<float> gamma;
  std::vector<float> beta;

  layer_norm() = default;
  layer_norm(int width, std::uint64_t seed)
      : gamma(static_cast<std::size_t>(width)), beta(static_cast<std::size_t>(width)) {
    std::uint64_t state = seed;
    for (float& g : gamma) g = 1.0f + uniform_symmetric(state, 0.1f);
    for (float& b : beta) b = uniform_symmetric(state, 0.1f);
  }
  void apply(const float* x, float* y) const noexcept {
    const std::size_t n = gamma.size();
    const row_stats s = stats_of_row(x, n, 1e-5f);
    for (std::size_t k = 0; k < n; ++k) y[k] = (x[k] - s.mean) * s.inv * gamma[k] + beta[k];
  }
  [[nodiscard]] std::size_t parameters() const noexcept { return gamma.size() + beta.size(); }
};

/// A rough cost of `rows` rows for the partitioner, from a row's forward `flops` (a multiply-add
/// counts 2), the layer's `parameters` and the floats of output and working space a row takes.
/// The backward counts twice the forward, nominally: the decoder does not train.
inline layer_cost row_cost(std::int64_t rows, double flops, std::size_t parameters, double work) {
  const double n = static_cast<double>(rows);
  return {n * flops, 2.0 * n * flops, static_cast<double>(parameters) * sizeof(float), n * work * sizeof(float)};
}

/// The shape problem of a layer that takes the residual stream, one tensor [rows, width], or "".
inline std::string width_problem(const std::vector<shape>& in, int width) {
  if (in.size() == 1 && in[0].rank() == 2 && in[0][1] == width) return {};
  return ppipe::detail::concat("takes one tensor [rows, ", width, "] but got ",
                               ppipe::to_string(std::span<const shape>(in)), "; give it the previous layer's output");
}

/// [rows, out_width] for layer `l`'s input `in`; throws ppipe::error (invalid_argument) with the
/// layer's shape_problem() for an input it does not take.
template <class Layer>
std::vector<shape> rowwise_shapes(const Layer& l, const std::vector<shape>& in, int out_width) {
  if (const std::string problem = l.shape_problem(in); !problem.empty()) {
    ppipe::detail::fail(errc::invalid_argument, l.describe(), " ", problem);
  }
  return {shape{in[0][0], out_width}};
}

/// Checks `out` against layer `l`'s output_shapes() for `in`; returns the rows.
template <class Layer>
std::size_t check_io(const Layer& l, const payload& in, const payload& out) {
  const std::vector<shape> want = l.output_shapes(shapes_of(in));
  if (shapes_of(out) != want) {
    const std::vector<shape> got = shapes_of(out);
    ppipe::detail::fail(errc::invalid_argument, l.describe(), ": `out` has shapes ",
                        ppipe::to_string(std::span<const shape>(got)), " but needs ",
                        ppipe::to_string(std::span<const shape>(want)), "; allocate it from output_shapes()");
  }
  return static_cast<std::size_t>(in[0].shape()[0]);
}

/// Checks that the generation context's sequences account for exactly the input's `rows`.
template <class Layer>
void check_batch(const Layer& l, const generation_context<host_tensor>& ctx, std::size_t rows) {
  std::size_t total = 0;
  for (std::size_t s = 0; s < ctx.sequences.size(); ++s) {
    const sequence_view<host_tensor>& seq = ctx.sequences[s];
    if (seq.position < 0 || seq.rows < 0) {
      ppipe::detail::fail(errc::invalid_argument, l.describe(), ": sequence ", seq.id, " (entry ", s,
                          ") has position ", seq.position, " and rows ", seq.rows, "; both must be >= 0");
    }
    total += to_size(seq.rows);
  }
  if (total != rows) {
    ppipe::detail::fail(errc::invalid_argument, l.describe(), ": the ", ctx.sequences.size(),
                        " sequences of the generation context hold ", total, " rows but the input has ", rows,
                        "; stack exactly the sequences' new rows, in the context's order");
  }
}

/// Checks that sequence `seq`, whose rows start at input row `first_row`, stays within the
/// model's learned positions.
template <class Layer>
void check_positions(const Layer& l, const sequence_view<host_tensor>& seq, std::size_t first_row) {
  const int max_positions = l.config().max_positions;
  if (to_size(seq.position) + to_size(seq.rows) > to_size(max_positions)) {
    ppipe::detail::fail(errc::invalid_argument, l.describe(), ": sequence ", seq.id, " (input rows ", first_row,
                        "..", first_row + to_size(seq.rows), ") at position ", seq.position, " with ", seq.rows,
                        " new rows needs ", seq.position + seq.rows, " positions but the model has ", max_positions,
                        "; keep sequences within max_positions (or build it with more)");
  }
}

/// @brief The part of a decoder layer whose rows do not see each other (the MLP, the head): it
/// takes the residual stream [rows, d_model], keeps no state, and runs `Layer::apply(x, y, rows)`
/// over every row of either context once the call is checked.
/// @tparam Layer the layer deriving from it, with config(), describe(), output_shapes() and apply()
template <class Layer>
class rowwise_layer {
 public:
  /// @brief What is wrong with input shapes `in`, or "" when the layer takes them; the text has no
  /// subject, so that a model can put the layer's index in front.
  /// @param in the shapes of the layer's input
  /// @return the problem, or ""
  [[nodiscard]] std::string shape_problem(const std::vector<shape>& in) const {
    return width_problem(in, self().config().d_model);
  }
  /// @brief None: the layer keeps no state per sequence.
  /// @return no shapes
  [[nodiscard]] std::vector<shape> state_shapes(int /*capacity*/) const { return {}; }

  /// @brief Every row of the input on its own.
  /// @param in the residual stream [rows, d_model]
  /// @param out the layer's output, allocated in output_shapes()' shapes
  void forward(const layer_context& /*ctx*/, const payload& in, payload& out) const {
    self().apply(in[0].data(), out[0].data(), check_io(self(), in, out));
  }
  /// @brief The rows of a generation batch, each on its own as in the plain forward. Throws
  /// ppipe::error (invalid_argument) when the sequences' rows do not add up to the input's.
  /// @param ctx the batch's sequences
  /// @param in the sequences' new rows of the residual stream, stacked in order
  /// @param out the layer's output, allocated in output_shapes()' shapes
  void forward(const generation_context<host_tensor>& ctx, const payload& in, payload& out) const {
    const std::size_t rows = check_io(self(), in, out);
    check_batch(self(), ctx, rows);
    self().apply(in[0].data(), out[0].data(), rows);
  }

 private:
  const Layer& self() const noexcept { return static_cast<const Layer&>(*this); }
};

}  // namespace detail
}  // namespace ppipe::layers
