#pragma once
/// @file
/// @brief Pipeline<Model>: the type users instantiate to train and serve a model split into stages.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/generation.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/inference/generator.hpp"
#include "ppipe/pipeline/options.hpp"
#include "ppipe/partition/partition.hpp"
#include "ppipe/partition/partitioner.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/runtime/backend.hpp"
#include "ppipe/runtime/executor.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/runtime/stage.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/schedule/forward_only.hpp"
#include "ppipe/schedule/generate.hpp"
#include "ppipe/schedule/one_f_one_b.hpp"
#include "ppipe/schedule/recompute.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/validate.hpp"
#include "ppipe/transport/host.hpp"
#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/stream_transport.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe {

/// @brief A model split into p × v stages over p ranks, trained with schedule `Schedule` and
/// served with a forward-only schedule, on backend `Backend`.
/// @tparam Model the user's layer stack (see ppipe::model / ppipe::trainable_model)
/// @tparam Schedule a schedule policy (ppipe::schedules::gpipe, one_f_one_b, interleaved_1f1b, zb_h1,
/// zb_v), used when pipeline_options::schedule gives none
/// @tparam Partitioner how the layers are split when no split is given (ppipe::partitioners::...)
/// @tparam Backend where and how ranks compute and exchange payloads (ppipe::backend): host_backend
/// runs the ranks as threads of this process; ppipe::mpi::backend one rank per MPI process
///
/// One pipeline runs one call at a time: train_step(), infer() and generate() are not to be
/// called concurrently on the same pipeline.
template <class Model, schedule_policy Schedule = schedules::one_f_one_b,
          partitioner Partitioner = partitioners::balanced, backend Backend = host_backend>
class pipeline {
 public:
  /// @brief The backend the pipeline was instantiated with.
  using backend_type = Backend;
  /// @brief The tensors of the batches passed to and returned by train_step(), infer() and generate().
  using tensor_type = typename Backend::tensor_type;
  /// @brief The backend's device model; one device (or a shared one) per rank this process runs.
  using device_type = typename Backend::device_type;
  /// @brief The transport the ranks exchange payloads through.
  using transport_type = typename Backend::transport_type;
  /// @brief The tensors the stages' layers take: tensor_type, or the backend's device tensors.
  using stage_tensor_type = backend_stage_tensor<Backend>;
  /// @brief The context a layer call gets: stage, microbatch, pass and rank, and the stage's device context.
  using context_type = backend_context<Backend>;
  /// @brief ppipe::loss_function, or ppipe::device_loss_function where stages hold device tensors.
  using loss_type = stage_loss_function<tensor_type, stage_tensor_type, context_type>;
  // Before anything names the stage type, so that a model missing a member is told which one.
  static_assert(detail::check_model<Model, stage_tensor_type, context_type, false>());
  static_assert(!splits_backward_v<Schedule> || model_has_split_backward<Model, stage_tensor_type, context_type>,
                "ppipe: the Schedule splits the backward into input-gradient (I) and weight-gradient (W) actions, "
                "as zero-bubble schedules do: the model needs `void backward_input(int layer, const "
                "ppipe::layer_context&, const payload& in, const payload& out, const payload& grad_out, payload& "
                "grad_in)` and `void backward_weight(int layer, const ppipe::layer_context&, const payload& in, const "
                "payload& out, const payload& grad_out)`, or use a schedule with full backwards (one_f_one_b)");
  /// @brief A batch or microbatch: the tensors passed between stages, each with the batch as dimension 0.
  using payload_type = basic_payload<tensor_type>;
  /// @brief How a rank runs one stage of `Model` on this backend.
  using stage_type = typename Backend::template stage_type<Model>;
  /// @brief One run's microbatches in and losses or outputs out, as the executor takes them.
  using data_type = typename executor<stage_type, transport_type>::data_type;
  /// @brief The optimizer hook: told the stage and its device context. A hook that takes
  /// `const ppipe::stage_info&` converts to it.
  using hook_type = basic_optimizer_hook<device_type>;

  /// @brief A pipeline for inference only (no loss, no optimizer): train_step() throws, infer() and
  /// generate() run. The backend makes the transport for `options.ranks` ranks.
  /// @param model the user's layers; the pipeline keeps a reference, so `model` must outlive it
  /// @param options p, m, v, the split or the devices to split for, the schedule, the timeout
  /// @throws ppipe::error (errc::invalid_argument) when the options do not describe a pipeline the
  /// model can fill (ranks or virtual_stages < 1, fewer layers than stages, a timeout <= 0, a given
  /// schedule or split that disagrees with the options or the model); (errc::unsupported) when the
  /// schedule splits the backward and the model has no backward_input/backward_weight; or what the
  /// schedule's validation, the Partitioner or the backend throws
  pipeline(Model& model, pipeline_options options) : pipeline(model, std::move(options), loss_type{}) {}

  /// @brief A pipeline that trains with `loss` on the last stage and runs `optimizer` (if any)
  /// per stage after every train_step. The backend makes the transport for `options.ranks` ranks.
  /// @tparam Loss the loss's type; checked at compile time against the signature below
  /// @tparam Hook the optimizer hook's type; checked at compile time against the signature below
  /// @param model the user's layers; the pipeline keeps a reference, so `model` must outlive it
  /// @param options p, m, v, the split, the schedule, the timeout
  /// @param loss callable as `double(const payload& output, const payload& target, payload&
  /// grad_output, double scale)` (see ppipe::loss_function), or as a ppipe::device_loss_function
  /// where the stages hold device tensors
  /// @param optimizer callable as `void(const ppipe::stage_info&)`, or empty
  /// @throws ppipe::error as the inference-only constructor does
  template <class Loss, class Hook = hook_type>
  pipeline(Model& model, pipeline_options options, Loss&& loss, Hook&& optimizer = Hook{})
      : pipeline(model, std::move(options), as_loss(std::forward<Loss>(loss)), as_hook(std::forward<Hook>(optimizer)),
                 std::in_place) {}

