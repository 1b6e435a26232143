#pragma once
/// @file
/// @brief The executor: runs every rank's action list of a schedule on its own thread, moving
/// payloads through a Transport and calling each stage's layers.
///
/// The parts it orchestrates: the rank threads (rank_pool.hpp), the failure channel
/// (failure_channel.hpp), what a run shares (run_context.hpp), the two action interpreters
/// (host_actions.hpp, stream_actions.hpp) and a distributed transport's run (distributed_run.hpp).

#include <cstddef>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/runtime/distributed_run.hpp"
#include "ppipe/runtime/failure_channel.hpp"
#include "ppipe/runtime/host_actions.hpp"
#include "ppipe/runtime/rank_pool.hpp"
#include "ppipe/runtime/run_context.hpp"
#include "ppipe/runtime/stage.hpp"
#include "ppipe/runtime/stream_actions.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/stream_transport.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe {

/// @brief Runs schedules over a set of stages and a transport. The same executor serves every
/// backend: it issues work and posts transfers, and relies on the transport's completion calls
/// for ordering, never on a call having finished its work when it returns.
template <class Stage, pipeline_transport Transport>
  requires(transport<Transport> && pipeline_stage<Stage, typename Transport::tensor_type>) || stream_pipeline_stage<Stage>
class executor {
  using context = detail::run_context<Stage, Transport>;

 public:
  using tensor_type = typename Transport::tensor_type;  ///< The tensors the transport moves.
  using payload_type = basic_payload<tensor_type>;      ///< The tensors of one payload.
  using stage_type = Stage;                             ///< How a rank runs a stage.
  /// @brief The stages' device type (ppipe::inline_device where a stage names none).
  using device_type = typename detail::device_of<Stage>::type;
  /// @brief One run's inputs and results.
  using data_type = typename context::data_type;
  /// Whether the stages enqueue onto streams (and the host runs ahead), rather than run each call.
  static constexpr bool streams = stream_pipeline_stage<Stage>;
  static_assert(!streams || !distributed_transport<Transport> || stream_transport<Transport>,
                "ppipe: stages on stream devices run across processes only over a transport whose transfers run on "
                "their streams (a ppipe::stream_transport, such as NCCL's)");

  /// @brief An executor of `stages` over `transport`, with rank threads of its own.
  /// @param transport moves payloads between the ranks; outlives the executor
  /// @param stages one object per stage this process runs; outlives the executor
  /// @param options timeout, trace, and the hook that starts each rank's thread
  executor(Transport& transport, std::vector<stage_type>& stages, executor_options options = {})
      : ctx_(transport, stages, std::move(options)), actions_(ctx_), pool_(ctx_.options.start_rank) {
    if (ctx_.options.capture_graphs && !captures()) {
      detail::fail(errc::unsupported, "capture_graphs is on, but these stages cannot be captured into a graph: that "
                   "takes stages on a device that captures, with their tensors in its memory (ppipe::cuda::backend, or "
                   "the CPU-stream backend with device tensors on one device); turn capture_graphs off here");
    }
  }

  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;

  /// @brief How many runs were launched from a captured graph (executor_options::capture_graphs).
  /// @return the count since the executor was made
  [[nodiscard]] std::size_t graph_steps() const noexcept { return graph_steps_; }

  /// @brief The rank threads, for other work on the same ranks between runs (a pipeline's
  /// generate() calls), one at a time.
  /// @return the pool this executor's runs use
  [[nodiscard]] rank_pool& pool() noexcept { return pool_; }

