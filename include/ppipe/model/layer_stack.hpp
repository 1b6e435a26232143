#pragma once
/// @file
/// @brief ppipe::layer_stack: layers of different types, one after the other, as a ppipe model.
/// Users write layers (ppipe::layer); the stack does the index dispatch the Model concept asks for.

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/model/layer.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe {
namespace detail {

template <class T>
struct is_variant : std::false_type {};
template <class... Ts>
struct is_variant<std::variant<Ts...>> : std::true_type {};

// One element of a stack: a layer, a std::vector of one layer type (repeated blocks), and either
// may be a std::variant of layer types (chosen at run time). `concrete` lists the layer types.
template <class L>
struct stack_layer {
  using concrete = std::tuple<L>;
};
template <class... Ls>
struct stack_layer<std::variant<Ls...>> {
  using concrete = std::tuple<Ls...>;
};
template <class E>
struct stack_element {
  using layer_type = E;
  static constexpr bool repeated = false;
};
template <class L, class A>
struct stack_element<std::vector<L, A>> {
  using layer_type = L;
  static constexpr bool repeated = true;
};
template <class... Es>
using stack_layers = decltype(std::tuple_cat(
    std::declval<typename stack_layer<typename stack_element<Es>::layer_type>::concrete>()...));

template <class List, class Tensor, class Context>
inline constexpr bool all_layers = false;
template <class... Ls, class Tensor, class Context>
inline constexpr bool all_layers<std::tuple<Ls...>, Tensor, Context> = (layer<Ls, Tensor, Context> && ...);
template <class List, class Tensor, class Context>
inline constexpr bool all_backward = false;
template <class... Ls, class Tensor, class Context>
inline constexpr bool all_backward<std::tuple<Ls...>, Tensor, Context> = (layer_has_backward<Ls, Tensor, Context> && ...);
template <class List, class Tensor, class Context>
inline constexpr bool all_split = false;
template <class... Ls, class Tensor, class Context>
inline constexpr bool all_split<std::tuple<Ls...>, Tensor, Context> = (layer_has_split_backward<Ls, Tensor, Context> && ...);
template <class List>
inline constexpr bool all_costs = false;
template <class... Ls>
inline constexpr bool all_costs<std::tuple<Ls...>> = (layer_has_cost<Ls> && ...);
template <class List>
inline constexpr bool all_state = false;
template <class... Ls>
inline constexpr bool all_state<std::tuple<Ls...>> = (layer_has_state<Ls> && ...);
template <class List>
inline constexpr bool all_enqueue = false;
template <class... Ls>
inline constexpr bool all_enqueue<std::tuple<Ls...>> = (enqueues_own_work<Ls> && ...);
template <class List>
inline constexpr bool any_enqueue = false;
template <class... Ls>
inline constexpr bool any_enqueue<std::tuple<Ls...>> = (enqueues_own_work<Ls> || ...);
template <class List, class Tensor, class Context, bool Training>
inline constexpr bool checked_layers = false;
template <class... Ls, class Tensor, class Context, bool Training>
inline constexpr bool checked_layers<std::tuple<Ls...>, Tensor, Context, Training> =
    (check_layer<Ls, Tensor, Context, Training>() && ...);

}  // namespace detail

/// @brief `n` layers made by `make(i)` for i in [0, n): a run of repeated blocks in a
/// ppipe::layer_stack (transformer blocks, hidden layers).
/// @param n how many
/// @param make a callable taking the block's index and returning the layer
/// @return the layers, as a stack takes them
template <class Make>
auto repeat(int n, Make&& make) {
  using layer_type = std::decay_t<decltype(make(0))>;
  if (n < 0) detail::fail(errc::invalid_argument, "repeat(", n, ", ...) asks for a negative number of layers; give n >= 0");
  std::vector<layer_type> out;
  out.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) out.push_back(make(i));
  return out;
}

/// @brief Layers applied one after the other, each element of any type that is a ppipe::layer:
/// a layer, a std::vector of one layer type (see ppipe::repeat()), or either holding a
/// std::variant of layer types. Layer i of the model is the i-th layer counting through the
/// elements. The stack is a ppipe model (and trainable, with split backward, costs, parameters,
/// materialization and per-sequence state for generation) exactly when all its layers have those
/// members.
///
/// @code
/// ppipe::layer_stack model{embed{vocab, width}, ppipe::repeat(4, [](int i) { return block{width, i}; }), head{width}};
/// @endcode
///
/// Threads: each layer's calls come from the stage that owns it, so layers need no locks of
/// their own; a layer object shared by two positions of the stack would be called from two stages.
/// @tparam Elements the stack's elements, as given to the constructor
template <class... Elements>
class layer_stack {
  static_assert(sizeof...(Elements) > 0, "ppipe: a layer_stack needs at least one layer");

