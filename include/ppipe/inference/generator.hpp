#pragma once
/// @file
/// @brief The generation engine: groups of sequences circulate through the stages, one decode
/// step per trip, with continuous batching on the first rank and each stage's KV state on its own
/// rank.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/inference/batcher.hpp"
#include "ppipe/inference/detail/generation_header.hpp"
#include "ppipe/inference/generation.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/inference/plan.hpp"
#include "ppipe/inference/sequence_cache.hpp"
#include "ppipe/device/wait.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/runtime/failure_channel.hpp"
#include "ppipe/runtime/rank_pool.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/runtime/watchdog.hpp"
#include "ppipe/schedule/placement.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe {

/// @brief Runs generate() calls over a pipeline's stages and transport.
///
/// Rank 0 runs the batcher. Each group's step goes from stage to stage as one message (the
/// activations and a header: which sequences, which states to free and allocate), the last stage
/// samples one token per sequence and sends them back to rank 0, and rank 0 sends the group's next
/// step as soon as its tokens are back, while the other groups are still on their way: nothing
/// drains between steps, and with as many groups with work as ranks, every rank has a group to
/// work on. Each stage frees and allocates sequence states as the header of the message it
/// receives says, so state changes reach every stage in the same order as the steps.
///
/// The stages must sit on the ranks in a loop (stage s on rank s mod p, as the looped placements
/// of GPipe, 1F1B and interleaved 1F1B have them). Message headers and token ids are i32 host
/// tensors, so the transport's tensor type is host_tensor. Rank r runs on the r-th thread of a
/// rank_pool, the one a pipeline's training steps run on.
/// @tparam Stage a ppipe::stage of a generative_model (what sequence_cache takes)
/// @tparam Transport a ppipe::transport of host tensors between the ranks
template <class Stage, transport Transport>
class generation_engine {
 public:
  using tensor_type = typename Transport::tensor_type;  ///< the transport's: host_tensor
  using payload_type = basic_payload<tensor_type>;      ///< a message: activations, then a header
  static_assert(std::is_same_v<tensor_type, host_tensor>,
                "ppipe: generation runs over transports of host tensors (its headers are i32 host tensors)");

  /// @brief An engine whose ranks run on `pool`'s threads.
  /// @param transport carries the steps between the ranks; outlives the engine
  /// @param stages every stage, by index; outlives the engine
  /// @param place where the stages run: a loop over the ranks
  /// @param pool the rank threads, shared with the pipeline's executor (one call at a time)
  /// @param timeout the longest any rank waits for a message
  /// @param record_trace whether results carry a trace
  generation_engine(Transport& transport, std::vector<Stage>& stages, const placement& place, rank_pool& pool,
                    std::chrono::milliseconds timeout, bool record_trace)
      : transport_(&transport), stages_(&stages), place_(&place), pool_(&pool), timeout_(timeout),
        record_trace_(record_trace) {
    // The loop must close: the last stage on the last rank, so that its tokens go to rank 0 on
    // the channel rank 0 receives on.
    const int p = place.num_ranks();
    const int last = place.num_stages() - 1;
    for (int s = 0; s <= last; ++s) {
      const int expected = s == 0 ? 0 : (place.rank_of(s - 1) + 1) % p;
      if (place.rank_of(s) != expected || (s == last && place.rank_of(s) != p - 1)) {
        detail::fail(errc::unsupported, "generation needs the stages in a loop over the ranks (stage s on rank "
                     "s mod p, here p=", p, " for ", last + 1, " stages), but stage ", s, " is on rank ",
                     place.rank_of(s), "; build the pipeline with GPipe, 1F1B or interleaved 1F1B, whose "
                     "placements are such loops");
      }
    }
  }

