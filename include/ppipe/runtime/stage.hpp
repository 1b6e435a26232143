#pragma once
/// @file
/// @brief A stage: a contiguous range of a model's layers on one rank, and the activations it
/// keeps between a microbatch's forward and its backward.

#include <concepts>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/runtime/buffer_pool.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/schedule/recompute.hpp"

namespace ppipe {
namespace detail {

/// Microbatch `mb`'s record of stage `stage`, refused when the step has no such microbatch.
template <class Record>
Record& microbatch_slot(std::vector<Record>& saved, int stage, int mb) {
  if (mb < 0 || static_cast<std::size_t>(mb) >= saved.size()) {
    fail(errc::invalid_argument, "stage ", stage, " got microbatch ", mb, ", outside 0..", saved.size() - 1,
         "; the schedule and the step disagree on m");
  }
  return saved[static_cast<std::size_t>(mb)];
}

/// The same, for an action (`what`) that needs the microbatch's forward to have run.
template <class Record>
Record& live_microbatch_slot(std::vector<Record>& saved, int stage, int mb, const char* what) {
  Record& r = microbatch_slot(saved, stage, mb);
  if (!r.live) {
    fail(errc::invalid_schedule, "stage ", stage, " ran ", what, " of microbatch ", mb, " without its forward; check the schedule");
  }
  return r;
}

/// A layer fills the tensors it is handed: one that puts tensors of other shapes in their place
/// (`what`: "an output", "an input gradient") would give the next layer, the loss or a transfer a
/// payload that nothing checked. One message for every stage type.
template <class Payload>
void check_written(const Payload& got, const std::vector<shape>& want, int stage, int layer, int mb, const char* what) {
  if (has_shapes(got, want)) return;
  fail(errc::invalid_argument, "stage ", stage, ": layer ", layer, " left ", what, " of shapes ", to_string(shapes_of(got)),
       " for microbatch ", mb, " where it was handed ", to_string(want),
       "; a layer must write into the tensors it is given (shaped by output_shapes()), not replace them");
}

/// Refuses the I half of a split backward when the model has no split backward (`Split` false).
template <bool Split>
void check_split_backward(bool input_half) {
  if constexpr (!Split) {
    if (input_half) {
      fail(errc::unsupported, "the schedule splits the backward (I and W), but the model has no "
           "backward_input/backward_weight; give it both, or use a schedule with full backwards");
    }
  }
}

/// A backward of a microbatch whose activations were stashed for an R that has not run yet.
[[noreturn]] inline void fail_stashed(int stage, int mb, const char* what) {
  fail(errc::invalid_schedule, "stage ", stage, " ran ", what, " of microbatch ", mb,
       " before the recompute (R) its stashed activations wait for; put R before the backward");
}

}  // namespace detail

/// @brief Layers [first, end) of a model, run for one microbatch at a time. In training each
/// microbatch's layer inputs are kept from its forward until the backward that last needs them
/// (B, or W of a split backward) and then go back to the pool at once. Used by its rank's thread
/// only.
/// @tparam Model the user's layers
/// @tparam Tensor the backend's tensor type
/// @tparam Device the backend's device model: layers get its device_context in their context
template <class Model, class Tensor = host_tensor, class Device = inline_device>
  requires model<Model, Tensor, basic_layer_context<Device>>
class stage {
 public:
  using model_type = Model;                          ///< The user's layers.
  using tensor_type = Tensor;                        ///< The tensors the layers compute on.
  using payload_type = basic_payload<Tensor>;        ///< The tensors of one payload.
  using context_type = basic_layer_context<Device>;  ///< What each layer call gets.
  using device_type = Device;                        ///< The backend's device model.

  /// @brief A stage with no microbatch in flight; the constructor checks nothing.
  /// @param m the whole model (the stage calls only its own layers)
  /// @param index the stage's index in the pipeline
  /// @param first,end its layers [first, end)
  /// @param microbatches how many microbatches a step has (slots for their activations)
  /// @param device what the stage's layers get as their device context (device, stream, rank)
  stage(Model& m, int index, int first, int end, int microbatches, device_context<Device> device = {})
      : model_(&m), index_(index), first_(first), end_(end), saved_(static_cast<std::size_t>(microbatches)),
        device_(std::move(device)) {}