 public:
  /// @brief The concrete layer types, variants' alternatives included.
  using layer_types = detail::stack_layers<Elements...>;

  static_assert(detail::all_enqueue<layer_types> == detail::any_enqueue<layer_types>,
                "ppipe: a layer_stack's layers must all enqueue their work on the stream (enqueues_work = true, "
                "as GPU layers do) or none of them: a stage calls them one way or the other");
  /// @brief Whether the stack's layers enqueue their own work (see ppipe::enqueues_own_work).
  static constexpr bool enqueues_work = detail::all_enqueue<layer_types>;

  /// @brief A stack of `elements`, in order.
  /// @param elements the stack's elements, each a layer, a std::vector of one layer type, or either
  /// holding a std::variant of layer types; the stack takes them over (moved in)
  explicit layer_stack(Elements... elements) : parts_(std::move(elements)...) {}

  /// @brief How many layers the stack has (a repeated element counts each of its layers).
  /// @return the layer count, summed over the elements
  [[nodiscard]] int num_layers() const noexcept {
    std::size_t n = 0;
    std::apply([&](const auto&... part) { ((n += size_of(part)), ...); }, parts_);
    return static_cast<int>(n);
  }

  /// @brief Element I as given to the constructor (a layer, or the vector of a repeated run).
  /// @tparam I the element's position among the constructor's arguments (not a layer index)
  /// @return the element, owned by the stack
  template <std::size_t I>
  [[nodiscard]] auto& element() noexcept {
    return std::get<I>(parts_);
  }
  /// @brief Element I as given to the constructor, read-only.
  /// @tparam I the element's position among the constructor's arguments (not a layer index)
  /// @return the element, owned by the stack
  template <std::size_t I>
  [[nodiscard]] const auto& element() const noexcept {
    return std::get<I>(parts_);
  }

  /// @brief Calls `f(l)` with layer `layer` as its concrete type (a variant is visited).
  /// @param layer the layer's index in the stack
  /// @param f a callable taking any of the stack's layer types by reference
  /// @tparam F the callable's type
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is outside [0, num_layers())
  template <class F>
  void visit(int layer, F&& f) {
    with_layer(*this, layer, f);
  }
  /// @brief Calls `f(l)` with layer `layer` of a const stack as its concrete type, by const
  /// reference (a variant is visited).
  /// @param layer the layer's index in the stack
  /// @param f a callable taking any of the stack's layer types by const reference
  /// @tparam F the callable's type
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is outside [0, num_layers())
  template <class F>
  void visit(int layer, F&& f) const {
    with_layer(*this, layer, f);
  }

  /// @brief The layer's describe(), or its index for a layer without one.
  /// @param layer the layer's index
  /// @return e.g. "linear 16->4", or "layer 3"
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is outside [0, num_layers())
  [[nodiscard]] std::string describe(int layer) const {
    std::string text;
    visit(layer, [&](const auto& l) {
      if constexpr (layer_has_describe<std::decay_t<decltype(l)>>) {
        text = l.describe();
      } else {
        text = detail::concat("layer ", layer);
      }
    });
    return text;
  }

  /// @brief The shapes layer `layer` makes from inputs of shapes `in`; a layer's ppipe::error is
  /// prefixed with its index.
  /// @param layer the layer's index
  /// @param in the shapes of the layer's inputs
  /// @return the layer's output_shapes(in)
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is outside [0, num_layers()), or
  /// the layer's own ppipe::error, with its code kept and its message prefixed with the index
  [[nodiscard]] std::vector<shape> output_shapes(int layer, const std::vector<shape>& in) const {
    return shapes_of_layer(layer, [&](const auto& l) { return l.output_shapes(in); });
  }