  /// @brief Generates every request's tokens: checks the call, lays it out (plan_generation) and
  /// runs it.
  /// @param requests the sequences to generate
  /// @param options sampler, groups and budgets
  /// @return the tokens, timings and (with record_trace) the trace
  /// @throws ppipe::error as plan_generation() does when the call is refused, and as run() does
  /// when it fails
  generation_result generate(std::span<const generation_request> requests, const generation_options& options) {
    generation_plan plan = plan_generation(requests, options, place_->num_ranks(), [&](int capacity) {
      std::vector<std::size_t> bytes;
      for (const Stage& st : *stages_) bytes.push_back(sequence_cache<Stage>::bytes(st, capacity));
      return bytes;
    });
    return run(requests, options, plan.groups, plan.group_size, std::move(plan.bytes));
  }

  /// @brief Generates every request's tokens in `groups` groups of at most `group_size`;
  /// `bytes[request][stage]` is the request's state on each stage, checked against the budget by
  /// the caller.
  /// @param requests the sequences to generate; sequence ids are their indices
  /// @param opt sampler, token counts, eos and cache budget (its groups and max_group_size are not
  /// read)
  /// @param groups the number of groups, at least 1
  /// @param group_size the most sequences in one group, at least 1
  /// @param bytes bytes[request][stage]: one row per request, one entry per stage
  /// @return the tokens, timings and (with record_trace) the trace
  /// @throws ppipe::error (errc::invalid_argument) when `groups` or `group_size` is below 1;
  /// otherwise the first failure of any rank, naming where it happened: e.g. errc::timeout when a
  /// rank waits longer than the timeout, errc::invalid_argument when the sampler returns a negative
  /// token, errc::stage_failed (the original nested) when a layer or the sampler throws something
  /// other than a ppipe::error
  generation_result run(std::span<const generation_request> requests, const generation_options& opt, int groups,
                        int group_size, std::vector<std::vector<std::size_t>> bytes) {
    const int p = place_->num_ranks();
    const auto stages = static_cast<std::size_t>(place_->num_stages());
    if (groups < 1 || group_size < 1) {
      detail::fail(errc::invalid_argument, "generation needs groups >= 1 and a group size >= 1, not groups=", groups, " and group size ", group_size);
    }
    continuous_batcher batcher(requests, groups, group_size, opt.max_new_tokens, opt.eos_token, opt.cache_budget,
                               std::move(bytes));
    run_state run{batcher, opt, groups};
    run.caches.reserve(stages);
    for (Stage& st : *stages_) run.caches.emplace_back(st);
    run.trace.schedule_name = "generate";
    run.trace.ranks.assign(static_cast<std::size_t>(p), {});
    run.busy.assign(stages, 0.0);
    run.peak.assign(stages, 0);
    run.board = std::vector<rank_status>(static_cast<std::size_t>(p));
    transport_->reset();
    run.origin = deadline_clock::now();
    pool_->run(p, [&](int r, const std::exception_ptr& not_started) { rank_main(run, r, not_started); });
    const double elapsed = micros(run, deadline_clock::now());
    if (run.failures.first().error) {
      abandon();
      rethrow(run);
    }
    generation_result out;
    out.elapsed_us = elapsed;
    out.steps = run.steps;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      const int id = static_cast<int>(i);
      out.tokens.push_back(batcher.tokens(id));
      out.admitted_us.push_back(batcher.admitted_us(id));
      out.first_token_us.push_back(batcher.first_token_us(id));
      out.finished_us.push_back(batcher.finished_us(id));
    }
    out.stage_busy_us = std::move(run.busy);
    out.peak_cache_bytes = std::move(run.peak);
    run.trace.microbatches = run.steps;
    if (record_trace_) out.trace = std::move(run.trace);
    return out;
  }

 private:
  struct rank_status {
    std::atomic<int> what{0};  // 0 waiting, 1 computing, 2 finished, 3 stopped
    std::atomic<int> stage{-1};
    std::atomic<int> step{-1};
  };
  struct pending_send {
    typename Transport::send_handle handle;
    payload_type data;
  };
  // What a rank is doing, for its error message.
  struct where {
    int stage = -1;
    int step = -1;
  };
  struct run_state {
    run_state(continuous_batcher& b, const generation_options& o, int g) : batcher(b), opt(o), groups(g) {}
    continuous_batcher& batcher;
    const generation_options& opt;
    int groups;
    deadline_clock::time_point origin{};
    run_trace trace;
    std::vector<double> busy;        // per stage, written by its rank only
    std::vector<std::size_t> peak;   // per stage, written by its rank only
    std::vector<rank_status> board;
    int steps = 0;                   // rank 0 only
    std::deque<detail::generation_header> local_tokens;  // rank 0: tokens of a last stage on rank 0
    std::vector<sequence_cache<Stage>> caches;  // per stage, used by its rank only
    detail::failure_channel<where> failures;
  };

  // After a failed call: lets go of the buffers the failed calls dropped (the states go with the
  // run's caches).
  void abandon() {
    for (Stage& st : *stages_) st.pool().reset_live();
  }

  static double micros(const run_state& run, deadline_clock::time_point t) {
    return std::chrono::duration<double, std::micro>(t - run.origin).count();
  }
  [[nodiscard]] deadline_clock::time_point deadline() const { return deadline_after(timeout_); }

  void rank_main(run_state& run, int r, const std::exception_ptr& not_started) {
    where at;
    std::deque<pending_send> sends;
    try {
      // The rank never got its device: every call fails here, naming it, until the pipeline is rebuilt.
      if (not_started) std::rethrow_exception(not_started);
      if (r == 0) {
        first_rank(run, sends, at);
      } else {
        follower(run, r, sends, at);
      }
      at = {};
      for (pending_send& ps : sends) finish_send(run, r, ps, true);
      run.board[static_cast<std::size_t>(r)].what.store(2);
    } catch (const detail::run_aborted&) {
      run.board[static_cast<std::size_t>(r)].what.store(3);
    } catch (...) {
      run.failures.report(std::current_exception(), r, at);
      run.board[static_cast<std::size_t>(r)].what.store(3);
      transport_->abort();
    }
  }

  // Rank 0: launches every group that has work, then takes one message (tokens, or a step for a
  // later stage of its own) and goes round again; when every request has finished, sends the stop.
  void first_rank(run_state& run, std::deque<pending_send>& sends, where& at) {
    const int p = place_->num_ranks();
    std::vector<char> busy(static_cast<std::size_t>(run.groups), 0);
    int in_flight = 0;
    int next = 0;
    for (;;) {
      const int first = next;
      for (int i = 0; i < run.groups; ++i) {
        const int g = (first + i) % run.groups;
        if (busy[static_cast<std::size_t>(g)]) continue;
        std::optional<group_step> st = run.batcher.next_step(g, micros(run, deadline_clock::now()));
        if (!st) continue;
        if (run.steps == std::numeric_limits<std::int32_t>::max()) {
          detail::fail(errc::unsupported, "a generate() call may run at most ", std::numeric_limits<std::int32_t>::max(),
                       " group steps; split the requests over several calls");
        }
        detail::generation_header h;
        h.step_id = run.steps++;
        h.group = g;
        h.release = std::move(st->release);
        h.admit = std::move(st->admit);
        h.batch = std::move(st->batch);
        payload_type input;
        std::vector<std::int32_t> ids(st->tokens.begin(), st->tokens.end());
        const auto rows = static_cast<std::int64_t>(ids.size());
        input.emplace_back(shape({rows}, dtype::i32), std::move(ids));
        busy[static_cast<std::size_t>(g)] = 1;
        ++in_flight;
        next = (g + 1) % run.groups;
        at_stage(run, 0, std::move(h), std::move(input), sends, at);
        at = {};
      }
      if (in_flight == 0) break;
      detail::generation_header h;
      payload_type act;
      if (!run.local_tokens.empty()) {
        h = std::move(run.local_tokens.front());
        run.local_tokens.pop_front();
      } else {
        receive(run, 0, (p - 1) % p, h, act, sends);
      }
      if (h.kind == detail::generation_header::sampled) {
        run.batcher.complete(h.group, h.tokens, micros(run, deadline_clock::now()));
        busy.at(static_cast<std::size_t>(h.group)) = 0;
        --in_flight;
      } else {
        at_stage(run, h.stage, std::move(h), std::move(act), sends, at);
        at = {};
      }
    }
    if (!run.batcher.done()) {
      detail::fail(errc::invalid_argument, run.batcher.waiting(), " requests could not be admitted with nothing "
                   "in flight; each request's state must fit the cache budget on every stage");
    }
    detail::generation_header stop;
    stop.kind = detail::generation_header::stop;
    stop.step_id = -1;
    stop.release = run.batcher.take_releases();
    const int highest = place_->stages_on(0).back();
    int reached = -1;
    at_stage(run, 0, std::move(stop), {}, sends, at, &reached);
    while (reached < highest) {
      detail::generation_header h;
      payload_type act;
      receive(run, 0, (p - 1) % p, h, act, sends);
      at_stage(run, h.stage, std::move(h), std::move(act), sends, at, &reached);
    }
  }

  void follower(run_state& run, int r, std::deque<pending_send>& sends, where& at) {
    const int p = place_->num_ranks();
    const int highest = place_->stages_on(r).back();
    int reached = -1;
    while (reached < highest) {
      detail::generation_header h;
      payload_type act;
      receive(run, r, (r + p - 1) % p, h, act, sends);
      at_stage(run, h.stage, std::move(h), std::move(act), sends, at, &reached);
    }
  }

  // Stage s's part of a step (or of the stop): free and allocate states as the header says, run
  // the layers, and pass the output on (or sample, on the last stage). `reached` is set to the
  // stage that handled a stop.
  void at_stage(run_state& run, int s, detail::generation_header h, payload_type act, std::deque<pending_send>& sends,
                where& at, int* reached = nullptr) {
    const int r = place_->rank_of(s);
    const int last = place_->num_stages() - 1;
    const Stage& stg = (*stages_)[static_cast<std::size_t>(s)];
    sequence_cache<Stage>& cache = run.caches[static_cast<std::size_t>(s)];
    at = {s, h.step_id};
    for (const int id : h.release) cache.finish(id);
    for (const sequence_admission& a : h.admit) cache.admit(a.id, a.capacity);
    auto& peak = run.peak[static_cast<std::size_t>(s)];
    peak = std::max(peak, stg.memory().cache_bytes);
    if (h.kind == detail::generation_header::stop) {
      if (reached) *reached = s;
      if (s < last) pass_on(run, r, s + 1, std::move(h), {}, sends, at, reached);
      return;
    }
    rank_status& me = run.board[static_cast<std::size_t>(r)];
    me.stage.store(s);
    me.step.store(h.step_id);
    me.what.store(1);
    const auto t0 = deadline_clock::now();
    payload_type out = cache.forward(h.step_id, h.batch, std::move(act));
    const auto t1 = deadline_clock::now();
    run.busy[static_cast<std::size_t>(s)] += std::chrono::duration<double, std::micro>(t1 - t0).count();
    if (record_trace_) {
      auto& events = run.trace.ranks[static_cast<std::size_t>(r)];
      // The microbatch is the group step; `step` is the event's place in the rank's list.
      events.push_back({action{s, h.step_id, action_kind::forward}, static_cast<int>(events.size()), micros(run, t0),
                        micros(run, t1)});
    }
    if (s < last) {
      pass_on(run, r, s + 1, std::move(h), std::move(out), sends, at, reached);
      return;
    }
    detail::generation_header back;
    back.kind = detail::generation_header::sampled;
    back.step_id = h.step_id;
    back.group = h.group;
    int row = 0;
    for (const sequence_step& q : h.batch) {
      row += q.rows;
      const int token = run.opt.sampler(out, row - 1);
      if (token < 0) {
        detail::fail(errc::invalid_argument, "the sampler returned token ", token, " for sequence ", q.id,
                     "; tokens are ids >= 0");
      }
      back.tokens.push_back(token);
    }
    if (r == 0) {
      run.local_tokens.push_back(std::move(back));
    } else {
      payload_type msg;
      msg.push_back(back.encode());
      send(run, r, 0, std::move(msg), sends);
    }
  }

  void pass_on(run_state& run, int r, int s, detail::generation_header h, payload_type act,
               std::deque<pending_send>& sends, where& at, int* reached) {
    h.stage = s;
    const int to = place_->rank_of(s);
    if (to == r) {
      at_stage(run, s, std::move(h), std::move(act), sends, at, reached);
      return;
    }
    act.push_back(h.encode());
    send(run, r, to, std::move(act), sends);
  }

  void send(run_state& run, int r, int to, payload_type msg, std::deque<pending_send>& sends) {
    pending_send& ps = sends.emplace_back(pending_send{{}, std::move(msg)});
    ps.handle = transport_->post_send(r, to, ps.data);
    // Let go of the sends that have completed, oldest first.
    while (!sends.empty() && finish_send(run, r, sends.front(), false)) sends.pop_front();
  }

  bool finish_send(run_state& run, int r, pending_send& ps, bool wait) {
    const wait_status st = transport_->complete_send(ps.handle, wait ? deadline() : deadline_clock::now());
    if (st == wait_status::aborted) throw detail::run_aborted{};
    if (st == wait_status::ready) return true;
    if (wait) {
      timed_out(run, r, detail::concat("rank ", r, " waited ", timeout_.count(), " ms for a send to complete"));
    }
    return false;
  }

  void receive(run_state& run, int r, int from, detail::generation_header& h, payload_type& act,
               std::deque<pending_send>& sends) {
    rank_status& me = run.board[static_cast<std::size_t>(r)];
    me.what.store(0);
    typename Transport::recv_handle handle = transport_->post_recv(from, r);
    const wait_status st = transport_->complete_recv(handle, act, deadline());
    if (st == wait_status::aborted) throw detail::run_aborted{};
    if (st == wait_status::timed_out) {
      timed_out(run, r, detail::concat("rank ", r, " waited ", timeout_.count(), " ms for the next message from rank ",
                                       from));
    }
    if (act.empty()) {
      detail::fail(errc::invalid_argument, "rank ", r, " got an empty message from rank ", from,
                   "; every message of a generation run ends with its header");
    }
    h = detail::generation_header::decode(act.back());
    act.pop_back();
    while (!sends.empty() && finish_send(run, r, sends.front(), false)) sends.pop_front();
  }

  [[noreturn]] void timed_out(run_state& run, int r, const std::string& what) {
    std::string others;
    for (int q = 0; q < static_cast<int>(run.board.size()); ++q) {
      if (q == r) continue;
      const rank_status& e = run.board[static_cast<std::size_t>(q)];
      switch (e.what.load()) {
        case 0: others += detail::concat("\n  rank ", q, ": waiting for a message"); break;
        case 1:
          others += detail::concat("\n  rank ", q, ": running stage ", e.stage.load(), " of step ", e.step.load());
          break;
        case 2: others += detail::concat("\n  rank ", q, ": finished"); break;
        default: others += detail::concat("\n  rank ", q, ": stopped after another rank failed"); break;
      }
    }
    throw detail::watchdog_error(errc::timeout, detail::concat(what, "; the other ranks:", others,
                                              "\nraise the timeout (pipeline_options::timeout) if kernels are this "
                                              "slow, or look at the rank that is stuck"));
  }

  [[noreturn]] void rethrow(run_state& run) {
    const auto& f = run.failures.first();
    const std::string place =
        f.at.stage >= 0
            ? detail::concat("generation: rank ", f.rank, ", stage ", f.at.stage,
                             f.at.step >= 0 ? detail::concat(", step ", f.at.step) : std::string())
            : detail::concat("generation: rank ", f.rank);
    detail::rethrow_at(f.error, place);
  }

  Transport* transport_;
  std::vector<Stage>* stages_;
  const placement* place_;
  rank_pool* pool_;
  std::chrono::milliseconds timeout_;
  bool record_trace_;
};

}  // namespace ppipe