  /// @brief The stage's index in the pipeline.
  /// @return the index given to the constructor
  [[nodiscard]] int index() const noexcept { return index_; }
  /// @brief The first of the stage's layers.
  /// @return the model's index of that layer
  [[nodiscard]] int first_layer() const noexcept { return first_; }
  /// @brief One past the last of the stage's layers.
  /// @return the model's index of the layer after the stage's last
  [[nodiscard]] int end_layer() const noexcept { return end_; }
  /// @brief The model whose layers [first_layer(), end_layer()) the stage runs.
  /// @return the model given to the constructor, which the stage does not own
  [[nodiscard]] Model& model() const noexcept { return *model_; }
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
  /// @brief The pool the stage takes its buffers from.
  /// @return the stage's own pool, valid as long as the stage
  [[nodiscard]] buffer_pool<Tensor>& pool() noexcept { return pool_; }
  /// @brief What the stage holds now and has held at most.
  /// @return the pool's counts, valid as long as the stage
  [[nodiscard]] const memory_stats& memory() const noexcept { return pool_.stats(); }
  /// @brief Readies the stage for a step with `microbatches` microbatches: lets go of anything a
  /// failed step left behind and sizes the per-microbatch slots.
  /// @param microbatches the step's microbatch count, at least 0
  void prepare(int microbatches) {
    for (auto& s : saved_) release(s);
    saved_.resize(static_cast<std::size_t>(microbatches));
    // Between steps a stage holds nothing; buffers a throwing layer dropped were never released.
    pool_.reset_live();
  }

  /// @brief Training forward of microbatch `mb`: runs the stage's layers on `input` (taken over
  /// by the stage) and keeps every layer's input until the backward. Returns the stage's output,
  /// which stays valid until the microbatch's backward. Throws ppipe::error: invalid_argument if
  /// `mb` is outside the step or a layer replaced its output tensors with others of other shapes,
  /// invalid_schedule if the microbatch's forward already ran without its backward; what a layer
  /// throws passes through.
  /// @param mb the microbatch, in [0, m) of the last prepare()
  /// @param input the stage's input, which the stage now counts as held
  /// @return the stage's output, owned by the stage
  const payload_type& forward(int mb, payload_type input) {
    record& r = slot(mb);
    if (r.live) {
      detail::fail(errc::invalid_schedule, "stage ", index_, " ran the forward of microbatch ", mb,
                   " twice without its backward in between; check the schedule");
    }
    pool_.adopt(input);
    pool_.hold_microbatch();
    r.live = true;
    r.acts.clear();
    r.acts.push_back(std::move(input));
    const context_type ctx = context(mb, pass_mode::training);
    for (int layer = first_; layer < end_; ++layer) {
      const payload_type& in = r.acts.back();
      const std::vector<shape> want = model_->output_shapes(layer, shapes_of(in));
      payload_type out = pool_.acquire(want);
      model_->forward(layer, ctx, in, out);
      check_written(layer, mb, out, want, "an output");
      r.acts.push_back(std::move(out));
    }
    return r.acts.back();
  }

  /// @brief The output of microbatch `mb`'s training forward, kept until its backward. Throws
  /// ppipe::error: invalid_argument if `mb` is outside the step, invalid_schedule if its forward
  /// has not run.
  /// @param mb the microbatch
  /// @return the output, owned by the stage
  const payload_type& output(int mb) { return live_slot(mb, "a send of its output").acts.back(); }

  /// @brief A zeroed buffer in the shapes of microbatch `mb`'s output, for the loss to write its
  /// gradient into; backward() takes it over (and counts it) when it runs. Throws ppipe::error as
  /// output() does.
  /// @param mb the microbatch whose forward has run
  /// @return the buffer, counted as held by the stage from now on
  payload_type output_gradient_buffer(int mb) {
    record& r = live_slot(mb, "the loss");
    r.gradient_counted = true;  // counted from now on, not again when the backward takes it
    return pool_.acquire(shapes_of(r.acts.back()));
  }