  /// @brief A pipeline over a transport built by the caller: the SPMD form over a distributed
  /// transport (ppipe::mpi::transport), where every process runs the same program and builds only
  /// its own rank's stages. `options.ranks` is the transport's rank count, or 0 to take it from
  /// the transport. When any process fails to build its part, every process throws, with the
  /// failing process's reason.
  /// @param model the user's layers; the pipeline keeps a reference, so `model` must outlive it
  /// @param options as for the other constructors, with ranks 0 allowed
  /// @param loss the last stage's loss, or empty for a pipeline that only runs infer()
  /// @param optimizer the per-stage hook run after every train_step, or empty
  /// @param transport the transport to run over; the pipeline takes ownership
  /// @throws ppipe::error (errc::invalid_argument) when `options.ranks` is neither 0 nor the
  /// transport's rank count, or for what the other constructors refuse; what a process failed with
  /// when any process could not build its stages
  pipeline(Model& model, pipeline_options options, loss_type loss, hook_type optimizer, transport_type transport)
      : pipeline(model, with_ranks(with_schedule(std::move(options)), transport), std::move(loss), std::move(optimizer),
                 std::in_place, std::move(transport)) {}

 private:
  template <class... TransportArgs>
  pipeline(Model& model, pipeline_options options, loss_type loss, hook_type optimizer, std::in_place_t,
           TransportArgs&&... transport)
      : model_(&model), options_(with_schedule(std::move(options))), loss_(std::move(loss)),
        optimizer_(std::move(optimizer)),
        transport_(make_transport(model, options_, std::forward<TransportArgs>(transport)...)) {
    if constexpr (distributed_transport<transport_type>) {
      // A process that cannot build its part is named on every process, so none goes on to wait for it.
      const std::string problem = locally([&] {
        (void)checked(*model_, options_);  // on the host, make_transport() checks before it builds
        build();
      });
      if (problem.empty()) built_ = pipeline_fields();
      transport_.agree(built_, problem, agreement_deadline());
    } else {
      build();
    }
  }

  // A loss or hook of the wrong signature is told so in one message, before std::function could
  // bury it under its own errors: the conversion is not attempted then.
  template <class Loss>
  static loss_type as_loss(Loss&& loss) {
    if constexpr (!std::same_as<stage_tensor_type, tensor_type>) {
      constexpr bool callable =
          std::is_invocable_v<Loss&, const context_type&, const basic_payload<stage_tensor_type>&,
                              const basic_payload<stage_tensor_type>&, basic_payload<stage_tensor_type>&, double,
                              const stage_tensor_type&>;
      static_assert(callable, "ppipe: the stages hold device tensors, so the loss must be callable as `void loss(const "
                              "ctx& ctx, const payload& output, const payload& target, payload& grad_output, double "
                              "scale, const device_tensor& value)` (see ppipe::device_loss_function)");
      if constexpr (callable) {
        return loss_type(std::forward<Loss>(loss));
      } else {
        return {};
      }
    } else {
      return as_host_loss(std::forward<Loss>(loss));
    }
  }
  template <class Loss>
  static loss_type as_host_loss(Loss&& loss) {
    constexpr bool callable = detail::loss_callable<Loss, tensor_type>;
    static_assert(callable, "ppipe: the loss must be callable as `double loss(const payload& output, const payload& "
                            "target, payload& grad_output, double scale)`, returning the microbatch's loss and writing "
                            "scale * d(loss)/d(output) into grad_output");
    if constexpr (callable) {
      static_assert(!detail::loss_gradient_not_writable<Loss, tensor_type>,
                    "ppipe: the loss takes grad_output by value or by const reference, so the gradient it writes never "
                    "reaches the last stage's backward: take `payload& grad_output`");
      return loss_type(std::forward<Loss>(loss));
    } else {
      return {};
    }
  }
  template <class Hook>
  static hook_type as_hook(Hook&& hook) {
    constexpr bool callable = std::is_invocable_v<Hook&, const basic_stage_info<device_type>&>;
    static_assert(callable, "ppipe: the optimizer hook must be callable as `void hook(const ppipe::stage_info& stage)` "
                            "(or take the backend's ppipe::basic_stage_info for the stage's device context)");
    if constexpr (callable) {
      return hook_type(std::forward<Hook>(hook));
    } else {
      return {};
    }
  }

  // Stage s's pipeline_options::recompute policy (none when it gives none).
  [[nodiscard]] recompute_policy policy_of(std::size_t s) const {
    const auto& r = options_.recompute;
    return r.empty() ? recompute_policy::none : r.size() == 1 ? r.front() : r[s];
  }

  // Per stage, whether pipeline_options::recompute recomputes it; empty when none does.
  [[nodiscard]] std::vector<bool> recomputed_stages(int stages) const {
    const auto& r = options_.recompute;
    if (r.size() != 0 && r.size() != 1 && r.size() != static_cast<std::size_t>(stages)) {
      detail::fail(errc::invalid_argument, "pipeline_options::recompute has ", r.size(), " entries for ", stages,
                   " stages; give one per stage, one for all, or none");
    }
    std::vector<bool> out(static_cast<std::size_t>(stages), false);
    bool any = false;
    for (std::size_t s = 0; s < out.size() && !r.empty(); ++s) {
      out[s] = policy_of(s).recomputes();
      any = any || out[s];
    }
    return any ? out : std::vector<bool>{};
  }

