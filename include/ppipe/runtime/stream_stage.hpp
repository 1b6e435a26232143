#pragma once
/// @file
/// @brief A stage on a stream device: the same layers and activations as ppipe::stage, but every
/// layer call is enqueued on the stage's compute stream and the host returns at once.

#include <concepts>
#include <cstddef>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "ppipe/device/stream_device.hpp"
#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/runtime/stage.hpp"
#include "ppipe/runtime/device_buffers.hpp"
#include "ppipe/runtime/stream_buffers.hpp"
#include "ppipe/tensor/device_tensor.hpp"

namespace ppipe {

/// @brief Layers [first, end) of a model on a stream device. The host thread of its rank plans:
/// it works out shapes with output_shapes(), takes buffers and enqueues each layer call on the
/// compute stream (ctx.device->stream), declaring what the call reads and writes; the stream runs
/// the calls in order. A model whose layers enqueue their own work (ppipe::enqueues_own_work, as
/// GPU kernels do) is called on the host thread instead, and its work fails on the stream, where
/// the device's error() reports it. Payloads are stream_payload boxes that the enqueued calls
/// share, so the host hands them on (to a send, to the next stage) without waiting. A call that throws, or
/// leaves tensors of other shapes than it was handed, fails on the stream: the failure goes to the
/// sink the executor gave, and the device's error stops the stream's later work.
///
/// Counting follows ppipe::stage: a stage counts a payload from the call that takes it (forward,
/// backward) until it releases it or hands it on, in the order the host enqueues.
///
/// Tensor is the host's tensor (the CPU model holds payloads in host memory) or
/// ppipe::device_tensor, whose bytes the device's stream-ordered allocator hands out
/// (device_buffers): then the host never touches them, and the executor copies the batch in and
/// out, and every transfer, through host memory.
template <class Model, class Tensor, class Device>
  requires model<Model, Tensor, basic_layer_context<Device>>
class stream_stage {
 public:
  using model_type = Model;
  using tensor_type = Tensor;
  using payload_type = basic_payload<Tensor>;
  using buffers_type = std::conditional_t<std::same_as<Tensor, device_tensor>, device_buffers<Device>,
                                          stream_buffers<Tensor, Device>>;
  using box = stream_payload<Tensor>;
  using context_type = basic_layer_context<Device>;
  using device_type = Device;
  using stream_type = typename Device::stream;
  /// @brief Told what a call that failed on the stream threw (the executor names rank and action).
  using failure_sink = std::function<void(std::exception_ptr)>;

  /// @param m the whole model (the stage calls only its own layers)
  /// @param index the stage's index in the pipeline
  /// @param first,end its layers [first, end)
  /// @param microbatches how many microbatches a step has
  /// @param device the rank's device and the compute stream the layers run on
  stream_stage(Model& m, int index, int first, int end, int microbatches, device_context<Device> device)
      : model_(&m), index_(index), first_(first), end_(end), saved_(static_cast<std::size_t>(microbatches)),
        device_(std::move(device)), buffers_(device_.device) {}

  [[nodiscard]] int index() const noexcept { return index_; }
  [[nodiscard]] int first_layer() const noexcept { return first_; }
  [[nodiscard]] int end_layer() const noexcept { return end_; }
  [[nodiscard]] device_context<Device>& device() noexcept { return device_; }
  /// @brief The context the stage's layers get for microbatch `mb` in `mode` (materialize()
  /// gets the training one of microbatch 0).
  [[nodiscard]] context_type context(int mb, pass_mode mode) noexcept {
    return context_type{{index_, mb, mode, device_.rank}, &device_};
  }
  [[nodiscard]] stream_type stream() const noexcept { return device_.stream; }
  [[nodiscard]] buffers_type& pool() noexcept { return buffers_; }
  [[nodiscard]] const memory_stats& memory() const noexcept { return buffers_.stats(); }
  [[nodiscard]] bool idle() const noexcept { return buffers_.stats().live_microbatches == 0; }

  /// @brief Readies the stage for a step of `microbatches`; only once the device's streams are
  /// synchronized, since it lets go of everything a failed step left behind.
  void prepare(int microbatches) {
    for (record& r : saved_) r = record{};
    saved_.resize(static_cast<std::size_t>(microbatches));
    buffers_.settle(device_.stream);
    buffers_.reset_live();
  }

  /// @brief After a step that failed while it was captured, and whose capture was discarded:
  /// what it allocated was the graph's and is gone, so nothing is left to free.
  void abandon_capture() {
    if constexpr (requires { buffers_.forget_held(); }) buffers_.forget_held();
    for (record& r : saved_) r = record{};
    buffers_.reset_live();
  }