  /// @brief Inference forward: runs the layers on `input` and returns the output; nothing is kept
  /// (each layer's input goes back to the pool as soon as the next layer has run). Throws
  /// ppipe::error (invalid_argument) if a layer replaced its output tensors with others of other
  /// shapes; what a layer throws passes through.
  /// @param mb the microbatch the layers' context names; not checked against the step
  /// @param input the stage's input, taken over
  /// @return the stage's output, the caller's from here on
  payload_type infer(int mb, payload_type input) {
    return infer_with(mb, std::move(input), [&](int layer, const context_type& ctx, const payload_type& in, payload_type& out) {
      model_->forward(layer, ctx, in, out);
    });
  }

  /// @brief An inference forward whose layer calls are the caller's: `call(layer, ctx, in, out)`
  /// runs layer `layer` on `in` into `out` (shaped by output_shapes()). Generation uses it to hand
  /// layers their sequences' state; like infer(), it keeps nothing.
  /// @param mb the microbatch (or generation step) the context names
  /// @param input the stage's input, taken over
  /// @param call how each layer runs
  /// @return the stage's output, the caller's from here on
  /// @tparam Call a callable as `void(int, const context_type&, const payload_type&,
  /// payload_type&)`
  template <class Call>
  payload_type infer_with(int mb, payload_type input, Call&& call) {
    const context_type ctx = context(mb, pass_mode::inference);
    return run_forward(mb, std::move(input), [&](int layer, const payload_type& in, payload_type& out) {
      call(layer, ctx, in, out);
    });
  }

  /// @brief Full backward of microbatch `mb` from `grad_out` (the gradient of the stage's output,
  /// taken over). Returns the gradient of the stage's input (empty when `want_input_grad` is
  /// false: the model's first stage) and frees the microbatch's activations. Throws ppipe::error:
  /// invalid_argument if `mb` is outside the step or a layer replaced its input-gradient tensors,
  /// invalid_schedule if the microbatch's forward has not run; what a layer throws passes through.
  /// @param mb the microbatch
  /// @param grad_out the gradient of the stage's output, in its shapes
  /// @param want_input_grad whether to compute the gradient of the stage's input
  /// @return that gradient, the caller's from here on; empty if not wanted
  payload_type backward(int mb, payload_type grad_out, bool want_input_grad) {
    return backward_pass(mb, std::move(grad_out), want_input_grad, false);
  }

  /// @brief Input-gradient half of a split backward (I): like backward(), but keeps the
  /// activations and each layer's output gradient for backward_weight(). Throws ppipe::error as
  /// backward() does, and (unsupported) if the model has no backward_input/backward_weight.
  /// @param mb the microbatch
  /// @param grad_out the gradient of the stage's output, in its shapes
  /// @param want_input_grad whether to compute the gradient of the stage's input
  /// @return that gradient, the caller's from here on; empty if not wanted
  payload_type backward_input(int mb, payload_type grad_out, bool want_input_grad) {
    return backward_pass(mb, std::move(grad_out), want_input_grad, true);
  }