  // Builds the schedules, the split, the stages and the executor, once checked() has passed.
  void build() {
    if (options_.timeout.count() <= 0) {
      detail::fail(errc::invalid_argument, "the timeout is ", options_.timeout.count(),
                   " ms; give a positive pipeline_options::timeout (milliseconds::max() waits for ever)");
    }
    if (options_.schedule) {
      // The transport of a distributed pipeline came with its own rank count (on the host, it was
      // built with the schedule's).
      if (transport_.num_ranks() != options_.ranks) {
        detail::fail(errc::invalid_argument, "pipeline_options::schedule \"", options_.schedule->name, "\" has p=",
                     options_.ranks, " ranks but the transport has ", transport_.num_ranks(),
                     " ranks (processes per pipeline); give a schedule of ", transport_.num_ranks(),
                     " ranks, or run it on ", options_.ranks, " processes per pipeline");
      }
      train_ = *options_.schedule;
    } else {
      train_ = Schedule::generate(schedule_params{options_.ranks, options_.microbatches, options_.virtual_stages});
    }
    train_ = with_recompute(std::move(train_), recomputed_stages(train_.num_stages()));
    validate(train_, transfer_model_of<transport_type>);
    if constexpr (!model_has_split_backward<Model, stage_tensor_type, context_type>) {
      // Found here rather than when the first I runs, a step later and on one rank only.
      if (train_.splits_backward()) {
        detail::fail(errc::unsupported, "the schedule \"", train_.name, "\" splits the backward into input-gradient "
                     "(I) and weight-gradient (W) actions, but the model has no backward_input/backward_weight; give "
                     "the model both (see ppipe::model_has_split_backward), or use a schedule with full backwards "
                     "such as 1f1b");
      }
    }
    const int layers = model_->num_layers();
    const int stages = train_.num_stages();
    if (layers < stages) {
      detail::fail(errc::invalid_argument, "the model has ", layers, " layers but the pipeline has ", stages,
                   " stages (p=", options_.ranks, " x v=", options_.virtual_stages,
                   "); every stage needs a layer: use fewer ranks or stages per rank");
    }
    split_ = options_.split ? *options_.split : Partitioner{}.split(partition_problem::for_schedule(train_, layer_costs(), options_.devices, options_.recompute));
    if (split_.num_stages() != stages || split_.num_layers() != layers) {
      detail::fail(errc::invalid_argument, "the split has ", split_.num_stages(), " stages over ", split_.num_layers(),
                   " layers, but the pipeline has ", stages, " stages and the model ", layers,
                   " layers; give one range per stage covering every layer");
    }
    open_devices();
    stages_.reserve(static_cast<std::size_t>(stages));
    for (int s = 0; s < stages; ++s) {
      if (is_local(s)) {
        stages_.emplace_back(*model_, s, split_.first(s), split_.end(s), options_.microbatches,
                             context_on(train_.place.rank_of(s)));
        // R actions from a schedule file on a stage whose policy is none recompute in full.
        const recompute_policy policy = policy_of(static_cast<std::size_t>(s));
        stages_.back().set_recompute(policy.recomputes() ? policy : recompute_policy::full);
        materialize(stages_.back());
      }
    }
    const int infer_m = options_.inference_microbatches > 0 ? options_.inference_microbatches : options_.microbatches;
    infer_ = schedules::forward_only::over(train_.place, infer_m);
    validate(infer_, transfer_model_of<transport_type>);
    average_gradients_over_replicas();
    executor_options run_options;
    run_options.timeout = options_.timeout;
    run_options.record_trace = options_.record_trace;
    run_options.capture_graphs = options_.capture_graphs;
    run_options.start_rank = [this](int r) { Backend::start_rank(r, *devices_[static_cast<std::size_t>(r)].device); };
    executor_.emplace(transport_, stages_, std::move(run_options));
  }

  // One device per rank this process runs, each with the compute stream its stages' layers use.
  // A distributed pipeline's one rank runs on the calling thread, so it is started here, where a
  // failure is agreed on by every process.
  void open_devices() {
    devices_.clear();
    devices_.resize(static_cast<std::size_t>(options_.ranks));
    std::vector<std::shared_ptr<device_type>> given;  // where the backend maps ranks onto devices itself
    if constexpr (!distributed_transport<transport_type> && requires { Backend::make_devices(options_.ranks); }) {
      given = Backend::make_devices(options_.ranks);
      if (given.size() != static_cast<std::size_t>(options_.ranks)) {
        detail::fail(errc::backend, "the backend made ", given.size(), " devices for ", options_.ranks,
                     " ranks; its make_devices(ranks) must return one device per rank (ranks may share one)");
      }
    }
    for (int r = 0; r < options_.ranks; ++r) {
      if constexpr (distributed_transport<transport_type>) {
        if (r != transport_.rank()) continue;
      }
      rank_device& d = devices_[static_cast<std::size_t>(r)];
      d.device = given.empty() ? std::shared_ptr<device_type>(Backend::make_device(r)) : given[static_cast<std::size_t>(r)];
      d.compute = d.device->create_stream(detail::concat("rank ", r, " compute"));
    }
    if constexpr (distributed_transport<transport_type>) {
      const int r = transport_.rank();
      Backend::start_rank(r, *devices_[static_cast<std::size_t>(r)].device);
    }
  }
  // Only the stages this process runs get their weights: over a distributed transport each
  // process holds its own layers. Here, so that a process that cannot is agreed on by all.
  void materialize(stage_type& st) {
    if constexpr (model_has_materialize<Model, context_type>) {
      model_->materialize(st.first_layer(), st.end_layer(), st.context(0, pass_mode::training));
    }
  }
  [[nodiscard]] device_context<device_type> context_on(int r) {
    rank_device& d = devices_[static_cast<std::size_t>(r)];
    device_context<device_type> c;
    c.device = d.device.get();
    c.stream = d.compute;
    c.rank = r;
    if constexpr (requires { d.device->ordinal(); }) c.ordinal = d.device->ordinal();
    return c;
  }

