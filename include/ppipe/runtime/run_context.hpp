#pragma once
/// @file
/// @brief What every part of the executor shares during a run: its options, the step's data, the
/// stages by index, the transport, the watchdog's board, the failure channel, and how a rank and a
/// failure are named.

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/runtime/failure_channel.hpp"
#include "ppipe/runtime/watchdog.hpp"
#include "ppipe/schedule/recompute.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe {

/// @brief How the executor runs.
struct executor_options {
  /// The longest any rank waits for data or for the other ranks; past it the run fails with a
  /// ppipe::error (errc::timeout) that says what every rank was doing.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  bool record_trace = true;  ///< keep every action's start and end (see run_trace)
  /// Capture training steps into a graph and launch it while the shapes stay the same, where the
  /// stages run on one device that captures (see pipeline_options::capture_graphs).
  bool capture_graphs = false;
  /// Runs once on each rank's thread before its first action (the backend's start_rank: where a
  /// device rank binds its thread to its device). What it throws fails that rank's runs (and a
  /// generation run on the executor's threads).
  std::function<void(int rank)> start_rank;
};

/// @brief One run's inputs and results: per microbatch, what goes in and what comes out.
/// @tparam Tensor the tensors of the payloads
/// @tparam Device the stages' device type, which the optimizer hook runs on
/// @tparam Loss the loss's type (ppipe::stage_loss_function)
template <class Tensor, class Device = inline_device, class Loss = loss_function<Tensor>>
struct step_data {
  using payload_type = basic_payload<Tensor>;    ///< The tensors of one microbatch's payload.
  std::vector<payload_type> inputs;              ///< per microbatch: the first stage's input (taken)
  std::vector<payload_type> targets;             ///< per microbatch: the loss's target (training)
  std::vector<double> scales;                    ///< per microbatch: its share of the batch
  std::vector<std::vector<std::vector<shape>>> expected;  ///< [stage][mb]: the input shapes it must get
  const Loss* loss = nullptr;                    ///< training: the loss on the last stage
  const basic_optimizer_hook<Device>* optimizer = nullptr;  ///< training: run per stage after the step
  std::vector<double> losses;                    ///< out, per microbatch
  std::vector<payload_type> outputs;             ///< out, inference: per microbatch, the last stage's output
};

/// @brief A stage that enqueues its layers onto a stream device (ppipe::stream_stage): the
/// executor then orders transfers and compute with events, and the host waits only at step end.
template <class S>
concept stream_pipeline_stage = requires(S& s, int mb, typename S::box b, const typename S::failure_sink& sink) {
  typename S::device_type;
  { s.device() } -> std::same_as<device_context<typename S::device_type>&>;
  { s.forward(mb, b, sink) } -> std::same_as<typename S::box>;
  { s.infer(mb, b, sink) } -> std::same_as<typename S::box>;
};

namespace detail {

template <class S>
struct device_of {
  using type = inline_device;
};
template <class S>
  requires requires { typename S::device_type; }
struct device_of<S> {
  using type = typename S::device_type;
};

template <class S, class Fallback>
struct stage_tensor_of {
  using type = Fallback;
};
template <class S, class Fallback>
  requires requires { typename S::tensor_type; }
struct stage_tensor_of<S, Fallback> {
  using type = typename S::tensor_type;
};

/// Where in its step a rank is, for the message if it fails there.
enum class run_phase : unsigned char { action, loss, sends, barrier, optimizer, device, shared_device };
struct run_position {
  int step = -1;  // the action (for action and loss)
  run_phase where = run_phase::action;
  int stage = -1;  // the stage (for optimizer)
};

// Microseconds from `origin` to `t`: a trace's clock.
inline double micros_since(deadline_clock::time_point origin, deadline_clock::time_point t) {
  return std::chrono::duration<double, std::micro>(t - origin).count();
}

/// The state of an executor's runs that its action interpreters, its distributed conclusion and
/// its orchestration all use; each of them holds it by reference.
template <class Stage, class Transport>
struct run_context {
  using tensor_type = typename Transport::tensor_type;
  using payload_type = basic_payload<tensor_type>;
  using stage_type = Stage;
  using device_type = typename device_of<Stage>::type;
  /// The tensors the stages compute on: the transport's, or device tensors the executor stages
  /// through host memory at the pipeline's edges and at every transfer.
  using stage_tensor_type = typename stage_tensor_of<Stage, tensor_type>::type;
  using data_type = step_data<tensor_type, device_type,
                              stage_loss_function<tensor_type, stage_tensor_type, basic_layer_context<device_type>>>;