  /// @brief Runs `s` (validated beforehand, with one stage object per stage of `s`) on `data`.
  /// A failure on any rank stops every rank and is rethrown here as a ppipe::error naming the
  /// rank and action, with the original exception nested.
  ///
  /// Rank r runs on the r-th thread of the executor's rank_pool, started by the first run and kept
  /// for the next ones. Runs on one pool take turns: none may start while another is running.
  /// @param s the schedule
  /// @param data the microbatches in; the losses or outputs out
  /// @return the run's trace
  run_trace run(const schedule& s, data_type& data) {
    const int p = s.num_ranks();
    const auto m = static_cast<std::size_t>(s.microbatches);
    if (ctx_.transport->num_ranks() != p) {
      detail::fail(errc::invalid_argument, "schedule \"", s.name, "\" has ", s.num_stages(), " stages on ", p,
                   " ranks, but the executor was given a ", ctx_.transport->num_ranks(),
                   "-rank transport; build them for the schedule");
    }
    ctx_.index_stages(s);
    if (s.mode == schedule_mode::training && (data.loss == nullptr || !*data.loss)) {
      detail::fail(errc::invalid_argument, "schedule \"", s.name,
                   "\" trains, but no loss was given; set step_data::loss");
    }
    data.losses.assign(m, 0.0);
    data.outputs.assign(m, payload_type{});
    for (stage_type& st : *ctx_.stages) st.prepare(s.microbatches);
    ctx_.transport->reset();
    ctx_.board.reset();
    ctx_.failures.reset();
    ctx_.host_us.assign(static_cast<std::size_t>(p), 0.0);
    if constexpr (streams) actions_.open(s);
    run_trace trace{s.name, s.microbatches, std::vector<std::vector<trace_event>>(static_cast<std::size_t>(p))};
    ctx_.origin = deadline_clock::now();
    if constexpr (distributed_transport<Transport>) {
      run_here(s, data, trace);
      trace.enqueued = ctx_.host_us;
      return trace;
    }
    bool from_graph = false;
    if constexpr (streams) from_graph = run_graph(s, data, trace);
    if (!from_graph) {
      pool_.run(p, [&](int r, const std::exception_ptr& not_started) {
        if (not_started) {
          // The rank never got its device: every run fails here, naming it, until the pipeline is rebuilt.
          ctx_.record_failure(not_started, r, detail::run_position{});
          ctx_.board.stopped(r);
        } else {
          rank_main(s, r, data, trace.ranks[static_cast<std::size_t>(r)]);
        }
      });
    }
    if (ctx_.failures.first().error) {
      // Let go of what the failed step holds now, not at the next step.
      for (stage_type& st : *ctx_.stages) st.prepare(s.microbatches);
      if constexpr (streams) actions_.forget_shapes();
      ctx_.rethrow_failure(s);
    }
    trace.enqueued = ctx_.host_us;
    return trace;
  }

 private:
  using actions_type =
      std::conditional_t<streams, detail::stream_actions<Stage, Transport>, detail::host_actions<Stage, Transport>>;

  static constexpr bool captures() {
    if constexpr (streams) {
      return actions_type::can_capture;
    } else {
      return false;
    }
  }

  // Over a distributed transport: this process's one rank, on the calling thread (started once).
  void run_here(const schedule& s, data_type& data, run_trace& trace) {
    const int r = ctx_.transport->rank();
    auto& events = trace.ranks[static_cast<std::size_t>(r)];
    if constexpr (streams) {
      detail::run_distributed(
          ctx_, s, data, [&](detail::run_position& at) { actions_.run(s, r, data, events, at); },
          [&](detail::run_position& at) { run_optimizer(s, r, data, at); });
    } else {
      // The slots hold what sends read until conclude() has cleared every transfer in flight.
      typename actions_type::rank_slots slots(s);
      detail::run_distributed(
          ctx_, s, data, [&](detail::run_position& at) { actions_.run(s, r, data, events, at, slots); },
          [&](detail::run_position& at) { ctx_.run_optimizer(s, r, data, at); });
    }
  }

  // Runs the step from a graph where executor_options::capture_graphs asks for it and the step
  // allows it (see stream_actions::plan()): the ranks enqueue into a capture, which then runs, or
  // the graph of an earlier step is launched; then the ranks run their hooks. Returns whether it
  // did (false: the step runs as usual).
  bool run_graph(const schedule& s, data_type& data, run_trace& trace) {
    using mode = typename actions_type::step_mode;
    const int p = s.num_ranks();
    const mode planned = actions_.plan(s, data, ctx_.options.capture_graphs);
    if (planned == mode::eager) return false;
    if (planned == mode::capture) {
      pool_.run(p, [&](int r, const std::exception_ptr& not_started) { rank_enqueue(s, r, data, not_started, trace); });
      if (!actions_.finish_capture(s)) return true;  // failed: run() lets go of the step and says why
    }
    actions_.replay(s, data);
    if (ctx_.failures.failed()) return true;
    pool_.run(p, [&](int r, const std::exception_ptr& not_started) {
      if (not_started) {
        ctx_.record_failure(not_started, r, detail::run_position{});
        ctx_.board.stopped(r);
        return;
      }
      detail::run_position at;
      after_actions(s, r, data, at);
    });
    if (!ctx_.failures.failed()) ++graph_steps_;
    return true;
  }