 public:

  pipeline(const pipeline&) = delete;
  pipeline& operator=(const pipeline&) = delete;

  /// @brief One training step: splits `inputs` and `targets` along dimension 0 into m
  /// microbatches (the first rows % m get one row more), runs the schedule, accumulates every
  /// layer's gradients over the microbatches, runs the optimizer hook per stage, and returns the
  /// batch's loss: the microbatch losses weighted by their share of the rows.
  /// Over a distributed transport every process calls it with a batch of the same rows and shapes.
  /// @param inputs the batch, at least m rows; every tensor has the batch as dimension 0
  /// @param targets what the loss compares the last stage's outputs with, one row per input row
  /// @return the microbatch losses, each weighted by its share of the batch's rows, added up
  /// @throws ppipe::error (errc::invalid_argument) when the pipeline has no loss, a payload is empty
  /// or its tensors' dimension 0 differ, there are fewer than m rows, the targets' rows differ from
  /// the inputs', or a layer cannot take the shapes the layer before it produces. When a rank fails
  /// during the step, every rank stops and the failure is thrown here naming the rank and action:
  /// errc::timeout when a rank waits past pipeline_options::timeout; what a layer, the loss or the
  /// hook threw, with the original nested, keeping a ppipe::error's code and errc::stage_failed for
  /// any other exception
  double train_step(const payload_type& inputs, const payload_type& targets) {
    static_assert(detail::check_model<Model, stage_tensor_type, context_type, true>());
    std::vector<std::int64_t> rows;
    std::vector<std::vector<shape>> outputs;
    data_type data;
    prepare_call("train_step", rows, data, outputs, [&] {
      if (!loss_) {
        detail::fail(errc::invalid_argument, "train_step needs a loss; construct the pipeline with "
                     "pipeline(model, options, loss)");
      }
      rows = microbatch_rows(inputs, "inputs", train_.microbatches, "microbatches");
      const std::vector<std::int64_t> target_rows = microbatch_rows(targets, "targets", train_.microbatches, "microbatches");
      if (rows != target_rows) {
        detail::fail(errc::invalid_argument, "the targets have ", total(target_rows), " rows but the inputs ",
                     total(rows), "; give one target row per input row");
      }
      data = split(inputs, rows, train_, outputs);
      data.targets = split_payload(targets, rows);
    });
    data.loss = &loss_;
    data.optimizer = &optimizer_;
    const double batch = static_cast<double>(total(rows));
    for (const std::int64_t n : rows) data.scales.push_back(static_cast<double>(n) / batch);
    trace_ = executor_->run(train_, data);
    double loss = 0.0;
    for (std::size_t i = 0; i < rows.size(); ++i) loss += data.losses[i] * data.scales[i];
    return loss;
  }

  /// @brief Forward only: splits `inputs` into the inference schedule's microbatches, keeps them
  /// in flight through the stages, and returns the last stage's outputs stacked along dimension 0.
  /// Needs no loss. Over a distributed transport every process calls it with the same rows and shapes.
  /// @param inputs the batch, at least as many rows as the inference schedule has microbatches
  /// (pipeline_options::inference_microbatches, or m); every tensor has the batch as dimension 0
  /// @return every microbatch's last-stage outputs, stacked along dimension 0 in microbatch order
  /// @throws ppipe::error (errc::invalid_argument) when `inputs` is empty, its tensors' dimension 0
  /// differ, it has too few rows, or a layer cannot take the shapes the layer before it produces; a
  /// rank's failure as train_step() throws it
  payload_type infer(const payload_type& inputs) {
    std::vector<std::int64_t> rows;
    std::vector<std::vector<shape>> outputs;
    data_type data;
    prepare_call("infer", rows, data, outputs, [&] {
      rows = microbatch_rows(inputs, "inputs", infer_.microbatches, "inference_microbatches");
      data = split(inputs, rows, infer_, outputs);
    });
    trace_ = executor_->run(infer_, data);
    return concat_rows(data.outputs);
  }

  /// @brief Generates tokens for every request (see docs/inference.md): sequences are grouped
  /// into `groups` microbatches that circulate through the stages, one decode step per trip, each
  /// stage keeping its own layers' state (KV cache) for the sequences it serves. A finished
  /// sequence leaves its group and a waiting one joins when the group comes back (continuous
  /// batching); a request waits for admission until its state fits every stage's cache budget.
  /// Tokens are what the same model computes unpipelined, sequence by sequence.
  /// Runs on backends whose stages compute on the host, over a transport of one process; `Model`
  /// must be a ppipe generative model (checked at compile time).
  /// @param requests the prompts and their token limits; read during the call only
  /// @param options the sampler (required), the token limits, the groups and the cache budget
  /// @return each request's tokens with the call's timings, cache peaks and (with record_trace) trace
  /// @throws ppipe::error (errc::unsupported) over a distributed transport, or when the placement
  /// does not loop the stages over the ranks; (errc::invalid_argument) for unusable options, a
  /// sampler that returns an invalid token, or requests whose state never fits the cache budget; a
  /// rank's failure as train_step() throws it
  generation_result generate(std::span<const generation_request> requests,
                             const basic_generation_options<tensor_type>& options) {
    static_assert(detail::check_generative_model<Model, tensor_type>());
    if constexpr (distributed_transport<transport_type>) {
      detail::fail(errc::unsupported, "generate() runs over transports of one process only; across processes, "
                   "use infer() or build the pipeline over host_transport");
    } else if constexpr (stream_pipeline_stage<stage_type>) {
      static_assert(!stream_pipeline_stage<stage_type>, "ppipe: generate() runs on the host backend (host_backend) for now");
    } else {
      // On the executor's rank threads: generation starts none of its own.
      generation_engine<stage_type, transport_type> engine(transport_, stages_, train_.place, executor_->pool(),
                                                           options_.timeout, options_.record_trace);
      generation_result out = engine.generate(requests, options);
      trace_ = out.trace;
      return out;
    }
  }