  /// @brief Enqueues the training forward of microbatch `mb` on `input` (taken) and keeps every
  /// layer's input until the backward. Returns the output box, kept until the backward.
  box forward(int mb, box input, const failure_sink& sink) {
    record& r = slot(mb);
    if (r.live) {
      detail::fail(errc::invalid_schedule, "stage ", index_, " ran the forward of microbatch ", mb,
                   " twice without its backward in between; check the schedule");
    }
    buffers_.count(input);
    buffers_.hold_microbatch();
    r.live = true;
    r.acts.clear();
    r.acts.push_back(std::move(input));
    const context_type ctx = context(mb, pass_mode::training);
    for (int layer = first_; layer < end_; ++layer) {
      box in = r.acts.back();
      box out = buffers_.acquire(model_->output_shapes(layer, in.shapes), device_.stream);
      launch(layer, mb, "forward", sink, {&in}, {&out}, [m = model_, layer, ctx, in = in.data, out = out.data] {
        m->forward(layer, ctx, *in, *out);
      });
      r.acts.push_back(std::move(out));
    }
    return r.acts.back();
  }

  /// @brief The output of microbatch `mb`'s training forward.
  box output(int mb) { return live_slot(mb, "a send of its output").acts.back(); }

  /// @brief A zeroed box in the shapes of microbatch `mb`'s output, for the loss's gradient.
  box output_gradient_buffer(int mb) {
    record& r = live_slot(mb, "the loss");
    r.gradient_counted = true;
    return buffers_.acquire(r.acts.back().shapes, device_.stream);
  }

  /// @brief Enqueues an inference forward; nothing is kept. The output box leaves the stage.
  box infer(int mb, box input, const failure_sink& sink) {
    buffers_.count(input);
    buffers_.hold_microbatch();
    const context_type ctx = context(mb, pass_mode::inference);
    for (int layer = first_; layer < end_; ++layer) {
      box out = buffers_.acquire(model_->output_shapes(layer, input.shapes), device_.stream);
      launch(layer, mb, "forward", sink, {&input}, {&out}, [m = model_, layer, ctx, in = input.data, out = out.data] {
        m->forward(layer, ctx, *in, *out);
      });
      buffers_.release(input, device_.stream);
      input = std::move(out);
    }
    buffers_.drop_microbatch();
    buffers_.forget(input);
    return input;
  }

  /// @brief Enqueues the full backward of microbatch `mb` from `grad_out` (taken). Returns the
  /// input gradient (empty when `want_input_grad` is false), which leaves the stage.
  box backward(int mb, box grad_out, bool want_input_grad, const failure_sink& sink) {
    return backward_pass(mb, std::move(grad_out), want_input_grad, false, sink);
  }
  /// @brief The input-gradient half (I) of a split backward.
  box backward_input(int mb, box grad_out, bool want_input_grad, const failure_sink& sink) {
    return backward_pass(mb, std::move(grad_out), want_input_grad, true, sink);
  }
  /// @brief The weight-gradient half (W): enqueued, then the activations are released.
  void backward_weight(int mb, const failure_sink& sink) {
    record& r = live_slot(mb, "backward_weight");
    if (r.grads.size() + 1 != r.acts.size()) {
      detail::fail(errc::invalid_schedule, "stage ", index_, " ran W of microbatch ", mb,
                   " before its I; a split backward runs I, then W");
    }
    const context_type ctx = context(mb, pass_mode::training);
    for (int layer = end_ - 1; layer >= first_; --layer) {
      const auto k = static_cast<std::size_t>(layer - first_);
      if constexpr (model_has_split_backward<Model, Tensor, context_type>) {
        launch(layer, mb, "backward_weight", sink, {&r.acts[k], &r.acts[k + 1], &r.grads[k]}, {},
               [m = model_, layer, ctx, in = r.acts[k].data, out = r.acts[k + 1].data, g = r.grads[k].data] {
                 m->backward_weight(layer, ctx, *in, *out, *g);
               });
      }
    }
    release(r);
  }

 private:
  struct record {
    std::vector<box> acts;   // acts[k]: input of layer first+k; acts.back(): the output
    std::vector<box> grads;  // after I: grads[k] is the gradient of layer first+k's output
    bool live = false;
    bool gradient_counted = false;
  };