  /// @brief Layer `layer`'s forward, with any context every layer takes (a generation context
  /// included, for a stack that generates).
  /// @param layer the layer's index
  /// @param ctx the call's context, passed on to the layer
  /// @param in the layer's inputs
  /// @param out the layer's outputs, to fill; allocated by ppipe in output_shapes()' shapes
  /// @tparam Context the context type, one every layer's forward takes
  /// @tparam Tensor the payloads' tensor type
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is outside [0, num_layers()); what
  /// the layer throws passes through unchanged
  template <class Context, class Tensor>
    requires detail::all_layers<layer_types, Tensor, Context>
  void forward(int layer, const Context& ctx, const basic_payload<Tensor>& in, basic_payload<Tensor>& out) {
    visit(layer, [&](auto& l) { l.forward(ctx, in, out); });
  }
  /// @brief Layer `layer`'s backward: writes its input gradient and adds its weights' gradients to
  /// the layer's accumulators.
  /// @param layer the layer's index
  /// @param ctx the call's context, passed on to the layer
  /// @param in the layer's inputs, as its forward got them
  /// @param out the layer's outputs, as its forward made them
  /// @param grad_out the gradient of the loss with respect to `out`
  /// @param grad_in where the gradient with respect to `in` goes (empty when nobody needs it)
  /// @tparam Context the context type, one every layer takes
  /// @tparam Tensor the payloads' tensor type
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is outside [0, num_layers()); what
  /// the layer throws passes through unchanged
  template <class Context, class Tensor>
    requires detail::all_backward<layer_types, Tensor, Context>
  void backward(int layer, const Context& ctx, const basic_payload<Tensor>& in, const basic_payload<Tensor>& out,
                const basic_payload<Tensor>& grad_out, basic_payload<Tensor>& grad_in) {
    visit(layer, [&](auto& l) { l.backward(ctx, in, out, grad_out, grad_in); });
  }
  /// @brief Layer `layer`'s input-gradient half (zero-bubble schedules).
  /// @param layer the layer's index
  /// @param ctx the call's context, passed on to the layer
  /// @param in the layer's inputs, as its forward got them
  /// @param out the layer's outputs, as its forward made them
  /// @param grad_out the gradient of the loss with respect to `out`
  /// @param grad_in where the gradient with respect to `in` goes (empty when nobody needs it)
  /// @tparam Context the context type, one every layer takes
  /// @tparam Tensor the payloads' tensor type
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is outside [0, num_layers()); what
  /// the layer throws passes through unchanged
  template <class Context, class Tensor>
    requires detail::all_split<layer_types, Tensor, Context>
  void backward_input(int layer, const Context& ctx, const basic_payload<Tensor>& in, const basic_payload<Tensor>& out,
                      const basic_payload<Tensor>& grad_out, basic_payload<Tensor>& grad_in) {
    visit(layer, [&](auto& l) { l.backward_input(ctx, in, out, grad_out, grad_in); });
  }
  /// @brief Layer `layer`'s weight-gradient half (zero-bubble schedules): adds its weights'
  /// gradients to the layer's accumulators.
  /// @param layer the layer's index
  /// @param ctx the call's context, passed on to the layer
  /// @param in the layer's inputs, as its forward got them
  /// @param out the layer's outputs, as its forward made them
  /// @param grad_out the gradient of the loss with respect to `out`
  /// @tparam Context the context type, one every layer takes
  /// @tparam Tensor the payloads' tensor type
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is outside [0, num_layers()); what
  /// the layer throws passes through unchanged
  template <class Context, class Tensor>
    requires detail::all_split<layer_types, Tensor, Context>
  void backward_weight(int layer, const Context& ctx, const basic_payload<Tensor>& in, const basic_payload<Tensor>& out,
                       const basic_payload<Tensor>& grad_out) {
    visit(layer, [&](auto& l) { l.backward_weight(ctx, in, out, grad_out); });
  }

  /// @brief Layer `layer`'s cost, for the partitioner; there when every layer has cost().
  /// @param layer the layer's index
  /// @return the layer's cost()
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is outside [0, num_layers())
  [[nodiscard]] layer_cost cost(int layer) const
    requires detail::all_costs<layer_types>
  {
    layer_cost c;
    visit(layer, [&](const auto& l) { c = l.cost(); });
    return c;
  }

  /// @brief The state layer `layer` keeps for one sequence of up to `capacity` tokens while
  /// generating (its KV cache); there when every layer has state_shapes(capacity). With a forward
  /// that takes a ppipe::generation_context, that makes the stack a ppipe::generative_model.
  /// @param layer the layer's index
  /// @param capacity the most tokens the sequence may hold (>= 0)
  /// @return the layer's state_shapes(capacity); a layer's ppipe::error is prefixed with its index
  /// @throws ppipe::error (errc::invalid_argument) when `capacity` is negative or `layer` is
  /// outside [0, num_layers()), or the layer's own ppipe::error, prefixed with the index
  [[nodiscard]] std::vector<shape> state_shapes(int layer, int capacity) const
    requires detail::all_state<layer_types>
  {
    if (capacity < 0) {
      detail::fail(errc::invalid_argument, "state capacity ", capacity, " for layer ", layer,
                   " is negative; give the most tokens a sequence may hold (>= 0)");
    }
    return shapes_of_layer(layer, [&](const auto& l) { return l.state_shapes(capacity); });
  }

  /// @brief Calls `f(tensor_view value, tensor_view gradient)` for every parameter of layers
  /// [first, end), layer by layer in each layer's order; layers without parameters add none.
  /// @param first the first layer's index
  /// @param end one past the last layer's index
  /// @param f a callable as `void(tensor_view value, tensor_view gradient)`; the views point into
  /// the layers' own storage
  /// @tparam F the callable's type
  /// @throws ppipe::error (errc::invalid_argument) when [first, end) is not within
  /// [0, num_layers())
  template <class F>
  void for_each_parameter(int first, int end, F&& f) {
    check_range(first, end, "for_each_parameter");
    for (int i = first; i < end; ++i) {
      visit(i, [&](auto& l) {
        if constexpr (layer_has_parameters<std::decay_t<decltype(l)>>) l.for_each_parameter(f);
      });
    }
  }