  /// @brief The schedule train_step() runs: pipeline_options::schedule, or the Schedule policy's.
  /// @return the schedule, owned by the pipeline
  [[nodiscard]] const schedule& training_schedule() const noexcept { return train_; }
  /// @brief The forward-only schedule infer() runs, on the training schedule's placement.
  /// @return the schedule, owned by the pipeline
  [[nodiscard]] const schedule& inference_schedule() const noexcept { return infer_; }
  /// @brief The layers of each stage.
  /// @return pipeline_options::split when one was given, otherwise the Partitioner's split
  [[nodiscard]] const partition& split() const noexcept { return split_; }
  /// @brief The options the pipeline runs with.
  /// @return the options as given, with ranks, microbatches and virtual_stages left at their
  /// defaults (or ranks 0) filled in from a given schedule or transport
  [[nodiscard]] const pipeline_options& options() const noexcept { return options_; }
  /// @brief The last train_step's, infer()'s or generate()'s trace (empty when record_trace is off,
  /// and for a step launched from a graph).
  /// @return the trace, owned by the pipeline and replaced by the next call
  [[nodiscard]] const run_trace& last_trace() const noexcept { return trace_; }
  /// @brief How many train_steps ran from a captured graph (pipeline_options::capture_graphs).
  /// @return the count since the pipeline was built
  [[nodiscard]] std::size_t graph_steps() const noexcept { return executor_ ? executor_->graph_steps() : 0; }
  /// @brief What stage `s` holds and has held at its peak since the pipeline was built (or since
  /// reset_memory_peaks()).
  /// Over a distributed transport only this process's stages are here (see is_local()).
  /// @param s a stage in [0, S)
  /// @return the stage's memory figures, owned by the pipeline and updated by later calls
  /// @throws ppipe::error (errc::invalid_argument) when there is no stage `s`, or it runs in another
  /// process
  [[nodiscard]] const memory_stats& memory(int s) const {
    for (const stage_type& st : stages_) {
      if (st.index() == s) return st.memory();
    }
    if (s >= 0 && s < train_.num_stages()) {
      detail::fail(errc::invalid_argument, "stage ", s, " runs on rank ", train_.place.rank_of(s),
                   ", in another process; ask that process, or check is_local(", s, ") first");
    }
    detail::fail(errc::invalid_argument, "there is no stage ", s, "; the pipeline has stages 0..", train_.num_stages() - 1);
  }
  /// @brief Whether stage `s` runs in this process: always over a transport of one process; over a
  /// distributed one, when its rank is this process's rank.
  /// @param s a stage in [0, S)
  /// @return true when this process runs stage `s`
  /// @throws ppipe::error (errc::invalid_argument) over a distributed transport when `s` is out of
  /// range (a transport of one process answers true without checking)
  [[nodiscard]] bool is_local(int s) const {
    if constexpr (distributed_transport<transport_type>) {
      return train_.place.rank_of(s) == transport_.rank();
    } else {
      return true;
    }
  }
  /// @brief What rank `r`'s device's memory pool holds: bytes in use, their peak, reserved (on a
  /// backend whose device reports it; ranks that share a device report the same pool).
  /// @param r a rank this process runs
  /// @return the device's figures
  [[nodiscard]] auto device_memory(int r) const
    requires requires(const device_type& d) { d.memory(); }
  {
    if (r < 0 || r >= options_.ranks || !devices_[static_cast<std::size_t>(r)].device) {
      detail::fail(errc::invalid_argument, "rank ", r, " has no device in this process; the pipeline's ranks here are ",
                   distributed_transport<transport_type> ? "its own rank only" : detail::concat("0..", options_.ranks - 1));
    }
    return devices_[static_cast<std::size_t>(r)].device->memory();
  }
  /// @brief The transport the stages talk through.
  /// @return the transport, owned by the pipeline
  [[nodiscard]] const transport_type& transport() const noexcept { return transport_; }
  /// @brief Starts a new peak measurement for every stage this process runs: each peak becomes what
  /// the stage holds now.
  void reset_memory_peaks() {
    for (stage_type& st : stages_) st.pool().reset_peaks();
  }
  /// @brief The layer costs the partitioner used: the model's cost() or, without it, equal costs.
  /// @return one layer_cost per layer of the model, in order (layer_cost's defaults where the
  /// model has no cost())
  [[nodiscard]] std::vector<layer_cost> layer_costs() const {
    std::vector<layer_cost> costs(static_cast<std::size_t>(model_->num_layers()));
    if constexpr (model_has_costs<Model>) {
      for (std::size_t i = 0; i < costs.size(); ++i) costs[i] = model_->cost(static_cast<int>(i));
    }
    return costs;
  }