  // Declares the accesses, then enqueues `call` followed by the check that the layer left tensors
  // of the shapes it was handed in what it writes.
  template <class Call>
  void launch(int layer, int mb, const char* what, const failure_sink& sink, std::initializer_list<const box*> reads,
              std::initializer_list<const box*> writes, Call&& call) {
    Device& d = *device_.device;
    for (const box* b : reads) {
      for (const auto& r : b->regions) d.use(device_.stream, r.data, r.bytes, access::read);
    }
    std::vector<std::pair<std::shared_ptr<payload_type>, std::vector<shape>>> written;
    for (const box* b : writes) {
      for (const auto& r : b->regions) d.use(device_.stream, r.data, r.bytes, access::write);
      written.emplace_back(b->data, b->shapes);
    }
    if constexpr (enqueues_own_work<Model>) {
      // The call enqueues its own work and returns: what it throws is the host's, and the tensor
      // objects it was handed are final once it returns (its kernels write their memory later).
      call();
      for (const auto& [data, want] : written) detail::check_written(*data, want, index_, layer, mb, written_by(what));
      return;
    }
    d.enqueue(
        device_.stream,
        [call = std::forward<Call>(call), written = std::move(written), sink, index = index_, layer, mb, what]() mutable {
          try {
            call();
            for (const auto& [data, want] : written) detail::check_written(*data, want, index, layer, mb, written_by(what));
          } catch (...) {
            if (sink) sink(std::current_exception());
            throw;
          }
        },
        detail::concat(what, " of layer ", layer, ", microbatch ", mb, " (stage ", index_, ")"));
  }

  // What a call writes, as the shape check names it: a forward its output, a backward the input
  // gradient (backward_weight writes no payload).
  static const char* written_by(const char* call) {
    return std::string_view(call) == "forward" ? "an output" : "an input gradient";
  }

  box backward_pass(int mb, box grad_out, bool want_input_grad, bool input_half, const failure_sink& sink) {
    record& r = live_slot(mb, input_half ? "backward_input" : "backward");
    detail::check_split_backward<model_has_split_backward<Model, Tensor, context_type>>(input_half);
    if (!r.gradient_counted) buffers_.count(grad_out);
    r.gradient_counted = false;
    const context_type ctx = context(mb, pass_mode::training);
    if (input_half) r.grads.assign(r.acts.size() - 1, box{});
    box g = std::move(grad_out);
    for (int layer = end_ - 1; layer >= first_; --layer) {
      const auto k = static_cast<std::size_t>(layer - first_);
      const bool wanted = layer > first_ || want_input_grad;
      box gin = wanted ? buffers_.acquire(r.acts[k].shapes, device_.stream) : box{};
      const auto body = [m = model_, layer, ctx, input_half, in = r.acts[k].data, out = r.acts[k + 1].data, g = g.data,
                         gin = gin.data, none = &none_] {
        payload_type& into = gin ? *gin : *none;
        if (input_half) {
          if constexpr (model_has_split_backward<Model, Tensor, context_type>) m->backward_input(layer, ctx, *in, *out, *g, into);
        } else {
          if constexpr (model_has_backward<Model, Tensor, context_type>) m->backward(layer, ctx, *in, *out, *g, into);
        }
      };
      if (wanted) {
        launch(layer, mb, input_half ? "backward_input" : "backward", sink, {&r.acts[k], &r.acts[k + 1], &g}, {&gin}, body);
      } else {
        launch(layer, mb, input_half ? "backward_input" : "backward", sink, {&r.acts[k], &r.acts[k + 1], &g}, {}, body);
      }
      if (input_half) {
        r.grads[k] = std::move(g);
      } else {
        buffers_.release(g, device_.stream);
      }
      g = std::move(gin);
    }
    if (!input_half) release(r);
    if (g) buffers_.forget(g);
    return g;
  }

  record& slot(int mb) { return detail::microbatch_slot(saved_, index_, mb); }
  record& live_slot(int mb, const char* what) { return detail::live_microbatch_slot(saved_, index_, mb, what); }
  // Releases a microbatch's buffers once the compute stream is past what was enqueued so far.
  void release(record& r) {
    for (box& b : r.acts) buffers_.release(b, device_.stream);
    for (box& b : r.grads) buffers_.release(b, device_.stream);
    r.acts.clear();
    r.grads.clear();
    if (r.live) buffers_.drop_microbatch();
    r.live = false;
    r.gradient_counted = false;
  }

  Model* model_;
  int index_;
  int first_;
  int end_;
  std::vector<record> saved_;
  device_context<Device> device_;
  buffers_type buffers_;
  // The grad_in of a backward that wants none: empty, and as long-lived as the stage, since a
  // layer that enqueues its own work may hold on to it until that work runs.
  payload_type none_;
};

}  // namespace ppipe
