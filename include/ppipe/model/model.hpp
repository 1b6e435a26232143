#pragma once
/// @file
/// @brief The Model concept: what ppipe needs from a user's layer stack, and the loss and optimizer
/// hooks that go with it.

#include <algorithm>
#include <any>
#include <concepts>
#include <cstddef>
#include <functional>
#include <span>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "ppipe/device/inline_device.hpp"
#include "ppipe/error.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/tensor/tensor_view.hpp"

namespace ppipe {

/// @brief Whether a forward is part of a training step (its activations are kept for the
/// backward) or of inference (nothing is kept).
enum class pass_mode : unsigned char { training, inference };

/// @brief What a backend gives the layers of one stage: the rank's device, the stage's compute
/// stream on it, and a slot the user fills once per stage (a cuBLAS handle, a workspace).
/// Layers launch their work on `stream`; on the host backend it is the calling thread.
/// @tparam Device the backend's model of ppipe's stream-ordered execution
template <class Device>
struct device_context {
  Device* device = nullptr;          ///< the rank's device
  typename Device::stream stream{};  ///< the compute stream every layer of the stage runs on
  int ordinal = 0;                   ///< which device of the process (0 on the host)
  int rank = 0;                      ///< the pipeline rank the stage runs on

  /// @brief The stage's own object of type T, made by `make()` on first use and kept as long as
  /// the stage: the place for what a layer needs once per stage and device.
  /// @param make a callable returning a T, called at most once per stage
  /// @return the stage's T
  template <class T, class Make>
  T& slot(Make&& make) {
    if (!slot_.has_value()) slot_ = T(std::forward<Make>(make)());
    T* held = std::any_cast<T>(&slot_);
    if (held == nullptr) {
      detail::fail(errc::invalid_argument, "the stage's device slot holds a ", slot_.type().name(), ", not the ",
                   typeid(T).name(), " asked for; keep one type per stage slot (a struct of what you need)");
    }
    return *held;
  }

