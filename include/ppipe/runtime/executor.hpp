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
#include "ppipe/transport/transport.hpp"

namespace ppipe {

/// @brief Runs schedules over a set of stages and a transport. The same executor serves every
/// backend: it issues work and posts transfers, and relies on the transport's completion calls
/// for ordering, never on a call having finished its work when it returns.
template <class Stage, transport Transport>
  requires pipeline_stage<Stage, typename Transport::tensor_type> || stream_pipeline_stage<Stage>
class executor {
  using context = detail::run_context<Stage, Transport>;

 public:
  using tensor_type = typename Transport::tensor_type;
  using payload_type = basic_payload<tensor_type>;
  using stage_type = Stage;
  using device_type = typename detail::device_of<Stage>::type;
  /// @brief One run's inputs and results.
  using data_type = typename context::data_type;
  /// Whether the stages enqueue onto streams (and the host runs ahead), rather than run each call.
  static constexpr bool streams = stream_pipeline_stage<Stage>;
  static_assert(!streams || !distributed_transport<Transport>,
                "ppipe: stages on stream devices run over transports of one process for now");

  /// @brief An executor of `stages` over `transport`, with rank threads of its own.
  /// @param transport moves payloads between the ranks; outlives the executor
  /// @param stages one object per stage this process runs; outlives the executor
  /// @param options timeout, trace, and the hook that starts each rank's thread
  executor(Transport& transport, std::vector<stage_type>& stages, executor_options options = {})
      : ctx_(transport, stages, std::move(options)), actions_(ctx_), pool_(ctx_.options.start_rank) {}

  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;

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
      detail::run_distributed(ctx_, actions_, s, data, trace);
      trace.enqueued = ctx_.host_us;
      return trace;
    }
    pool_.run(p, [&](int r, const std::exception_ptr& not_started) {
      if (not_started) {
        // The rank never got its device: every run fails here, naming it, until the pipeline is rebuilt.
        ctx_.record_failure(not_started, r, detail::run_position{});
        ctx_.board.stopped(r);
      } else {
        rank_main(s, r, data, trace.ranks[static_cast<std::size_t>(r)]);
      }
    });
    if (ctx_.failures.first().error) {
      // Let go of what the failed step holds now, not at the next step.
      for (stage_type& st : *ctx_.stages) st.prepare(s.microbatches);
      ctx_.rethrow_failure(s);
    }
    trace.enqueued = ctx_.host_us;
    return trace;
  }

 private:
  using actions_type =
      std::conditional_t<streams, detail::stream_actions<Stage, Transport>, detail::host_actions<Stage, Transport>>;

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
  // Declared last, so that its threads are joined before anything they use goes.
  rank_pool pool_;
};

}  // namespace ppipe