  void rank_main(const schedule& s, int r, data_type& data,
                 std::vector<trace_event>& events) {
    detail::run_position at;
    try {
      if constexpr (streams) {
        actions_.run(s, r, data, events, at);
      } else {
        typename actions_type::rank_slots slots(s);
        actions_.run(s, r, data, events, at, slots);
      }
    } catch (const detail::run_aborted&) {
      ctx_.board.stopped(r);
      return;
    } catch (...) {
      ctx_.record_failure(std::current_exception(), r, at);
      ctx_.board.stopped(r);
      return;
    }
    after_actions(s, r, data, at);
  }

  // Rank r's part of a captured step: its actions, enqueued into the capture, nothing more.
  void rank_enqueue(const schedule& s, int r, data_type& data, const std::exception_ptr& not_started,
                    run_trace& trace) {
    if (not_started) {
      ctx_.record_failure(not_started, r, detail::run_position{});
      return;
    }
    detail::run_position at;
    try {
      if constexpr (streams) actions_.run(s, r, data, trace.ranks[static_cast<std::size_t>(r)], at);
    } catch (const detail::run_aborted&) {
    } catch (...) {
      ctx_.record_failure(std::current_exception(), r, at);
    }
  }

  // After rank r's actions: the barrier, then its stages' optimizer hooks.
  void after_actions(const schedule& s, int r, data_type& data, detail::run_position& at) {
    try {
      wait_for_everyone(s, r);
      run_optimizer(s, r, data, at);
      ctx_.board.finished(r);
    } catch (const detail::run_aborted&) {
      ctx_.board.stopped(r);
    } catch (...) {
      ctx_.record_failure(std::current_exception(), r, at);
      ctx_.board.stopped(r);
    }
  }

  // Every rank waits here after its actions, so that no optimizer hook runs in a step in which a
  // rank failed. (A hook that throws cannot undo the hooks that other ranks ran at the same time.)
  void wait_for_everyone(const schedule& s, int r) {
    ctx_.board.waiting(r, static_cast<int>(s.ranks[static_cast<std::size_t>(r)].size()) - 1, -1);
    const detail::arrival how = ctx_.failures.arrive_and_wait(
        s.num_ranks(), ctx_.deadline(), r, detail::run_position{-1, detail::run_phase::barrier, -1}, [&] {
          timed_out(s, r, detail::concat("rank ", r, " finished its actions and waited ", ctx_.options.timeout.count(),
                                         " ms for the other ranks to finish the step"));
        });
    if (how == detail::arrival::everyone) return;
    if (how == detail::arrival::timed_out) ctx_.transport->abort();
    throw detail::run_aborted{};
  }

  // Runs the optimizer hook of every stage of rank r (training only); `at` says which one runs.
  void run_optimizer(const schedule& s, int r, data_type& data, detail::run_position& at) {
    if constexpr (streams) {
      ctx_.run_optimizer(s, r, data, at, [&](stage_type& stg, const basic_stage_info<device_type>& info) {
        actions_.run_hook(s, r, stg, *data.optimizer, info);
      });
    } else {
      ctx_.run_optimizer(s, r, data, at);
    }
  }

  [[noreturn]] void timed_out(const schedule& s, int r, const std::string& what) {
    if constexpr (streams) {
      actions_.timed_out(s, r, what);
    } else {
      ctx_.timed_out(s, r, what);
    }
  }

  context ctx_;
  actions_type actions_;
  std::size_t graph_steps_ = 0;
  // Declared last, so that its threads are joined before anything they use goes.
  rank_pool pool_;
};

}  // namespace ppipe