 private:
  std::any slot_;
};

/// @brief What a layer call is part of: the stage running it, the microbatch, the pass and the
/// rank. Every backend's context derives from it, so a layer written against it runs on any
/// backend; one that launches device work takes the backend's basic_layer_context instead.
/// A layer that keeps per-request state (a KV cache) finds its request through `microbatch`.
struct layer_context {
  int stage = 0;                         ///< the index of the stage running the call
  int microbatch = 0;                    ///< the index of the microbatch the call is for
  pass_mode mode = pass_mode::training;  ///< whether the call is part of training or of inference
  int rank = 0;                          ///< the pipeline rank the stage runs on
};

/// @brief The layer context of a backend whose device model is `Device`: adds the stage's
/// device context (the device, the compute stream to launch on, the stage's slot).
/// @tparam Device the backend's device model (ppipe::inline_device on the host backends)
template <class Device>
struct basic_layer_context : layer_context {
  /// The stage's device context (never null inside a pipeline; null in a context built by hand).
  device_context<Device>* device = nullptr;
};

/// @brief The context the host backends (threads, MPI processes) hand their layers.
using host_layer_context = basic_layer_context<inline_device>;

/// @brief Which stage an optimizer hook runs for: the stage, its rank and its layers
/// [first_layer, end_layer).
struct stage_info {
  int stage = 0;        ///< the stage's index
  int rank = 0;         ///< the pipeline rank the stage runs on
  int first_layer = 0;  ///< the index of the stage's first layer
  int end_layer = 0;    ///< one past the index of the stage's last layer
};

// The parts of the Model concept, one requirement each, so that a type missing one is told which.

/// @brief `int num_layers() const`: how many layers the model has.
template <class M>
concept model_has_layers = requires(const M& m) {
  { m.num_layers() } -> std::convertible_to<int>;
};

/// @brief `std::vector<shape> output_shapes(int layer, const std::vector<shape>& in) const`: the
/// shapes layer `layer` produces from inputs of shapes `in`; it throws (any exception) when it
/// cannot take `in`. ppipe allocates every output and gradient buffer from these shapes.
template <class M>
concept model_has_shapes = requires(const M& m, int layer, const std::vector<shape>& in) {
  { m.output_shapes(layer, in) } -> std::convertible_to<std::vector<shape>>;
};

/// @brief `void forward(int layer, const layer_context&, const P& in, P& out)`: fills `out`
/// (allocated by ppipe with output_shapes()) from `in`. In training it may keep what its backward
/// needs beyond `in` and `out` keyed by ctx.microbatch, but most layers need nothing more. With
/// activation recomputation (pipeline_options::recompute, or R actions) a training forward runs
/// again, with the same context, before its backward: it must then compute the same bits from the
/// same input (no state that changes per call, such as a dropout mask drawn anew).
template <class M, class Tensor, class Context = host_layer_context>
concept model_has_forward = requires(M& m, int layer, const Context& ctx,
                                     const basic_payload<Tensor>& in, basic_payload<Tensor>& out) {
  m.forward(layer, ctx, in, out);
};

/// @brief `void backward(int layer, const layer_context&, const P& in, const P& out,
/// const P& grad_out, P& grad_in)`: writes the gradient of the layer's input into `grad_in`
/// (allocated and zeroed by ppipe; empty when nobody needs it, for the model's first layer) and
/// adds the gradient of the layer's weights to the model's gradient accumulators.
template <class M, class Tensor, class Context = host_layer_context>
concept model_has_backward = requires(M& m, int layer, const Context& ctx,
                                      const basic_payload<Tensor>& in, basic_payload<Tensor>& grad_in) {
  m.backward(layer, ctx, in, in, in, grad_in);
};

/// @brief The optional split of backward for zero-bubble schedules:
/// `backward_input(layer, ctx, in, out, grad_out, grad_in)` (input gradient only) and
/// `backward_weight(layer, ctx, in, out, grad_out)` (weight gradient only).
template <class M, class Tensor, class Context = host_layer_context>
concept model_has_split_backward = requires(M& m, int layer, const Context& ctx,
                                            const basic_payload<Tensor>& in, basic_payload<Tensor>& grad_in) {
  m.backward_input(layer, ctx, in, in, in, grad_in);
  m.backward_weight(layer, ctx, in, in, in);
};

/// @brief The optional `layer_cost cost(int layer) const`: what the partitioner balances. Without
/// it every layer costs the same.
template <class M>
concept model_has_costs = requires(const M& m, int layer) {
  { m.cost(layer) } -> std::convertible_to<layer_cost>;
};

/// @brief The optional `void for_each_parameter(int first, int end, F f)`, calling
/// `f(ppipe::tensor_view value, ppipe::tensor_view gradient)` for every parameter of layers
/// [first, end) in a fixed order (ppipe::layers::sequential has it). A std::span<float> (or of
/// any tensor_element type) converts to a tensor_view. With data-parallel replicas ppipe averages
/// the gradients through it after every step: f32 ones as they are, bf16 and f16 ones through
/// float; other dtypes are refused.
template <class M>
concept model_has_parameters = requires(M& m, int layer, void (*f)(tensor_view, tensor_view)) {
  m.for_each_parameter(layer, layer, f);
};

/// @brief The optional `void materialize(int first, int end, const Context& ctx)`: allocates and
/// initializes the weights of layers [first, end) on the stage's device (`ctx.device`). ppipe
/// calls it once per stage this process runs, before the first step, so that a process holds only
/// its own stages' weights; a model without it holds all of its weights from construction.
template <class M, class Context = host_layer_context>
concept model_has_materialize = requires(M& m, int layer, const Context& ctx) { m.materialize(layer, layer, ctx); };

/// @brief A model (or a layer) whose calls enqueue their work on the context's compute stream
/// (`ctx.device->stream`) and return at once, as GPU kernels do: it says so with
/// `static constexpr bool enqueues_work = true;`. A stage on a stream device calls it on the rank's
/// host thread. Without it, the stage enqueues each call itself as host work, so that plain C++
/// layers also run in stream order (on the CPU-stream backend). Work it enqueues keeps the device
/// tensors it needs by value (handles to device memory, as a kernel launch copies its pointer
/// arguments): the payload objects it was handed may be gone by the time the work runs.
template <class M>
concept enqueues_own_work = requires {
  requires M::enqueues_work;
};

/// @brief A model ppipe can run forward (inference): layers, shapes and forward.
template <class M, class Tensor = host_tensor, class Context = host_layer_context>
concept model = model_has_layers<M> && model_has_shapes<M> && model_has_forward<M, Tensor, Context>;

/// @brief A model ppipe can train: a model with a backward.
template <class M, class Tensor = host_tensor, class Context = host_layer_context>
concept trainable_model = model<M, Tensor, Context> && model_has_backward<M, Tensor, Context>;

/// @brief The loss on the last stage: `loss(output, target, grad_output, scale)` returns the
/// microbatch's loss and writes scale × d(loss)/d(output) into `grad_output` (allocated and zeroed
/// by ppipe in the output's shapes). ppipe passes each microbatch its share of the batch as
/// `scale` (rows / batch rows), so that a mean-reduced loss accumulates the full batch's gradient.
template <class Tensor = host_tensor>
using loss_function = std::function<double(const basic_payload<Tensor>& output, const basic_payload<Tensor>& target,
                                           basic_payload<Tensor>& grad_output, double scale)>;

/// @brief The loss on a last stage whose tensors live in a device's memory (a backend whose
/// `stage_tensor_type` differs from its `tensor_type`): `loss(ctx, output, target, grad_output,
/// scale, value)` writes the microbatch's loss, one f64, into `value` and scale × d(loss)/d(output)
/// into `grad_output` (zeroed by ppipe), all in the device's memory. It runs the way the model's
/// layers run: where they enqueue their own work (ppipe::enqueues_own_work) it is called on the
/// rank's host thread and enqueues its work on `ctx.device->stream`; otherwise ppipe calls it in
/// stream order. The host reads the values once the step's work is done.
template <class Tensor, class Context>
using device_loss_function =
    std::function<void(const Context& ctx, const basic_payload<Tensor>& output, const basic_payload<Tensor>& target,
                       basic_payload<Tensor>& grad_output, double scale, const Tensor& value)>;

/// @brief The loss a pipeline takes: ppipe::loss_function where stages compute on the batch's own
/// tensors, ppipe::device_loss_function where they compute on device tensors.
template <class BatchTensor, class StageTensor, class Context>
using stage_loss_function = std::conditional_t<std::same_as<BatchTensor, StageTensor>, loss_function<BatchTensor>,
                                               device_loss_function<StageTensor, Context>>;

namespace detail {
/// Whether `L` can be called as a loss over payloads of Tensor.
template <class L, class Tensor>
concept loss_callable = std::is_invocable_r_v<double, L&, const basic_payload<Tensor>&, const basic_payload<Tensor>&,
                                              basic_payload<Tensor>&, double>;
/// Whether it can be called with a const grad_output too: then it takes it by value or by const
/// reference, and cannot hand back the gradient.
template <class L, class Tensor>
concept loss_gradient_not_writable = std::is_invocable_v<L&, const basic_payload<Tensor>&, const basic_payload<Tensor>&,
                                                         const basic_payload<Tensor>&, double>;
}  // namespace detail

/// @brief Runs once per stage after every train_step, on the stage's rank, once the stage's
/// gradients are complete: the place for the optimizer update and zeroing the gradients.
using optimizer_hook = std::function<void(const stage_info&)>;

/// @brief What an optimizer hook is told on a backend whose device model is `Device`: the stage,
/// and its device context, so that an update can run on the stage's stream with its handle.
template <class Device>
struct basic_stage_info : stage_info {
  device_context<Device>* device = nullptr;  ///< the stage's device context
};

/// @brief An optimizer hook that may read the stage's device context. A hook taking
/// `const stage_info&` converts to it.
template <class Device>
using basic_optimizer_hook = std::function<void(const basic_stage_info<Device>&)>;

namespace detail {

// A forward or backward that compiles with a const output cannot write into it: it takes the
// output (or grad_in) by value or by const reference, and the tensors ppipe allocated stay as
// they were. It compiles, runs, and the loss never changes; hence a compile-time check.
template <class M, class Tensor, class Context>
concept model_forward_output_not_writable = requires(M& m, int layer, const Context& ctx,
                                                     const basic_payload<Tensor>& p) { m.forward(layer, ctx, p, p); };
template <class M, class Tensor, class Context>
concept model_backward_grad_in_not_writable = requires(M& m, int layer, const Context& ctx,
                                                       const basic_payload<Tensor>& p) {
  m.backward(layer, ctx, p, p, p, p);
};

/// The misuse that models and layers share: a forward whose output, or a backward whose grad_in,
/// would compile as a const payload (taken by value or by const reference). Each flag is whether
/// that misuse is there.
template <bool OutputNotWritable, bool GradInNotWritable>
constexpr bool check_writable() {
  static_assert(!OutputNotWritable,
                "ppipe: forward takes its output by value or by const reference, so what it writes never reaches "
                "the next layer: take `payload& out` and write into the tensors ppipe allocated");
  static_assert(!GradInNotWritable,
                "ppipe: backward (or backward_input) takes grad_in by value or by const reference, so the input "
                "gradient never reaches the layer before it: take `payload& grad_in` and write into it");
  return true;
}

/// One readable message per missing member or misuse of a model written against the Model concept.
template <class M, class Tensor, class Context, bool Training>
constexpr bool check_model_members() {
  static_assert(model_has_layers<M>,
                "ppipe: the model needs `int num_layers() const`, the number of layers to split into stages");
  static_assert(model_has_shapes<M>,
                "ppipe: the model needs `std::vector<ppipe::shape> output_shapes(int layer, "
                "const std::vector<ppipe::shape>& in) const`, the shapes layer `layer` makes from `in`");
  static_assert(model_has_forward<M, Tensor, Context>,
                "ppipe: the model needs `void forward(int layer, const ppipe::layer_context&, "
                "const payload& in, payload& out)`");
  if constexpr (Training) {
    static_assert(model_has_backward<M, Tensor, Context>,
                  "ppipe: training needs `void backward(int layer, const ppipe::layer_context&, const payload& in, "
                  "const payload& out, const payload& grad_out, payload& grad_in)` in the model");
  }
  return check_writable<model_forward_output_not_writable<M, Tensor, Context>,
                        Training && model_backward_grad_in_not_writable<M, Tensor, Context>>();
}

/// Turns an unsatisfied Model concept into one readable message per missing member or misuse. A
/// model made of layers (ppipe::layer_stack) checks its layers instead, whose messages say more.
template <class M, class Tensor, class Context, bool Training>
constexpr bool check_model() {
  if constexpr (requires { M::template check_layers<Tensor, Context, Training>(); }) {
    return M::template check_layers<Tensor, Context, Training>();
  } else {
    return check_model_members<M, Tensor, Context, Training>();
  }
}

/// Appends a gradient's values to `packed` as floats (what the replicas all-reduce).
inline void widen_gradient(const tensor_view& g, std::vector<float>& packed) {
  if (g.type == dtype::f32) {
    const std::span<float> v = g.as<float>();
    packed.insert(packed.end(), v.begin(), v.end());
    return;
  }
  visit_dtype(g.type, [&]<class T>(std::type_identity<T>) {
    if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>) {
      for (const T x : g.as<T>()) packed.push_back(static_cast<float>(x));
    } else {
      fail(errc::unsupported, "ppipe averages gradients of f32, bf16 and f16 over replicas, not of ",
           to_string(g.type), "; keep such parameters out of for_each_parameter or run one replica");
    }
  });
}

/// Writes `g`'s values back from packed[at...] (rounded to g's dtype); returns the next offset.
inline std::size_t narrow_gradient(const std::vector<float>& packed, std::size_t at, const tensor_view& g) {
  visit_dtype(g.type, [&]<class T>(std::type_identity<T>) {
    if constexpr (std::is_same_v<T, float>) {
      std::copy_n(packed.begin() + static_cast<std::ptrdiff_t>(at), g.elements, g.as<float>().begin());
    } else if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, float16>) {
      const std::span<T> v = g.as<T>();
      for (std::size_t k = 0; k < v.size(); ++k) v[k] = T(packed[at + k]);
    }
  });
  return at + g.elements;
}

/// Replaces each gradient by what `reduce(std::span<float>)` makes of them all, packed as floats
/// (bf16 and f16 widened exactly, rounded back to nearest even): how replicas average gradients of
/// any floating dtype with one all-reduce of floats.
template <class Reduce>
void reduce_as_floats(std::span<const tensor_view> gradients, Reduce&& reduce) {
  std::vector<float> packed;
  for (const tensor_view& g : gradients) widen_gradient(g, packed);
  reduce(std::span<float>(packed));
  std::size_t at = 0;
  for (const tensor_view& g : gradients) at = narrow_gradient(packed, at, g);
}

}  // namespace detail
}  // namespace ppipe
