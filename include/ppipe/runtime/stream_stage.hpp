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
/// @tparam Model the user's layers
/// @tparam Tensor the tensors the layers compute on: host_tensor or ppipe::device_tensor
/// @tparam Device a stream_device
template <class Model, class Tensor, class Device>
  requires model<Model, Tensor, basic_layer_context<Device>>
class stream_stage {
 public:
  using model_type = Model;                    ///< The user's layers.
  using tensor_type = Tensor;                  ///< The tensors the layers compute on.
  using payload_type = basic_payload<Tensor>;  ///< The tensors of one payload.
  /// @brief device_buffers for ppipe::device_tensor, otherwise stream_buffers.
  using buffers_type = std::conditional_t<std::same_as<Tensor, device_tensor>, device_buffers<Device>,
                                          stream_buffers<Tensor, Device>>;
  using box = stream_payload<Tensor>;                ///< A payload that streams may be using.
  using context_type = basic_layer_context<Device>;  ///< What each layer call gets.
  using device_type = Device;                        ///< The stream device the stage runs on.
  using stream_type = typename Device::stream;       ///< A stream of the device.
  /// @brief Told what a call that failed on the stream threw (the executor names rank and action).
  using failure_sink = std::function<void(std::exception_ptr)>;

  /// @brief A stage with no microbatch in flight; the constructor checks nothing.
  /// @param m the whole model (the stage calls only its own layers)
  /// @param index the stage's index in the pipeline
  /// @param first,end its layers [first, end)
  /// @param microbatches how many microbatches a step has
  /// @param device the rank's device (not null; it outlives the stage) and the compute stream the
  /// layers run on
  stream_stage(Model& m, int index, int first, int end, int microbatches, device_context<Device> device)
      : model_(&m), index_(index), first_(first), end_(end), saved_(static_cast<std::size_t>(microbatches)),
        device_(std::move(device)), buffers_(device_.device) {}

  /// @brief The stage's index in the pipeline.
  /// @return the index given to the constructor
  [[nodiscard]] int index() const noexcept { return index_; }
  /// @brief The first of the stage's layers.
  /// @return the model's index of that layer
  [[nodiscard]] int first_layer() const noexcept { return first_; }
  /// @brief One past the last of the stage's layers.
  /// @return the model's index of the layer after the stage's last
  [[nodiscard]] int end_layer() const noexcept { return end_; }
  /// @brief What the stage's layers get as their device context.
  /// @return the stage's own context, valid as long as the stage
  [[nodiscard]] device_context<Device>& device() noexcept { return device_; }
  /// @brief The context the stage's layers get for microbatch `mb` in `mode` (materialize()
  /// gets the training one of microbatch 0).
  /// @param mb the microbatch the context names; not checked
  /// @param mode training or inference
  /// @return the context, which points at this stage's device context
  [[nodiscard]] context_type context(int mb, pass_mode mode) noexcept {
    return context_type{{index_, mb, mode, device_.rank}, &device_};
  }
  /// @brief The compute stream the stage's layer calls are enqueued on.
  /// @return the stream of the stage's device context
  [[nodiscard]] stream_type stream() const noexcept { return device_.stream; }
  /// @brief The buffers the stage takes its payloads from.
  /// @return the stage's own buffers, valid as long as the stage
  [[nodiscard]] buffers_type& pool() noexcept { return buffers_; }
  /// @brief What the stage holds now and has held at most, in the order the host enqueued.
  /// @return the buffers' counts, valid as long as the stage
  [[nodiscard]] const memory_stats& memory() const noexcept { return buffers_.stats(); }
  /// @brief True when no microbatch's activations are held or stashed (after a complete step).
  /// @return whether the buffers count no microbatch as held or stashed
  [[nodiscard]] bool idle() const noexcept {
    return buffers_.stats().live_microbatches == 0 && buffers_.stats().live_stashed == 0;
  }

  /// @brief Readies the stage for a step of `microbatches`; only once the device's streams are
  /// synchronized, since it lets go of everything a failed step left behind.
  /// @param microbatches the step's microbatch count, at least 0
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
  /// layer's input until the backward. Returns the output box, kept until the backward. Throws
  /// ppipe::error on the host: invalid_argument if `mb` is outside the step, invalid_schedule if
  /// the microbatch's forward already ran without its backward. A layer call that fails on the
  /// stream is reported to `sink`; one of a model that enqueues its own work throws here instead.
  /// @param mb the microbatch, in [0, m) of the last prepare()
  /// @param input the stage's input, which the stage now counts as held
  /// @param sink told what a call that fails on the stream threw; may be empty
  /// @return the output box, shared with the stage and the enqueued work
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

  /// @brief The output of microbatch `mb`'s training forward. Throws ppipe::error: invalid_argument
  /// if `mb` is outside the step, invalid_schedule if its forward has not been enqueued.
  /// @param mb the microbatch
  /// @return the output box, shared with the stage, which keeps it until the backward
  box output(int mb) { return live_slot(mb, "a send of its output").acts.back(); }

  /// @brief A zeroed box in the shapes of microbatch `mb`'s output, for the loss's gradient;
  /// backward() takes it over when it runs. Throws ppipe::error as output() does.
  /// @param mb the microbatch whose forward has been enqueued
  /// @return the zeroed box, counted as held by the stage from now on
  box output_gradient_buffer(int mb) {
    record& r = live_slot(mb, "the loss");
    r.gradient_counted = true;
    return buffers_.acquire(r.acts.back().shapes, device_.stream);
  }