  /// @brief Weight-gradient half (W): accumulates the weight gradients and frees the activations.
  /// Throws ppipe::error: invalid_argument if `mb` is outside the step, invalid_schedule if the
  /// microbatch's forward or its backward_input() has not run; what a layer throws passes through.
  /// @param mb the microbatch
  void backward_weight(int mb) {
    record& r = live_slot(mb, "backward_weight");
    if (r.grads.size() + 1 != r.acts.size()) {
      detail::fail(errc::invalid_schedule, "stage ", index_, " ran W of microbatch ", mb,
                   " before its I; a split backward runs I, then W");
    }
    const context_type ctx = context(mb, pass_mode::training);
    for (int layer = end_ - 1; layer >= first_; --layer) {
      const std::size_t k = static_cast<std::size_t>(layer - first_);
      if constexpr (model_has_split_backward<Model, Tensor, context_type>) {
        model_->backward_weight(layer, ctx, r.acts[k], r.acts[k + 1], r.grads[k]);
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

  /// @brief After the training forward of a microbatch that the schedule recomputes (R): lets go
  /// of the layer inputs the recompute policy does not keep, keeping the stage's input and output
  /// (which a send or the loss may still read), until recompute(). Throws ppipe::error: invalid_argument if `mb`
  /// is outside the step, invalid_schedule if its forward has not run or it is stashed already.
  /// @param mb the microbatch
  void stash(int mb) {
    record& r = live_slot(mb, "a stash");
    if (r.stashed) {
      detail::fail(errc::invalid_schedule, "stage ", index_, " stashed microbatch ", mb, " twice; check the schedule");
    }
    for (std::size_t k = 1; k + 1 < r.acts.size(); ++k) {
      if (!policy_.keeps(static_cast<int>(k))) pool_.release(r.acts[k]);
    }
    r.stashed = true;
    pool_.stash_microbatch();
  }

  /// @brief Recompute (R) of a stashed microbatch: re-runs the forward of each layer whose output
  /// stash() let go of (every layer but the last under full), from the kept inputs, so the backward finds the activations it needs (the output was kept; a
  /// layer computes the same bits again). Throws ppipe::error: invalid_argument if `mb` is outside
  /// the step, invalid_schedule if its forward has not run or it was not stashed; what a layer
  /// throws passes through.
  /// @param mb the microbatch
  void recompute(int mb) {
    record& r = live_slot(mb, "recompute");
    if (!r.stashed) {
      detail::fail(errc::invalid_schedule, "stage ", index_, " ran R of microbatch ", mb,
                   ", whose forward kept its activations; a schedule recomputes only what it stashed");
    }
    r.stashed = false;
    pool_.unstash_microbatch();
    const context_type ctx = context(mb, pass_mode::training);
    for (int layer = first_; layer + 1 < end_; ++layer) {
      const auto k = static_cast<std::size_t>(layer - first_);
      if (policy_.keeps(layer + 1 - first_)) continue;  // its output was kept
      const std::vector<shape> want = model_->output_shapes(layer, shapes_of(r.acts[k]));
      payload_type out = pool_.acquire(want);
      model_->forward(layer, ctx, r.acts[k], out);
      check_written(layer, mb, out, want, "an output");
      r.acts[k + 1] = std::move(out);
    }
  }

  /// @brief True when no microbatch's activations are held or stashed (after a complete step).
  /// @return whether the pool counts no microbatch as held or stashed
  [[nodiscard]] bool idle() const noexcept {
    return pool_.stats().live_microbatches == 0 && pool_.stats().live_stashed == 0;
  }

 private:
  struct record {
    std::vector<payload_type> acts;   // acts[k]: input of layer first+k; acts.back(): the output
    std::vector<payload_type> grads;  // after I: grads[k] is the gradient of layer first+k's output
    bool live = false;
    bool gradient_counted = false;  // the output gradient came from output_gradient_buffer()
    bool stashed = false;           // only the inputs policy_ keeps and acts.back() are kept, until R
  };

  // Runs the stage's layers forward on `input`, keeping nothing: each layer's input goes back to
  // the pool once the next layer has run. `call(layer, in, out)` runs one layer. The output leaves
  // the stage: it is the caller's (or the transfer's) from here on.
  template <class Call>
  payload_type run_forward(int mb, payload_type input, Call&& call) {
    pool_.adopt(input);
    pool_.hold_microbatch();
    for (int layer = first_; layer < end_; ++layer) {
      const std::vector<shape> want = model_->output_shapes(layer, shapes_of(input));
      payload_type out = pool_.acquire(want);
      call(layer, input, out);
      check_written(layer, mb, out, want, "an output");
      pool_.release(input);
      input = std::move(out);
    }
    pool_.drop_microbatch();
    pool_.forget(input);
    return input;
  }

  // Walks the stage's layers from last to first. A full backward lets each layer's output gradient
  // go as soon as the layer is done, and then the activations; the I half keeps both for W.
  payload_type backward_pass(int mb, payload_type grad_out, bool want_input_grad, bool input_half) {
    record& r = live_slot(mb, input_half ? "backward_input" : "backward");
    detail::check_split_backward<model_has_split_backward<Model, Tensor, context_type>>(input_half);
    if (r.stashed) detail::fail_stashed(index_, mb, input_half ? "I" : "B");
    if (!r.gradient_counted) pool_.adopt(grad_out);
    r.gradient_counted = false;
    const context_type ctx = context(mb, pass_mode::training);
    if (input_half) r.grads.assign(r.acts.size() - 1, payload_type{});
    payload_type g = std::move(grad_out);
    for (int layer = end_ - 1; layer >= first_; --layer) {
      const auto k = static_cast<std::size_t>(layer - first_);
      payload_type grad_in;
      const bool wanted = layer > first_ || want_input_grad;
      if (wanted) grad_in = pool_.acquire(shapes_of(r.acts[k]));
      if (input_half) {
        if constexpr (model_has_split_backward<Model, Tensor, context_type>) {
          model_->backward_input(layer, ctx, r.acts[k], r.acts[k + 1], g, grad_in);
        }
        r.grads[k] = std::move(g);
      } else {
        if constexpr (model_has_backward<Model, Tensor, context_type>) {
          model_->backward(layer, ctx, r.acts[k], r.acts[k + 1], g, grad_in);
        }
        pool_.release(g);
      }
      if (wanted) check_written(layer, mb, grad_in, r.acts[k], "an input gradient");
      g = std::move(grad_in);
    }
    if (!input_half) release(r);
    pool_.forget(g);
    return g;
  }

  void check_written(int layer, int mb, const payload_type& got, const std::vector<shape>& want, const char* what) const {
    detail::check_written(got, want, index_, layer, mb, what);
  }
  void check_written(int layer, int mb, const payload_type& got, const payload_type& like, const char* what) const {
    if (has_shapes(got, like)) return;
    detail::check_written(got, shapes_of(like), index_, layer, mb, what);
  }

  record& slot(int mb) { return detail::microbatch_slot(saved_, index_, mb); }
  record& live_slot(int mb, const char* what) { return detail::live_microbatch_slot(saved_, index_, mb, what); }
  void release(record& r) {
    for (payload_type& p : r.acts) pool_.release(p);
    for (payload_type& p : r.grads) pool_.release(p);
    r.acts.clear();
    r.grads.clear();
    if (r.live && r.stashed) {
      pool_.drop_stashed();
    } else if (r.live) {
      pool_.drop_microbatch();
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
  buffer_pool<Tensor> pool_;
  device_context<Device> device_;
};

/// @brief What the executor needs of a stage: ppipe::stage satisfies it, and a backend's own stage
/// type (device buffers, streams) must too. Payloads are taken by value (moved in) and returned by
/// value; `forward` keeps the microbatch's activations until its backward (or W) and `output`
/// reads them; `stash` drops all but the stage's input and output until `recompute` rebuilds them
/// (activation recomputation); `infer` keeps nothing.
template <class S, class Tensor>
concept pipeline_stage = requires(S& s, const S& cs, int mb, basic_payload<Tensor> p, bool want_input_grad) {
  { cs.index() } -> std::convertible_to<int>;
  { cs.first_layer() } -> std::convertible_to<int>;
  { cs.end_layer() } -> std::convertible_to<int>;
  s.prepare(mb);
  s.context(mb, pass_mode::training);  // what its layers get (materialize() included)
  // References, not copies: a send reads the buffer until the transport says it is done.
  { s.forward(mb, std::move(p)) } -> std::same_as<const basic_payload<Tensor>&>;
  { s.output(mb) } -> std::same_as<const basic_payload<Tensor>&>;
  { s.output_gradient_buffer(mb) } -> std::same_as<basic_payload<Tensor>>;
  { s.infer(mb, std::move(p)) } -> std::same_as<basic_payload<Tensor>>;
  { s.backward(mb, std::move(p), want_input_grad) } -> std::same_as<basic_payload<Tensor>>;
  { s.backward_input(mb, std::move(p), want_input_grad) } -> std::same_as<basic_payload<Tensor>>;
  s.backward_weight(mb);
  s.set_recompute(recompute_policy::full);
  s.stash(mb);
  s.recompute(mb);
};

}  // namespace ppipe