  /// @brief Materializes layers [first, end) on `ctx`'s device: each layer that has
  /// materialize(ctx) allocates and initializes its weights; the others hold theirs already.
  /// @param first the first layer's index
  /// @param end one past the last layer's index
  /// @param ctx the context passed to each layer's materialize() (the stage's, naming its device)
  /// @tparam Context the context type
  /// @throws ppipe::error (errc::invalid_argument) when [first, end) is not within
  /// [0, num_layers()); what a layer throws passes through unchanged
  template <class Context>
  void materialize(int first, int end, const Context& ctx) {
    check_range(first, end, "materialize");
    for (int i = first; i < end; ++i) {
      visit(i, [&](auto& l) {
        if constexpr (layer_has_materialize<std::decay_t<decltype(l)>, Context>) l.materialize(ctx);
      });
    }
  }

  /// @brief The compile-time checks of every layer, for ppipe's Model check: one message per
  /// missing member or misuse, naming the layer type in the instantiation that fails.
  /// @tparam Tensor the payloads' tensor type
  /// @tparam Context the context type the layers are called with
  /// @tparam Training whether training members (backward) are required
  /// @return true; a layer that fails a check stops the compilation with a static_assert instead
  template <class Tensor, class Context, bool Training>
  static constexpr bool check_layers() {
    return detail::checked_layers<layer_types, Tensor, Context, Training>;
  }

 protected:
  /// @brief Layer `layer` as an index into the stack; refuses one outside it.
  /// @param layer the layer's index
  /// @return `layer`, as a std::size_t
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is outside [0, num_layers())
  [[nodiscard]] std::size_t checked(int layer) const {
    if (layer < 0 || layer >= num_layers()) {
      detail::fail(errc::invalid_argument, "layer ", layer, " is outside the model's ", num_layers(),
                   " layers; give an index in [0, ", num_layers(), ")");
    }
    return static_cast<std::size_t>(layer);
  }

  /// @brief Refuses layers [first, end) that are not a range of the stack; `what` names the call.
  /// @param first the first layer's index
  /// @param end one past the last layer's index
  /// @param what the calling function's name, for the message
  /// @throws ppipe::error (errc::invalid_argument) unless 0 <= first <= end <= num_layers()
  void check_range(int first, int end, const char* what) const {
    if (first < 0 || first > end || end > num_layers()) {
      detail::fail(errc::invalid_argument, what, "(", first, ", ", end, ") is not a range of the model's ",
                   num_layers(), " layers; give 0 <= first <= end <= ", num_layers());
    }
  }

 private:
  template <class E>
  static std::size_t size_of(const E& part) noexcept {
    if constexpr (detail::stack_element<E>::repeated) {
      return part.size();
    } else {
      return 1;
    }
  }

  template <class L, class F>
  static void on_concrete(L& l, F& f) {
    if constexpr (detail::is_variant<std::remove_const_t<L>>::value) {
      std::visit(f, l);
    } else {
      f(l);
    }
  }

  template <class Self, class F>
  static void with_layer(Self& self, int layer, F& f) {
    auto rest = self.checked(layer);
    bool found = false;
    const auto in_part = [&](auto& part) {
      if (found) return;
      const std::size_t n = size_of(part);
      if (rest >= n) {
        rest -= n;
        return;
      }
      found = true;
      if constexpr (detail::stack_element<std::remove_const_t<std::remove_reference_t<decltype(part)>>>::repeated) {
        on_concrete(part[rest], f);
      } else {
        on_concrete(part, f);
      }
    };
    std::apply([&](auto&... part) { (in_part(part), ...); }, self.parts_);
  }

  // What `ask(l)` returns for layer `layer`, a ppipe::error it throws prefixed with the layer's
  // index: a layer does not know where in the stack it sits.
  template <class Ask>
  std::vector<shape> shapes_of_layer(int layer, Ask ask) const {
    std::vector<shape> out;
    visit(layer, [&](const auto& l) {
      try {
        out = ask(l);
      } catch (const error& e) {
        detail::fail(e.code(), "layer ", layer, ": ", e.message());
      }
    });
    return out;
  }

  std::tuple<Elements...> parts_;
};

/// @brief Deduces a stack's element types from the constructor's arguments, as given.
/// @tparam Elements the arguments' types
template <class... Elements>
layer_stack(Elements...) -> layer_stack<Elements...>;

}  // namespace ppipe