 private:
  // What can be checked before anything is allocated: a transport of p ranks has p x p channels,
  // so a p that no model could fill is refused before it is built.
  static const pipeline_options& checked(const Model& model, const pipeline_options& options) {
    if (options.schedule) check_schedule_agrees(options);
    if (options.ranks < 1) {
      detail::fail(errc::invalid_argument, "a pipeline needs at least one rank (ranks=", options.ranks, "); pass ranks >= 1");
    }
    if (options.virtual_stages < 1) {
      detail::fail(errc::invalid_argument, "a pipeline needs at least one stage per rank (virtual_stages=",
                   options.virtual_stages, "); pass virtual_stages >= 1");
    }
    const std::int64_t stages = std::int64_t{options.ranks} * options.virtual_stages;
    if (model.num_layers() < stages) {
      detail::fail(errc::invalid_argument, "the model has ", model.num_layers(), " layers but the pipeline has ", stages,
                   " stages (p=", options.ranks, " x v=", options.virtual_stages,
                   "); every stage needs a layer: use fewer ranks or stages per rank");
    }
    return options;
  }
  static transport_type make_transport(const Model& model, const pipeline_options& options) {
    if constexpr (requires(int ranks) { Backend::make_transport(ranks); }) {
      return Backend::make_transport(checked(model, options).ranks);
    }
    return transport_type(checked(model, options).ranks);
  }
  static transport_type make_transport(const Model&, const pipeline_options&, transport_type&& t) { return std::move(t); }

  // Runs `f`, and returns what it threw ("" when nothing): a distributed pipeline agrees on it.
  template <class F>
  static std::string locally(F&& f) {
    try {
      f();
      return {};
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
      return "an exception that is not a std::exception";
    }
  }
  [[nodiscard]] deadline_clock::time_point agreement_deadline() const {
    return deadline_after(options_.timeout.count() > 0 ? options_.timeout : std::chrono::milliseconds(std::chrono::seconds(60)));
  }

  static pipeline_options with_ranks(pipeline_options options, const transport_type& t) {
    if (options.ranks == 0) options.ranks = t.num_ranks();
    // A given schedule's p is compared with the transport's in build(), where every process hears of it.
    if (options.ranks != t.num_ranks() && !options.schedule) {
      detail::fail(errc::invalid_argument, "pipeline_options::ranks is ", options.ranks, " but the transport has ",
                   t.num_ranks(), " ranks (processes); set ranks to ", t.num_ranks(), ", or to 0 to take the transport's");
    }
    return options;
  }

  // The stages per rank of a given schedule: its stages over its ranks, or 0 where the ranks hold
  // different numbers of stages (check_schedule_agrees() refuses it).
  static int stages_per_rank(const schedule& s) {
    const int p = s.num_ranks();
    if (p < 1 || s.num_stages() % p != 0) return 0;
    for (int r = 0; r < p; ++r) {
      if (static_cast<int>(s.place.stages_on(r).size()) != s.num_stages() / p) return 0;
    }
    return s.num_stages() / p;
  }

  // A given schedule decides p, m and v: the options left at their defaults (and ranks at 0, "the
  // transport's") take its values, so that a file's schedule runs without restating them.
  static pipeline_options with_schedule(pipeline_options options) {
    if (!options.schedule) return options;
    const pipeline_options defaults;
    const schedule& s = *options.schedule;
    if (options.ranks == 0 || options.ranks == defaults.ranks) options.ranks = s.num_ranks();
    if (options.microbatches == defaults.microbatches) options.microbatches = s.microbatches;
    if (options.virtual_stages == defaults.virtual_stages) options.virtual_stages = stages_per_rank(s);
    return options;
  }

  // What with_schedule() could not reconcile: a given schedule that is no training schedule, has
  // ranks of different stage counts, or whose p, m or v differs from a value the options set.
  static void check_schedule_agrees(const pipeline_options& options) {
    const schedule& s = *options.schedule;
    const std::string which = detail::concat("pipeline_options::schedule \"", s.name, "\"");
    if (s.mode != schedule_mode::training) {
      detail::fail(errc::invalid_argument, which, " is an inference (forward-only) schedule; give a training "
                   "schedule, with backwards: the pipeline derives its inference schedule from its placement");
    }
    if (s.num_ranks() < 1 || s.ranks.size() != static_cast<std::size_t>(s.num_ranks())) {
      detail::fail(errc::invalid_argument, which, " has ", s.ranks.size(), " action lists for ", s.num_ranks(),
                   " ranks; give one list per rank, at least one rank (ppipe::load_csv() or make_schedule() do)");
    }
    const int v = stages_per_rank(s);
    if (v == 0) {
      detail::fail(errc::invalid_argument, which, " puts ", s.num_stages(), " stages on ", s.num_ranks(),
                   " ranks, not the same number on each; the pipeline runs v stages on every rank: give each rank "
                   "as many stages");
    }
    const auto agree = [&](const char* option, int given, const char* what, int has) {
      if (given != has) {
        detail::fail(errc::invalid_argument, "pipeline_options::", option, " is ", given, " but ", which, " has ",
                     what, "=", has, "; set ", option, " to ", has,
                     ", or leave it at its default to take the schedule's, or give a schedule of ", what, "=", given);
      }
    };
    agree("ranks", options.ranks, "p", s.num_ranks());
    agree("microbatches", options.microbatches, "m", s.microbatches);
    agree("virtual_stages", options.virtual_stages, "v", v);
  }