  run_context(Transport& t, std::vector<stage_type>& s, executor_options o)
      : transport(&t), stages(&s), options(std::move(o)), board(t.num_ranks()) {}

  Transport* transport;
  std::vector<stage_type>* stages;
  std::vector<stage_type*> by_stage;  // [s]: stage s's object, or nullptr where another process runs it
  std::vector<char> recomputed;       // [s * m + mb]: the schedule recomputes it (has its R)
  executor_options options;
  status_board board;
  failure_channel<run_position> failures;
  std::vector<double> host_us;  // when each rank's host issued its last action
  deadline_clock::time_point origin{};

  [[nodiscard]] double micros(deadline_clock::time_point t) const { return micros_since(origin, t); }
  // now + timeout, saturated: a timeout of milliseconds::max() means "wait for ever".
  [[nodiscard]] deadline_clock::time_point deadline() const { return deadline_after(options.timeout); }

  [[nodiscard]] stage_type& stage_at(int st) { return *by_stage[static_cast<std::size_t>(st)]; }

  void index_stages(const schedule& s) {
    // Which forwards stash their activations: those whose (stage, microbatch) has an R.
    recomputed = recompute_table(s.ranks, s.num_stages(), s.microbatches);
    by_stage.assign(static_cast<std::size_t>(s.num_stages()), nullptr);
    for (stage_type& st : *stages) {
      if (st.index() < 0 || st.index() >= s.num_stages() || by_stage[static_cast<std::size_t>(st.index())] != nullptr) {
        fail(errc::invalid_argument, "the executor was given stage ", st.index(), " twice or outside schedule \"",
             s.name, "\"'s ", s.num_stages(), " stages; give each stage once");
      }
      by_stage[static_cast<std::size_t>(st.index())] = &st;
    }
    for (const int r : local_ranks(s.num_ranks())) {
      for (const int st : s.place.stages_on(r)) {
        if (by_stage[static_cast<std::size_t>(st)] == nullptr) {
          fail(errc::invalid_argument, "schedule \"", s.name, "\" runs stage ", st, " on rank ", r,
               ", but the executor was not given that stage; give it every stage of the ranks it runs");
        }
      }
    }
  }

  // Walks rank r's action list: before each action `step` and the board follow it, unless
  // `stop()` ends the walk; `visit(a, stage, st, mb, i)` then runs it, where st and mb are its stage
  // and microbatch and i = st * m + mb indexes the interpreters' per-slot tables.
  template <class Stop, class Visit>
  void walk(const schedule& s, int r, int& step, Stop&& stop, Visit&& visit) {
    const auto& list = s.ranks[static_cast<std::size_t>(r)];
    const auto m = static_cast<std::size_t>(s.microbatches);
    for (std::size_t k = 0; k < list.size(); ++k) {
      if (stop()) break;
      step = static_cast<int>(k);
      const action& a = list[k];
      board.running(r, step);
      const auto st = static_cast<std::size_t>(a.stage);
      const auto mb = static_cast<std::size_t>(a.microbatch);
      visit(a, stage_at(a.stage), st, mb, st * m + mb);
    }
  }

  // The ranks this process runs: all of them, or a distributed transport's one.
  [[nodiscard]] std::vector<int> local_ranks(int p) const {
    if constexpr (distributed_transport<Transport>) {
      return {transport->rank()};
    } else {
      std::vector<int> all(static_cast<std::size_t>(p));
      for (int r = 0; r < p; ++r) all[static_cast<std::size_t>(r)] = r;
      return all;
    }
  }

  // A rank as messages name it: a distributed transport says which process (and replica) it is.
  [[nodiscard]] std::string rank_name(int r) const {
    if constexpr (distributed_transport<Transport>) {
      return transport->describe_rank(r);
    } else {
      return concat("rank ", r);
    }
  }

  // The rank a receive's data comes from: the stage before for an activation, after for a gradient.
  [[nodiscard]] static int sender_of(const schedule& s, const action& recv) {
    const int from = recv.kind == action_kind::recv_activation ? recv.stage - 1 : recv.stage + 1;
    return s.place.rank_table()[static_cast<std::size_t>(from)];
  }

  // Rank r's failure, reported to the others: their transfers end at once.
  void record_failure(std::exception_ptr e, int r, run_position at) {
    failures.report(std::move(e), r, at);
    transport->abort();
  }

