#pragma once
/// @file
/// @brief ppipe::layers::sequential, a stack of kit layers that is a ppipe model (trainable, with
/// split backward and costs), and its mlp() builder.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/layers/activation.hpp"
#include "ppipe/layers/linear.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/model/layer_stack.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::layers {
inline namespace PPIPE_LAYERS_KERNELS {

/// @brief One layer of a sequential model.
using any_layer = std::variant<linear, activation>;

/// @brief Layers applied one after the other, chosen at run time: a ppipe::layer_stack of
/// linear and activation layers (trainable, with backward_input/backward_weight, cost(),
/// parameters and materialization), with an MLP builder and accessors for tests and optimizers.
///
/// Threads: every layer's state (weights, gradients) is its own, so calls for different layers
/// may run at the same time on different threads, as ppipe's stages do; calls for one layer must
/// not overlap (ppipe never overlaps them). parameters(), gradients(), zero_grad() and the
/// optimizer touch the layers they name, and must not overlap training calls for those layers.
class sequential : public layer_stack<std::vector<any_layer>> {
  using base = layer_stack<std::vector<any_layer>>;

 public:
  /// @brief A model with no layers; add() appends them.
  sequential() : base(std::vector<any_layer>{}) {}
  /// @brief A model of the given layers, applied in their order.
  /// @param layers the layers, the first applied first
  explicit sequential(std::vector<any_layer> layers) : base(std::move(layers)) {}

  /// @brief A multilayer perceptron: linear(widths[0]->widths[1]), activation, linear, ...,
  /// linear(widths[n-2]->widths[n-1]), with an activation between linears but not after the last.
  /// Each linear is seeded from `seed`, so the model is the same for the same arguments.
  /// @param widths the feature widths, input first and output last: at least 2, each >= 1
  /// @param seed the state the linears' seeds are drawn from, one after another
  /// @param kind the nonlinearity between linears, relu by default
  /// @return the model, its linears holding their weights
  /// @throws ppipe::error (invalid_argument) for fewer than 2 widths or a width < 1.
  static sequential mlp(const std::vector<int>& widths, std::uint64_t seed,
                        activation_kind kind = activation_kind::relu) {
    return build_mlp(widths, seed, kind, false);
  }
  /// @brief The same MLP with its linears deferred: no weights until a pipeline materializes the
  /// stages this process runs (or materialize() is called), so each process of a multi-process
  /// run holds only its own layers' weights. The weights drawn are mlp()'s.
  /// @param widths the feature widths, input first and output last: at least 2, each >= 1
  /// @param seed the state the linears' seeds are drawn from, one after another
  /// @param kind the nonlinearity between linears
  /// @return the model, its linears deferred (no weights yet)
  /// @throws ppipe::error (invalid_argument) for fewer than 2 widths or a width < 1.
  static sequential mlp(const std::vector<int>& widths, std::uint64_t seed, activation_kind kind, deferred_t /*tag*/) {
    return build_mlp(widths, seed, kind, true);
  }

  /// @brief Appends layer `l` (a linear or an activation); returns *this for chaining.
  /// @tparam Layer linear, activation, or another type any_layer can be made from
  /// @param l the layer, moved or copied in
  /// @return this model
  template <class Layer>
    requires std::constructible_from<any_layer, Layer&&>
  sequential& add(Layer&& l) {
    // Built in place from the layer: GCC 12 warns (falsely) of an uninitialized read when a
    // whole variant is moved into the vector under the sanitizers.
    layers().emplace_back(std::forward<Layer>(l));
    return *this;
  }

  /// @brief Layer `i`; throws ppipe::error (invalid_argument) when there is no such layer.
  /// @param i the layer's index, in [0, num_layers())
  /// @return the layer, mutable
  [[nodiscard]] any_layer& at(int i) { return layers()[checked(i)]; }
  /// @brief Layer `i`, read-only; throws ppipe::error (invalid_argument) when there is no such
  /// layer.
  /// @param i the layer's index, in [0, num_layers())
  /// @return the layer, read-only
  [[nodiscard]] const any_layer& at(int i) const { return layers()[checked(i)]; }

  /// @brief The shapes layer `layer` makes from inputs of shapes `in`. Throws ppipe::error
  /// (invalid_argument) naming the layer, what it takes and the shapes it got.
  /// @param layer the layer's index, in [0, num_layers())
  /// @param in the shapes of the layer's input payload
  /// @return the shapes of the layer's output payload
  [[nodiscard]] std::vector<shape> output_shapes(int layer, const std::vector<shape>& in) const {
    return std::visit(
        [&](const auto& l) {
          if (const std::string problem = l.shape_problem(in); !problem.empty()) {
            ppipe::detail::fail(errc::invalid_argument, "layer ", layer, " (", l.describe(), ") ", problem);
          }
          return l.output_shapes(in);
        },
        at(layer));
  }

  /// @brief An estimate of layer `layer` for a microbatch of `rows` rows (the default, 1, gives
  /// per-row figures, which balance the same). Times in flops, memory in bytes: see linear::cost()
  /// and activation::cost(). An activation's width is the nearest linear's (the one before it,
  /// else the one after), since activations do not know their shapes; 1 without any linear.
  /// @param layer the layer's index, in [0, num_layers())
  /// @param rows the microbatch's rows
  /// @return the forward and backward flops and the parameter and activation bytes
  /// @throws ppipe::error (invalid_argument) when there is no such layer.
  [[nodiscard]] layer_cost cost(int layer, std::int64_t rows = 1) const {
    if (const auto* l = std::get_if<linear>(&at(layer))) return l->cost(rows);
    return activation::cost(width_near(layer), rows);
  }

  /// @brief The parameters of layers [first, end), layer by layer, each linear's weight then bias.
  /// The spans point into the model: they live as long as it does.
  /// @param first the first layer's index
  /// @param end one past the last layer's index
  /// @return two read-only spans per linear, none per activation
  /// @throws ppipe::error (invalid_argument) unless 0 <= first <= end <= num_layers().
  [[nodiscard]] std::vector<std::span<const float>> parameters(int first, int end) const {
    return collect(first, end, "parameters", [](const linear& l) { return std::pair{l.weight(), l.bias()}; });
  }
  /// @brief The parameters of every layer.
  /// @return two read-only spans per linear, none per activation
  [[nodiscard]] std::vector<std::span<const float>> parameters() const { return parameters(0, num_layers()); }
  /// @brief The gradient accumulators of layers [first, end), in the order of parameters().
  /// @param first the first layer's index
  /// @param end one past the last layer's index
  /// @return two read-only spans per linear (weight, then bias gradient), none per activation
  /// @throws ppipe::error (invalid_argument) unless 0 <= first <= end <= num_layers().
  [[nodiscard]] std::vector<std::span<const float>> gradients(int first, int end) const {
    return collect(first, end, "gradients", [](const linear& l) { return std::pair{l.grad_weight(), l.grad_bias()}; });
  }
  /// @brief The gradient accumulators of every layer.
  /// @return two read-only spans per linear (weight, then bias gradient), none per activation
  [[nodiscard]] std::vector<std::span<const float>> gradients() const { return gradients(0, num_layers()); }

  /// @brief Zeroes the gradients of layers [first, end).
  /// @param first the first layer's index
  /// @param end one past the last layer's index
  /// @throws ppipe::error (invalid_argument) unless 0 <= first <= end <= num_layers().
  void zero_grad(int first, int end) {
    for_each_parameter(first, end, [](tensor_view, tensor_view g) {
      for (float& v : g.as<float>()) v = 0.0f;
    });
  }
  /// @brief Zeroes every gradient.
  void zero_grad() { zero_grad(0, num_layers()); }

 private:
  std::vector<any_layer>& layers() noexcept { return element<0>(); }
  const std::vector<any_layer>& layers() const noexcept { return element<0>(); }

  static sequential build_mlp(const std::vector<int>& widths, std::uint64_t seed, activation_kind kind, bool defer) {
    if (widths.size() < 2) {
      ppipe::detail::fail(errc::invalid_argument, "mlp needs at least 2 widths (input and output) but got ",
                          widths.size(), "; e.g. mlp({16, 64, 4}, seed)");
    }
    for (std::size_t i = 0; i < widths.size(); ++i) {
      if (widths[i] < 1) {
        ppipe::detail::fail(errc::invalid_argument, "mlp width ", i, " is ", widths[i], "; every width must be >= 1");
      }
    }
    sequential out;
    std::uint64_t state = seed;
    for (std::size_t i = 0; i + 1 < widths.size(); ++i) {
      if (i > 0) out.add(activation(kind));
      const std::uint64_t layer_seed = detail::splitmix64(state);
      if (defer) {
        out.add(linear(widths[i], widths[i + 1], layer_seed, deferred));
      } else {
        out.add(linear(widths[i], widths[i + 1], layer_seed));
      }
    }
    return out;
  }

  template <class Pick>
  std::vector<std::span<const float>> collect(int first, int end, const char* what, Pick pick) const {
    check_range(first, end, what);
    std::vector<std::span<const float>> out;
    for (int i = first; i < end; ++i) {
      if (const auto* l = std::get_if<linear>(&layers()[static_cast<std::size_t>(i)])) {
        const auto [a, b] = pick(*l);
        out.push_back(a);
        out.push_back(b);
      }
    }
    return out;
  }

  std::int64_t width_near(int layer) const {
    for (int i = layer - 1; i >= 0; --i) {
      if (const auto* l = std::get_if<linear>(&layers()[static_cast<std::size_t>(i)])) return l->out_features();
    }
    for (int i = layer + 1; i < num_layers(); ++i) {
      if (const auto* l = std::get_if<linear>(&layers()[static_cast<std::size_t>(i)])) return l->in_features();
    }
    return 1;
  }

};

}  // namespace PPIPE_LAYERS_KERNELS
}  // namespace ppipe::layers