  // With data-parallel replicas (a transport that can average over them), each stage's gradients
  // are averaged over the replicas once the step has succeeded everywhere, before the optimizer
  // hook: the update every replica then applies is the one for the whole global batch. A stream
  // transport enqueues the average on the stage's stream, where the hook's own work follows it.
  void average_gradients_over_replicas() {
    constexpr bool on_streams = stream_replicas<transport_type>;
    constexpr bool on_host = requires(transport_type& t, std::span<float> v) {
      t.allreduce_mean(v, deadline_clock::now());
    };
    if constexpr (on_streams || on_host) {
      if (transport_.replicas() <= 1) return;
      if constexpr (!model_has_parameters<Model>) {
        detail::fail(errc::unsupported, "the transport has ", transport_.replicas(), " data-parallel replicas, but the "
                     "model has no for_each_parameter(first, end, f) through which ppipe could average the gradients; "
                     "add it (see ppipe::model_has_parameters) or run one replica");
      } else if constexpr (on_streams && enqueues_own_work<Model>) {
        optimizer_ = [this, user = std::move(optimizer_)](const basic_stage_info<device_type>& info) {
          const std::vector<tensor_view> gradients = gradients_of(info);
          transport_.allreduce_mean(std::span<const tensor_view>(gradients), *info.device->device,
                                    info.device->stream, options_.timeout);
          if (user) user(info);
        };
      } else if constexpr (!on_host) {
        detail::fail(errc::unsupported, "the transport averages gradients over its ", transport_.replicas(),
                     " replicas on the device's streams, where only layers that enqueue their own work can follow "
                     "it; give the model's layers `static constexpr bool enqueues_work = true` (see "
                     "ppipe::enqueues_own_work) or run one replica");
      } else {
        optimizer_ = [this, user = std::move(optimizer_)](const basic_stage_info<device_type>& info) {
          // One all-reduce of floats serves every dtype (see detail::reduce_as_floats).
          detail::reduce_as_floats(gradients_of(info), [&](std::span<float> values) {
            transport_.allreduce_mean(values, deadline_after(options_.timeout));
          });
          if (user) user(info);
        };
      }
    }
  }

  // The gradients of the stage's layers, as the model hands them to for_each_parameter.
  std::vector<tensor_view> gradients_of(const basic_stage_info<device_type>& info) {
    std::vector<tensor_view> gradients;
    if constexpr (model_has_parameters<Model>) {
      model_->for_each_parameter(info.first_layer, info.end_layer,
                                 [&](tensor_view, tensor_view g) { gradients.push_back(g); });
    }
    return gradients;
  }

  static std::int64_t total(const std::vector<std::int64_t>& rows) {
    std::int64_t n = 0;
    for (const std::int64_t r : rows) n += r;
    return n;
  }

  // Rows per microbatch: tensor_split's rule, the first rows % m microbatches get one row more.
  static std::vector<std::int64_t> microbatch_rows(const payload_type& batch, const char* what, int m, const char* option) {
    if (batch.empty()) {
      detail::fail(errc::invalid_argument, "the ", what, " payload has no tensors; pass at least one tensor whose "
                   "dimension 0 is the batch");
    }
    std::int64_t rows = -1;
    for (std::size_t k = 0; k < batch.size(); ++k) {
      const shape& sh = batch[k].shape();
      const std::int64_t r = sh.rank() ? sh[0] : 0;
      if (sh.rank() == 0 || (rows >= 0 && r != rows)) {
        detail::fail(errc::invalid_argument, "the ", what, "' tensors have shapes ", to_string(shapes_of(batch)),
                     "; every tensor needs the batch as dimension 0, the same in all");
      }
      rows = r;
    }
    if (rows < m) {
      detail::fail(errc::invalid_argument, "the ", what, " have ", rows, " rows but the pipeline splits them into m=", m,
                   " microbatches; give at least ", m, " rows or build the pipeline with fewer (pipeline_options::",
                   option, ")");
    }
    std::vector<std::int64_t> out(static_cast<std::size_t>(m), rows / m);
    for (std::int64_t i = 0; i < rows % m; ++i) ++out[static_cast<std::size_t>(i)];
    return out;
  }

  static std::vector<payload_type> split_payload(const payload_type& batch, const std::vector<std::int64_t>& rows) {
    std::vector<payload_type> out;
    out.reserve(rows.size());
    std::int64_t first = 0;
    for (const std::int64_t n : rows) {
      out.push_back(slice_rows(batch, first, n));
      first += n;
    }
    return out;
  }

  // Splits the inputs and works out, from output_shapes(), the shapes every stage must receive
  // for every microbatch, so that a mismatch is reported before anything runs; `outputs` gets the
  // last stage's output shapes per microbatch.
  data_type split(const payload_type& inputs, const std::vector<std::int64_t>& rows, const schedule& s,
                               std::vector<std::vector<shape>>& outputs) {
    data_type data;
    data.inputs = split_payload(inputs, rows);
    const auto stages = static_cast<std::size_t>(s.num_stages());
    data.expected.assign(stages, std::vector<std::vector<shape>>(rows.size()));
    std::vector<shape> cached_for;
    std::vector<std::vector<shape>> cached;
    for (std::size_t mb = 0; mb < rows.size(); ++mb) {
      const std::vector<shape> in = shapes_of(data.inputs[mb]);
      if (in != cached_for || cached.empty()) {
        cached = boundary_shapes(in);
        cached_for = in;
      }
      for (std::size_t st = 0; st < stages; ++st) data.expected[st][mb] = cached[st];
      outputs.push_back(cached[stages]);
    }
    return data;
  }