  /// @brief Enqueues an inference forward; nothing is kept. The output box leaves the stage.
  /// @param mb the microbatch the layers' context names; not checked against the step
  /// @param input the stage's input, taken over
  /// @param sink told what a call that fails on the stream threw; may be empty
  /// @return the output box, no longer counted by the stage
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
  /// input gradient (empty when `want_input_grad` is false), which leaves the stage. Throws
  /// ppipe::error on the host: invalid_argument if `mb` is outside the step, invalid_schedule if
  /// the microbatch's forward has not been enqueued. A layer call that fails on the stream is
  /// reported to `sink`; one of a model that enqueues its own work throws here instead.
  /// @param mb the microbatch
  /// @param grad_out the gradient of the stage's output, in its shapes
  /// @param want_input_grad whether to compute the gradient of the stage's input
  /// @param sink told what a call that fails on the stream threw; may be empty
  /// @return that gradient's box; empty if not wanted
  box backward(int mb, box grad_out, bool want_input_grad, const failure_sink& sink) {
    return backward_pass(mb, std::move(grad_out), want_input_grad, false, sink);
  }
  /// @brief The input-gradient half (I) of a split backward: like backward(), but keeps the
  /// activations and each layer's output gradient for backward_weight(). Throws ppipe::error as
  /// backward() does, and (unsupported) if the model has no backward_input/backward_weight.
  /// @param mb the microbatch
  /// @param grad_out the gradient of the stage's output, in its shapes
  /// @param want_input_grad whether to compute the gradient of the stage's input
  /// @param sink told what a call that fails on the stream threw; may be empty
  /// @return that gradient's box; empty if not wanted
  box backward_input(int mb, box grad_out, bool want_input_grad, const failure_sink& sink) {
    return backward_pass(mb, std::move(grad_out), want_input_grad, true, sink);
  }
  /// @brief The weight-gradient half (W): enqueued, then the activations are released. Throws
  /// ppipe::error: invalid_argument if `mb` is outside the step, invalid_schedule if the
  /// microbatch's forward or its backward_input() has not been enqueued.
  /// @param mb the microbatch
  /// @param sink told what a call that fails on the stream threw; may be empty
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

  /// @brief What stash() keeps and recompute() re-runs from here on (full until set; none is
  /// taken as full, since a stage is only asked to stash where the schedule has an R).
  /// @param policy the stage's recompute policy
  void set_recompute(recompute_policy policy) noexcept {
    policy_ = policy.recomputes() ? policy : recompute_policy::full;
  }

  /// @brief After the training forward of a microbatch that the schedule recomputes (R): gives
  /// back the layer inputs the recompute policy does not keep once the compute stream is past the
  /// forward, keeping the stage's input and output (a send or the loss may still read it) until recompute().
  /// Throws ppipe::error: invalid_argument if `mb` is outside the step, invalid_schedule if its
  /// forward has not been enqueued or it is stashed already.
  /// @param mb the microbatch
  void stash(int mb) {
    record& r = live_slot(mb, "a stash");
    if (r.stashed) {
      detail::fail(errc::invalid_schedule, "stage ", index_, " stashed microbatch ", mb, " twice; check the schedule");
    }
    for (std::size_t k = 1; k + 1 < r.acts.size(); ++k) {
      if (!policy_.keeps(static_cast<int>(k))) buffers_.release(r.acts[k], device_.stream);
    }
    r.stashed = true;
    buffers_.stash_microbatch();
  }

  /// @brief Enqueues the recompute (R) of a stashed microbatch: the forward of each layer whose
  /// output stash() gave back (every layer but the last under full), from the kept inputs, into
  /// fresh buffers for the backward (the output was kept). Throws
  /// ppipe::error on the host: invalid_argument if `mb` is outside the step, invalid_schedule if
  /// its forward has not been enqueued or it was not stashed. A layer call that fails on the
  /// stream is reported to `sink`; one of a model that enqueues its own work throws here instead.
  /// @param mb the microbatch
  /// @param sink told what a call that fails on the stream threw; may be empty
  void recompute(int mb, const failure_sink& sink) {
    record& r = live_slot(mb, "recompute");
    if (!r.stashed) {
      detail::fail(errc::invalid_schedule, "stage ", index_, " ran R of microbatch ", mb,
                   ", whose forward kept its activations; a schedule recomputes only what it stashed");
    }
    r.stashed = false;
    buffers_.unstash_microbatch();
    const context_type ctx = context(mb, pass_mode::training);
    for (int layer = first_; layer + 1 < end_; ++layer) {
      const auto k = static_cast<std::size_t>(layer - first_);
      if (policy_.keeps(layer + 1 - first_)) continue;  // its output was kept
      box in = r.acts[k];
      box out = buffers_.acquire(model_->output_shapes(layer, in.shapes), device_.stream);
      launch(layer, mb, "forward", sink, {&in}, {&out}, [m = model_, layer, ctx, in = in.data, out = out.data] {
        m->forward(layer, ctx, *in, *out);
      });
      r.acts[k + 1] = std::move(out);
    }
  }

 private:
  struct record {
    std::vector<box> acts;   // acts[k]: input of layer first+k; acts.back(): the output
    std::vector<box> grads;  // after I: grads[k] is the gradient of layer first+k's output
    bool live = false;
    bool gradient_counted = false;
    bool stashed = false;  // only the inputs policy_ keeps and acts.back() are kept, until R
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
    if (r.stashed) detail::fail_stashed(index_, mb, input_half ? "I" : "B");
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
    if (r.live && r.stashed) {
      buffers_.drop_stashed();
    } else if (r.live) {
      buffers_.drop_microbatch();
    }
    r.live = false;
    r.gradient_counted = false;
    r.stashed = false;
  }

  Model* model_;
  recompute_policy policy_ = recompute_policy::full;  // what stash() keeps
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