  // A timeout of a rank that runs its actions call by call: with the board of every rank, or over
  // a distributed transport with a pointer to the other processes, which each say for themselves.
  [[noreturn]] void timed_out(const schedule& s, int r, const std::string& what) const {
    if constexpr (distributed_transport<Transport>) {
      throw watchdog_error(errc::timeout, concat(what, "; raise the timeout (pipeline_options::timeout) if "
                                                       "kernels are this slow, or look at that rank's process"));
    } else {
      throw watchdog_error(errc::timeout, concat(what, "; the other ranks:", board.others(s, r),
                                                 "\nraise the timeout (pipeline_options::timeout) if kernels are "
                                                 "this slow, or look at the rank that is stuck"));
    }
  }

  // Throws the run's first failure for the caller, naming the rank and where it was.
  [[noreturn]] void rethrow_failure(const schedule& s) const {
    const auto& f = failures.first();
    const auto& list = s.ranks[static_cast<std::size_t>(std::max(f.rank, 0))];
    const auto action_at = [&](int k) {
      return concat(describe(list[static_cast<std::size_t>(k)]), ", step ", k + 1, " of ", list.size());
    };
    std::string where;
    switch (f.at.where) {
      case run_phase::optimizer: where = concat(rank_name(f.rank), "'s optimizer hook for stage ", f.at.stage); break;
      case run_phase::loss: where = concat(rank_name(f.rank), "'s loss, after ", action_at(f.at.step)); break;
      case run_phase::sends: where = concat(rank_name(f.rank), ", completing its sends after its last action"); break;
      case run_phase::barrier: where = concat(rank_name(f.rank), ", waiting for the others to finish"); break;
      case run_phase::device: where = concat(rank_name(f.rank), "'s device, in work its layers or loss enqueued"); break;
      case run_phase::shared_device:
        where = concat("the device that ", rank_name(f.rank), " shares with other ranks, in work their layers or loss "
                       "enqueued (the stream below names the rank)");
        break;
      case run_phase::action:
        where = f.at.step >= 0 ? concat(rank_name(f.rank), " in ", action_at(f.at.step)) : rank_name(f.rank);
        break;
    }
    rethrow_at(f.error, where);
  }

  // Before a send whose receive was posted for the receiving stage's shapes: a mismatch is
  // reported here, by the stage that made it.
  template <class Payload>
  static void check_send(const Payload& sent, const data_type& data, const action& a) {
    const bool fwd = a.kind == action_kind::send_activation;
    const int receiving = fwd ? a.stage + 1 : a.stage;  // a gradient has the shapes of the stage's input
    const auto& want = data.expected[static_cast<std::size_t>(receiving)][static_cast<std::size_t>(a.microbatch)];
    if (has_shapes(sent, want)) return;
    if (fwd) {
      fail(errc::invalid_argument, "stage ", a.stage, " produced an output of shapes ", to_string(shapes_of(sent)),
           " for microbatch ", a.microbatch, " but stage ", a.stage + 1, "'s first layer takes ", to_string(want),
           "; each layer's forward must write what its output_shapes() says");
    }
    fail(errc::invalid_argument, "stage ", a.stage, " produced an input gradient of shapes ",
         to_string(shapes_of(sent)), " for microbatch ", a.microbatch, " but its input has shapes ", to_string(want),
         "; each layer's backward must write gradients of its inputs' shapes");
  }

  // Runs `hook(stage, info)` for every stage of rank r after a training step (and nothing for
  // inference); `at` says which stage's hook runs, for the message if it throws.
  template <class RunHook>
  void run_optimizer(const schedule& s, int r, const data_type& data, run_position& at, RunHook&& hook) {
    if (!data.optimizer || !*data.optimizer || s.mode != schedule_mode::training) return;
    at.where = run_phase::optimizer;
    for (const int st : s.place.stages_on(r)) {
      at.stage = st;
      stage_type& stg = stage_at(st);
      basic_stage_info<device_type> info;
      static_cast<stage_info&>(info) = stage_info{st, r, stg.first_layer(), stg.end_layer()};
      info.device = &stg.device();
      hook(stg, info);
    }
  }
  // The same, each hook called on the rank's thread.
  void run_optimizer(const schedule& s, int r, const data_type& data, run_position& at) {
    run_optimizer(s, r, data, at,
                  [&](stage_type&, const basic_stage_info<device_type>& info) { (*data.optimizer)(info); });
  }
};

}  // namespace detail
}  // namespace ppipe