  // The input shapes of every stage, then the model's output shapes.
  std::vector<std::vector<shape>> boundary_shapes(std::vector<shape> in) const {
    std::vector<std::vector<shape>> out;
    for (int s = 0; s < split_.num_stages(); ++s) {
      out.push_back(in);
      for (int layer = split_.first(s); layer < split_.end(s); ++layer) {
        try {
          in = model_->output_shapes(layer, in);
        } catch (const std::exception& e) {
          const bool at_boundary = layer == split_.first(s) && s > 0;
          detail::fail(errc::invalid_argument, "stage ", s, " (layers ", split_.first(s), "..", split_.end(s) - 1,
                       "): layer ", layer, " cannot take inputs of shapes ", to_string(in),
                       at_boundary ? detail::concat(", which stage ", s - 1, " produces") : std::string(), ": ", e.what(),
                       "; make each layer's input match what the layer before it produces");
        }
      }
    }
    out.push_back(std::move(in));
    return out;
  }

  // Over a distributed transport, what every process must hold alike for a pipeline to run: its
  // make-up here, and (agree_on_call) the call's rows and shapes. A process that built another
  // pipeline, or passes another batch, is refused on every process before any payload moves.
  std::vector<agreement_field> pipeline_fields() const {
    std::vector<agreement_field> f;
    const auto add = [&](std::string name, auto value) { f.push_back({std::move(name), detail::concat(value), false}); };
    add("the model's layer count", model_->num_layers());
    add("the schedule", train_.name);
    add("pipeline ranks (p)", options_.ranks);
    add("stages per rank (v)", options_.virtual_stages);
    add("microbatches per train_step (m)", train_.microbatches);
    add("microbatches per infer()", infer_.microbatches);
    std::string sizes;
    for (const int n : split_.sizes()) {
      if (!sizes.empty()) sizes += ' ';
      sizes += std::to_string(n);
    }
    add("layers per stage", sizes);
    add("bytes per tensor value", sizeof(typename tensor_type::value_type));
    // The schedule by its content too, after the numbers that name a difference more plainly: two
    // processes that loaded different files of one name are told apart.
    char hex[2 * sizeof(std::uint64_t)];
    const std::to_chars_result end = std::to_chars(hex, hex + sizeof hex, detail::fingerprint(train_), 16);
    add("the schedule's actions (fingerprint)", std::string(hex, end.ptr));
    if constexpr (model_has_parameters<Model>) {
      // Replicas all-reduce each stage's gradients: their counts must match, value for value.
      for (const stage_type& st : stages_) {
        std::size_t n = 0;
        model_->for_each_parameter(st.first_layer(), st.end_layer(), [&](tensor_view p, tensor_view) { n += p.elements; });
        f.push_back({detail::concat("parameter values of stage ", st.index()), std::to_string(n), true});
      }
    }
    return f;
  }

  // Prepares a call (`prepare` splits the batch and works out the shapes). Over a distributed
  // transport the processes then agree on the call, its rows and shapes, and on whether every one
  // of them could prepare it, before any payload moves.
  template <class Prepare>
  void prepare_call(const char* call, const std::vector<std::int64_t>& rows, const data_type& data,
                    const std::vector<std::vector<shape>>& outputs, Prepare&& prepare) {
    if constexpr (distributed_transport<transport_type>) {
      const std::string problem = locally(prepare);
      std::vector<agreement_field> f = built_;
      f.push_back({"the call", call, false});
      if (!problem.empty()) {
        transport_.agree(f, problem, agreement_deadline());  // throws on every process
        detail::fail(errc::backend, "the processes agreed to go on although this one could not: ", problem);
      }
      f.push_back({"rows per microbatch", by_microbatch(rows, [](std::int64_t n) { return std::to_string(n); }), false});
      const auto text = [](const std::vector<shape>& shapes) { return to_string(std::span<const shape>(shapes)); };
      for (std::size_t st = 0; st < data.expected.size(); ++st) {
        f.push_back({detail::concat("stage ", st, "'s input shapes"), by_microbatch(data.expected[st], text), false});
      }
      f.push_back({"the model's output shapes", by_microbatch(outputs, text), false});
      transport_.agree(f, problem, agreement_deadline());
    } else {
      (void)call, (void)rows, (void)data, (void)outputs;
      prepare();
    }
  }

  // "32 for microbatches 0..1; 31 for 2..7", or "32 for all 8 microbatches".
  template <class T, class Text>
  static std::string by_microbatch(const std::vector<T>& values, Text&& text) {
    std::string out;
    for (std::size_t first = 0; first < values.size();) {
      std::size_t end = first + 1;
      while (end < values.size() && values[end] == values[first]) ++end;
      if (first == 0 && end == values.size()) return detail::concat(text(values[first]), " for all ", values.size(), " microbatches");
      out += detail::concat(out.empty() ? "" : "; ", text(values[first]), " for ", out.empty() ? "microbatches " : "",
                            first, end - first > 1 ? detail::concat("..", end - 1) : std::string());
      first = end;
    }
    return out;
  }

  Model* model_;
  pipeline_options options_;
  loss_type loss_;
  hook_type optimizer_;
  transport_type transport_;
  struct rank_device {
    std::shared_ptr<device_type> device;  // null for a rank of another process; ranks may share one
    typename device_type::stream compute{};
  };
  std::vector<rank_device> devices_;  // by rank; before the stages, which point into them
  schedule train_;
  schedule infer_;
  partition split_;
  std::vector<stage_type> stages_;
  std::vector<agreement_field> built_;  // distributed: what the processes agreed on at construction
  // Built last, once the stages exist; its rank threads are kept between calls, and
  // train_step(), infer() and generate() take turns on them.
  std::optional<executor<stage_type, transport_type>> executor_;
  run_trace trace_;
};

}  // namespace ppipe
