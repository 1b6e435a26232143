#pragma once
/// @file
/// @brief The executor: runs every rank's action list of a schedule on its own thread, moving
/// payloads through a Transport and calling each stage's layers.

#include <chrono>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstddef>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "ppipe/tensor/bytes.hpp"
#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/runtime/stage.hpp"
#include "ppipe/runtime/stream_stage.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/runtime/watchdog.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe {

/// @brief How the executor runs.
struct executor_options {
  /// The longest any rank waits for data or for the other ranks; past it the run fails with a
  /// ppipe::error (errc::timeout) that says what every rank was doing.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  bool record_trace = true;  ///< keep every action's start and end (see run_trace)
  /// Runs once on each rank's thread before its first action (the backend's start_rank: where a
  /// device rank binds its thread to its device). What it throws fails that rank's first run.
  std::function<void(int rank)> start_rank;
};

/// @brief One run's inputs and results: per microbatch, what goes in and what comes out.
template <class Tensor, class Device = inline_device>
struct step_data {
  using payload_type = basic_payload<Tensor>;
  std::vector<payload_type> inputs;              ///< per microbatch: the first stage's input (taken)
  std::vector<payload_type> targets;             ///< per microbatch: the loss's target (training)
  std::vector<double> scales;                    ///< per microbatch: its share of the batch
  std::vector<std::vector<std::vector<shape>>> expected;  ///< [stage][mb]: the input shapes it must get
  const loss_function<Tensor>* loss = nullptr;   ///< training: the loss on the last stage
  const basic_optimizer_hook<Device>* optimizer = nullptr;  ///< training: run per stage after the step
  std::vector<double> losses;                    ///< out, per microbatch
  std::vector<payload_type> outputs;             ///< out, inference: per microbatch, the last stage's output
};

namespace detail {
/// Thrown inside a rank when another rank has failed: the rank stops without an error of its own.
struct run_aborted {};
}  // namespace detail

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
}  // namespace detail

/// @brief Runs schedules over a set of stages and a transport. The same executor serves every
/// backend: it issues work and posts transfers, and relies on the transport's completion calls
/// for ordering, never on a call having finished its work when it returns.
template <class Stage, transport Transport>
  requires pipeline_stage<Stage, typename Transport::tensor_type> || stream_pipeline_stage<Stage>
class executor {
 public:
  using tensor_type = typename Transport::tensor_type;
  using payload_type = basic_payload<tensor_type>;
  using stage_type = Stage;
  using device_type = typename detail::device_of<Stage>::type;
  /// Whether the stages enqueue onto streams (and the host runs ahead), rather than run each call.
  static constexpr bool streams = stream_pipeline_stage<Stage>;
  static_assert(!streams || !distributed_transport<Transport>,
                "ppipe: stages on stream devices run over transports of one process for now");

  executor(Transport& transport, std::vector<stage_type>& stages, executor_options options = {})
      : transport_(&transport), stages_(&stages), options_(options), board_(transport.num_ranks()) {}

  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;
  ~executor() { stop_workers(); }

  /// @brief Runs `s` (validated beforehand, with one stage object per stage of `s`) on `data`.
  /// Returns the run's trace. A failure on any rank stops every rank and is rethrown here as a
  /// ppipe::error naming the rank and action, with the original exception nested.
  ///
  /// Rank r runs on the executor's r-th worker thread, started by the first run and kept for the
  /// next ones: starting p threads costs more than a small step (tens of microseconds each), and
  /// a device backend binds each thread to its rank's device once.
  run_trace run(const schedule& s, step_data<tensor_type, device_type>& data) {
    const int p = s.num_ranks();
    const auto m = static_cast<std::size_t>(s.microbatches);
    if (transport_->num_ranks() != p) {
      detail::fail(errc::invalid_argument, "schedule \"", s.name, "\" has ", s.num_stages(), " stages on ", p,
                   " ranks, but the executor was given a ", transport_->num_ranks(),
                   "-rank transport; build them for the schedule");
    }
    index_stages(s);
    if (s.mode == schedule_mode::training && (data.loss == nullptr || !*data.loss)) {
      detail::fail(errc::invalid_argument, "schedule \"", s.name, "\" trains, but no loss was given; set step_data::loss");
    }
    data.losses.assign(m, 0.0);
    data.outputs.assign(m, payload_type{});
    for (stage_type& st : *stages_) st.prepare(s.microbatches);
    transport_->reset();
    board_.reset();
    failure_ = {};
    failed_.store(false);
    finished_ = 0;
    host_us_.assign(static_cast<std::size_t>(p), 0.0);
    if constexpr (streams) this->open_lanes(s);
    run_trace trace{s.name, s.microbatches, std::vector<std::vector<trace_event>>(static_cast<std::size_t>(p))};
    origin_ = deadline_clock::now();
    if constexpr (distributed_transport<Transport>) {
      run_distributed(s, data, trace);
      trace.enqueued = host_us_;
      return trace;
    }
    start_workers(p);
    {
      const std::lock_guard lock(jobs_mutex_);
      job_ = job{&s, &data, &trace};
      ++generation_;
      running_ = p;
    }
    job_posted_.notify_all();
    {
      // No deadline here: every rank's own waits have one, so the ranks end (unless a kernel
      // never returns, which nothing outside it can stop).
      std::unique_lock lock(jobs_mutex_);
      job_done_.wait(lock, [&] { return running_ == 0; });
    }
    if (failure_.error) {
      // Let go of what the failed step holds now, not at the next step.
      for (stage_type& st : *stages_) st.prepare(s.microbatches);
      rethrow_failure(s);
    }
    trace.enqueued = host_us_;
    return trace;
  }

 private:
  struct job {
    const schedule* s = nullptr;
    step_data<tensor_type, device_type>* data = nullptr;
    run_trace* trace = nullptr;
  };

  // Makes sure there are exactly p workers (a pipeline's p never changes, but an executor may be
  // reused for another schedule).
  void start_workers(int p) {
    if (static_cast<int>(workers_.size()) == p) return;
    stop_workers();
    {
      const std::lock_guard lock(jobs_mutex_);
      stopping_ = false;
    }
    try {
      for (int r = 0; r < p; ++r) workers_.emplace_back([this, r] { worker_main(r); });
    } catch (const std::system_error& e) {
      stop_workers();
      detail::fail(errc::backend, "could not start the thread of rank ", workers_.size(), " of ", p, ": ", e.what(),
                   "; the host backend needs one thread per rank");
    }
  }

  void stop_workers() {
    {
      const std::lock_guard lock(jobs_mutex_);
      stopping_ = true;
    }
    job_posted_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  void worker_main(int r) {
    std::uint64_t seen = 0;
    std::exception_ptr not_started;
    if (options_.start_rank) {
      try {
        options_.start_rank(r);
      } catch (...) {
        not_started = std::current_exception();
      }
    }
    for (;;) {
      job current;
      {
        std::unique_lock lock(jobs_mutex_);
        job_posted_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        current = job_;
      }
      if (not_started) {
        // The rank never got its device: every run fails here, naming it, until the pipeline is rebuilt.
        record_failure(not_started, r, position{});
        board_.stopped(r);
      } else {
        rank_main(*current.s, r, *current.data, current.trace->ranks[static_cast<std::size_t>(r)]);
      }
      {
        const std::lock_guard lock(jobs_mutex_);
        if (--running_ == 0) job_done_.notify_all();
      }
    }
  }

  // Where a rank is, for the message if it fails there.
  enum class phase : unsigned char { action, loss, sends, barrier, optimizer };
  struct position {
    int step = -1;  // the action (for action and loss)
    phase where = phase::action;
    int stage = -1;  // the stage (for optimizer)
  };
  struct failure_record {
    std::exception_ptr error;
    int rank = -1;
    position at;
  };

  // What one rank keeps during a run, indexed by stage * m + microbatch.
  struct rank_slots {
    using recv_handle = typename Transport::recv_handle;
    using send_handle = typename Transport::send_handle;
    explicit rank_slots(const schedule& s)
        : rank_slots(static_cast<std::size_t>(s.num_stages()) * static_cast<std::size_t>(s.microbatches)) {}
    explicit rank_slots(std::size_t n)
        : recv(n), recv_step(n, -1), recv_posted(n, 0.0), send_out(n), send_grad(n), handoff_in(n), handoff_grad(n),
          out(n), grad(n) {}
    std::vector<std::optional<recv_handle>> recv;  // the receive the compute at this slot needs
    std::vector<int> recv_step;
    std::vector<double> recv_posted;  // when it was posted, for the trace
    std::vector<std::optional<send_handle>> send_out;   // pending send of the stage's output
    std::vector<std::optional<send_handle>> send_grad;  // pending send of the input gradient
    std::vector<payload_type> handoff_in;    // a forward's input from a stage on the same rank
    std::vector<payload_type> handoff_grad;  // a backward's output gradient (the loss's, or local)
    std::vector<payload_type> out;           // inference output waiting for its send
    std::vector<payload_type> grad;          // input gradient waiting for its send
    std::vector<std::size_t> pending;        // slots with a send in flight (index, +n for gradients)
    // A pending key as (is the input gradient's send, slot index).
    [[nodiscard]] std::pair<bool, std::size_t> decode(std::size_t key) const {
      const bool is_grad = key >= recv.size();
      return {is_grad, is_grad ? key - recv.size() : key};
    }
  };

  [[nodiscard]] double micros(deadline_clock::time_point t) const {
    return std::chrono::duration<double, std::micro>(t - origin_).count();
  }
  // now + timeout, saturated: a timeout of milliseconds::max() means "wait for ever".
  [[nodiscard]] deadline_clock::time_point deadline() const { return deadline_after(options_.timeout); }

  void rank_main(const schedule& s, int r, step_data<tensor_type, device_type>& data, std::vector<trace_event>& events) {
    position at;
    try {
      if constexpr (streams) {
        run_stream_actions(s, r, data, events, at);
      } else {
        rank_slots slots(s);
        run_actions(s, r, data, events, at, slots);
      }
      wait_for_everyone(s, r);
      run_optimizer(s, r, data, at);
      board_.finished(r);
    } catch (const detail::run_aborted&) {
      board_.stopped(r);
    } catch (...) {
      record_failure(std::current_exception(), r, at);
      board_.stopped(r);
    }
  }

  void run_actions(const schedule& s, int r, step_data<tensor_type, device_type>& data, std::vector<trace_event>& events, position& at,
                   rank_slots& slots) {
    int& step = at.step;
    const auto& list = s.ranks[static_cast<std::size_t>(r)];
    const auto m = static_cast<std::size_t>(s.microbatches);
    const int last = s.num_stages() - 1;
    const std::vector<int>& rank_of = s.place.rank_table();
    const bool training = s.mode == schedule_mode::training;
    if (options_.record_trace) events.reserve(list.size());

    const auto record = [&](const action& a, int k, deadline_clock::time_point t0, deadline_clock::time_point t1) {
      if (options_.record_trace) events.push_back({a, k, micros(t0), micros(t1)});
    };
    // Waits for the receive of slot `i` and returns its payload.
    const auto receive = [&](std::size_t i, int k) {
      if (!slots.recv[i]) {
        detail::fail(errc::invalid_schedule, "rank ", r, " has no receive for ", describe(list[static_cast<std::size_t>(k)]),
                     "; the schedule must receive data before the compute that needs it");
      }
      // With agreed shapes the buffers went to the transport when the receive was posted.
      payload_type in = agreed(data) ? payload_type{} : receive_buffers(data, list[static_cast<std::size_t>(slots.recv_step[i])]);
      board_.waiting(r, k, slots.recv_step[i]);
      const wait_status st = transport_->complete_recv(*slots.recv[i], in, deadline());
      if (st == wait_status::aborted) throw detail::run_aborted{};
      if (st == wait_status::timed_out) {
        const action& waited = list[static_cast<std::size_t>(slots.recv_step[i])];
        const int from = waited.kind == action_kind::recv_activation ? rank_of[static_cast<std::size_t>(waited.stage - 1)]
                                                                     : rank_of[static_cast<std::size_t>(waited.stage + 1)];
        timed_out(s, r, detail::concat(rank_name(r), " waited ", options_.timeout.count(), " ms in ", describe(list[static_cast<std::size_t>(k)]),
                               " for ", describe(waited), " from ", rank_name(from), ", step ", k + 1, " of ", list.size()));
      }
      board_.running(r, k);
      if (options_.record_trace) {
        const action& ra = list[static_cast<std::size_t>(slots.recv_step[i])];
        double end = micros(deadline_clock::now());
        if constexpr (requires { slots.recv[i]->arrived; }) end = std::max(micros(slots.recv[i]->arrived), 0.0);
        const double start = slots.recv_posted[i];
        events.push_back({ra, slots.recv_step[i], start, std::max(start, end)});
      }
      slots.recv[i].reset();
      return in;
    };
    const auto check_input = [&](const payload_type& in, int st, int mb, const char* what) {
      if (data.expected.empty()) return;
      const auto& want = data.expected[static_cast<std::size_t>(st)][static_cast<std::size_t>(mb)];
      const std::vector<shape> got = shapes_of(in);
      if (got != want) {
        detail::fail(errc::invalid_argument, "stage ", st, " got ", what, " of shapes ", to_string(got),
                     " for microbatch ", mb, " but its first layer takes ", to_string(want),
                     "; the stages before it and the transport must deliver what output_shapes() says");
      }
    };
    // Completes a send: waits up to the timeout, or (wait = false) only checks. True when done.
    // `key` is the slot (i, or i + n for the input gradient's send), for the message.
    const auto finish_send = [&](std::optional<typename rank_slots::send_handle>& h, bool wait, std::size_t key) {
      if (!h) return true;
      const wait_status st = transport_->complete_send(*h, wait ? deadline() : already_passed);
      if (st == wait_status::aborted) throw detail::run_aborted{};
      if (st == wait_status::ready) {
        h.reset();
        return true;
      }
      if (wait) {
        const auto [is_grad, i] = slots.decode(key);
        const int sent_stage = static_cast<int>(i / m);
        const int to_stage = is_grad ? sent_stage - 1 : sent_stage + 1;
        timed_out(s, r, detail::concat(rank_name(r), " waited ", options_.timeout.count(), " ms for ",
                                       rank_name(rank_of[static_cast<std::size_t>(to_stage)]), " to take its send of ",
                                       describe(action{sent_stage, static_cast<std::int32_t>(i % m),
                                                       is_grad ? action_kind::send_gradient : action_kind::send_activation})));
      }
      return false;
    };
    const auto poll_sends = [&](bool wait) {
      std::size_t keep = 0;
      for (const std::size_t key : slots.pending) {
        const auto [is_grad, i] = slots.decode(key);
        if (finish_send(is_grad ? slots.send_grad[i] : slots.send_out[i], wait, key)) {
          (is_grad ? slots.grad[i] : slots.out[i]).clear();
        } else {
          slots.pending[keep++] = key;
        }
      }
      slots.pending.resize(keep);
    };

    for (std::size_t k = 0; k < list.size(); ++k) {
      step = static_cast<int>(k);
      const action& a = list[k];
      board_.running(r, step);
      const auto st = static_cast<std::size_t>(a.stage);
      const auto mb = static_cast<std::size_t>(a.microbatch);
      const std::size_t i = st * m + mb;
      stage_type& stg = stage_at(a.stage);
      switch (a.kind) {
        case action_kind::recv_activation:
        case action_kind::recv_gradient: {
          const int from = rank_of[a.kind == action_kind::recv_activation ? st - 1 : st + 1];
          const auto t0 = deadline_clock::now();
          if (slots.recv[i]) {
            detail::fail(errc::invalid_schedule, "rank ", r, " posts ", describe(a), " while the receive at step ",
                         slots.recv_step[i] + 1, " for the same stage and microbatch is still pending; "
                         "a schedule receives a microbatch's gradient only after its forward has run");
          }
          slots.recv[i] = [&] {
            if constexpr (agreed_transfers) {
              if (agreed(data)) return transport_->post_recv(from, r, agreed_shapes, receive_buffers(data, a));
            }
            return transport_->post_recv(from, r);
          }();
          slots.recv_step[i] = step;
          slots.recv_posted[i] = micros(t0);
          break;
        }
        case action_kind::send_activation:
        case action_kind::send_gradient: {
          const bool fwd = a.kind == action_kind::send_activation;
          const int to = rank_of[fwd ? st + 1 : st - 1];
          const auto t0 = deadline_clock::now();
          const payload_type& src = fwd ? (training ? stg.output(a.microbatch) : slots.out[i]) : slots.grad[i];
          (fwd ? slots.send_out[i] : slots.send_grad[i]) = [&] {
            if constexpr (agreed_transfers) {
              if (agreed(data)) {
                check_send(src, data, a);
                return transport_->post_send(r, to, src, agreed_shapes);
              }
            }
            return transport_->post_send(r, to, src);
          }();
          slots.pending.push_back(fwd ? i : i + slots.recv.size());
          poll_sends(false);
          record(a, step, t0, deadline_clock::now());
          break;
        }
        case action_kind::forward: {
          payload_type in;
          if (a.stage == 0) {
            in = std::move(data.inputs[mb]);
          } else if (rank_of[st - 1] == r) {
            in = std::move(slots.handoff_in[i]);
          } else {
            in = receive(i, step);
          }
          check_input(in, a.stage, a.microbatch, "an input");
          const auto t0 = deadline_clock::now();
          if (training) {
            const payload_type& out = stg.forward(a.microbatch, std::move(in));
            if (a.stage == last) {
              payload_type grad = stg.output_gradient_buffer(a.microbatch);
              at.where = phase::loss;
              data.losses[mb] = (*data.loss)(out, data.targets[mb], grad, data.scales[mb]);
              if (!has_shapes(grad, out)) {
                detail::fail(errc::invalid_argument, "the loss left a gradient of shapes ", to_string(shapes_of(grad)),
                             " for an output of shapes ", to_string(shapes_of(out)), " (microbatch ", a.microbatch,
                             "); a loss must write into the gradient buffer it is given, not replace it");
              }
              at.where = phase::action;
              slots.handoff_grad[i] = std::move(grad);
            } else if (rank_of[st + 1] == r) {
              slots.handoff_in[i + m] = out;
            }
          } else {
            payload_type out = stg.infer(a.microbatch, std::move(in));
            if (a.stage == last) {
              data.outputs[mb] = std::move(out);
            } else if (rank_of[st + 1] == r) {
              slots.handoff_in[i + m] = std::move(out);
            } else {
              slots.out[i] = std::move(out);
            }
          }
          record(a, step, t0, deadline_clock::now());
          break;
        }
        case action_kind::backward:
        case action_kind::backward_input: {
          payload_type g;
          if (a.stage == last || rank_of[st + 1] == r) {
            g = std::move(slots.handoff_grad[i]);
          } else {
            g = receive(i, step);
          }
          finish_send(slots.send_out[i], true, i);  // the backward frees the buffer it reads
          const auto t0 = deadline_clock::now();
          const bool want = a.stage > 0;
          payload_type gin = a.kind == action_kind::backward ? stg.backward(a.microbatch, std::move(g), want)
                                                             : stg.backward_input(a.microbatch, std::move(g), want);
          if (want) {
            if (rank_of[st - 1] == r) {
              slots.handoff_grad[i - m] = std::move(gin);
            } else {
              slots.grad[i] = std::move(gin);
            }
          }
          record(a, step, t0, deadline_clock::now());
          break;
        }
        case action_kind::backward_weight: {
          const auto t0 = deadline_clock::now();
          stg.backward_weight(a.microbatch);
          record(a, step, t0, deadline_clock::now());
          break;
        }
      }
    }
    at.where = phase::sends;
    poll_sends(true);
    host_us_[static_cast<std::size_t>(r)] = micros(deadline_clock::now());
  }

  // --- stages on stream devices ------------------------------------------------------------------
  // A rank's host thread enqueues its whole step and returns to wait only at the end. Each rank has
  // a compute stream (its stages'), a send stream and a receive stream on its device; events order
  // them: a send waits for the compute that made its payload, a compute waits for the receive that
  // brought its input, a backward waits for the send of the output it frees.

  struct lanes {
    device_type* device = nullptr;
    typename device_type::stream compute{};
    typename device_type::stream send{};
    typename device_type::stream recv{};
  };
  struct mark {  // an action's span on a stream, resolved into the trace after the step
    action act;
    int step = 0;
    typename device_type::event start;
    typename device_type::event end;
  };
  using box = stream_payload<tensor_type>;

  // Each rank's device and streams; send and receive streams are made once, on the first run.
  void open_lanes(const schedule& s) {
    lanes_.resize(static_cast<std::size_t>(s.num_ranks()));
    for (int r = 0; r < s.num_ranks(); ++r) {
      lanes& l = lanes_[static_cast<std::size_t>(r)];
      const auto on = s.place.stages_on(r);
      stage_type& first = stage_at(on.front());
      if (l.device == nullptr) {
        l.device = first.device().device;
        l.compute = first.device().stream;
        l.send = l.device->create_stream(detail::concat("rank ", r, " send"));
        l.recv = l.device->create_stream(detail::concat("rank ", r, " receive"));
      }
      for (const int st : on) {
        if (stage_at(st).device().device != l.device) {
          detail::fail(errc::invalid_argument, "stages ", on.front(), " and ", st, " run on rank ", r,
                       " but on different devices; a rank's stages share its device");
        }
      }
      // The last run drained every stream (settle() returns only then), so a failure it left may go.
      l.device->clear_error();
    }
  }

  // Waits until every stream of rank r has run what was enqueued. Past twice the timeout without
  // any stream finishing an item, the rank fails naming what each stream is doing (twice: a
  // receive's own timeout names rank, peer and action, and must come first); after any rank's
  // failure the rank's device skips its remaining work, so that the streams drain quickly.
  void settle(const schedule& s, int r, lanes& l) {
    device_type& d = *l.device;
    auto last_progress = deadline_clock::now();
    std::size_t done = 0;
    bool reported = false;
    // (An array, not a braced list in the loop: nvcc's front end rejects the latter.)
    const std::array<typename device_type::stream, 3> rank_streams{l.compute, l.send, l.recv};
    for (const auto& stream : rank_streams) {
      for (;;) {
        const auto slice = std::min(deadline_clock::now() + std::chrono::milliseconds(20), deadline_clock::time_point::max());
        if (d.synchronize(stream, slice) == wait_status::ready) break;
        if (failed_.load()) d.abort();
        if constexpr (requires { d.finished_items(); }) {
          const std::size_t now_done = d.finished_items();
          if (now_done != done) {
            done = now_done;
            last_progress = deadline_clock::now();
          }
        }
        if (!reported && deadline_clock::now() - last_progress > 2 * options_.timeout) {
          reported = true;
          std::string doing;
          for (const auto& each : rank_streams) {
            if constexpr (requires { d.status(each); }) doing += detail::concat("\n  ", d.status(each));
          }
          std::exception_ptr e;
          try {
            timed_out(s, r, detail::concat(rank_name(r), "'s streams made no progress for ", 2 * options_.timeout.count(),
                                           " ms:", doing));
          } catch (...) {
            e = std::current_exception();
          }
          record_failure(std::move(e), r, position{-1, phase::sends, -1});
          d.abort();
        }
      }
    }
  }

  void run_stream_actions(const schedule& s, int r, step_data<tensor_type, device_type>& data, std::vector<trace_event>& events,
                          position& at) {
    lanes& l = lanes_[static_cast<std::size_t>(r)];
    device_type& d = *l.device;
    try {
      enqueue_step(s, r, data, events, at, l);
    } catch (...) {
      // Nothing more is enqueued; what is in flight is skipped and drained before the stages let go.
      d.abort();
      settle(s, r, l);
      throw;
    }
  }

  void enqueue_step(const schedule& s, int r, step_data<tensor_type, device_type>& data, std::vector<trace_event>& events,
                    position& at, lanes& l) {
    device_type& d = *l.device;
    int& step = at.step;
    const auto& list = s.ranks[static_cast<std::size_t>(r)];
    const auto m = static_cast<std::size_t>(s.microbatches);
    const std::size_t n = static_cast<std::size_t>(s.num_stages()) * m;
    const int last = s.num_stages() - 1;
    const std::vector<int>& rank_of = s.place.rank_table();
    const bool training = s.mode == schedule_mode::training;
    if (data.expected.empty()) {
      detail::fail(errc::invalid_argument, "stages on a stream device need every stage's input shapes ahead "
                   "(step_data::expected); the pipeline gives them");
    }
    struct posted {
      typename Transport::recv_handle handle;
      int step = -1;
      box into;
    };
    std::vector<std::optional<posted>> recv(n);
    std::vector<box> handoff_in(n), handoff_grad(n), out(n), grad(n);
    std::vector<std::optional<typename device_type::event>> sent_out(n);
    std::vector<std::pair<std::size_t, box>> finals;
    std::vector<mark> marks;
    marks.reserve(list.size());
    const auto origin = d.record(l.compute);
    double origin_us = micros(deadline_clock::now());

    const auto sink = [this, r](int k, phase where) {
      return [this, r, k, where](std::exception_ptr e) { record_failure(std::move(e), r, position{k, where, -1}); };
    };
    const auto reads = [&](typename device_type::stream on, const box& b, access mode) {
      for (const auto& region : b.regions) d.use(on, region.data, region.bytes, mode);
    };
    // Enqueues the completion of slot i's receive on the receive stream and orders the compute
    // stream after it; returns the box it fills.
    const auto receive = [&](std::size_t i, int k) {
      if (!recv[i]) {
        detail::fail(errc::invalid_schedule, "rank ", r, " has no receive for ", describe(list[static_cast<std::size_t>(k)]),
                     "; the schedule must receive data before the compute that needs it");
      }
      posted p = std::move(*recv[i]);
      recv[i].reset();
      const action waited = list[static_cast<std::size_t>(p.step)];
      const action needed = list[static_cast<std::size_t>(k)];
      const int from = waited.kind == action_kind::recv_activation ? rank_of[static_cast<std::size_t>(waited.stage - 1)]
                                                                   : rank_of[static_cast<std::size_t>(waited.stage + 1)];
      // The compute stream needs the data once it has run what is enqueued on it so far: the
      // receive's timeout counts from then, as it does on a host rank that blocks in the receive.
      const auto need = d.record(l.compute);
      const auto t0 = d.record(l.recv);
      reads(l.recv, p.into, access::write);
      d.enqueue(
          l.recv,
          [this, &s, &d, r, from, waited, needed, k, need, handle = p.handle, into = p.into,
           fail = sink(p.step, phase::action), size = list.size()]() mutable {
            try {
              payload_type arrived;
              std::optional<deadline_clock::time_point> due;
              wait_status st = wait_status::timed_out;
              for (;;) {
                if (!due && d.query(need)) due = deadline();
                const auto slice = deadline_clock::now() + std::chrono::milliseconds(10);
                st = transport_->complete_recv(handle, arrived, due ? std::min(*due, slice) : slice);
                if (st != wait_status::timed_out || (due && deadline_clock::now() >= *due)) break;
              }
              if (st == wait_status::aborted) throw detail::run_aborted{};
              if (st == wait_status::timed_out) {
                timed_out(s, r, detail::concat(rank_name(r), " waited ", options_.timeout.count(), " ms in ", describe(needed),
                                               " for ", describe(waited), " from ", rank_name(from),
                                               " (on its receive stream), step ", k + 1, " of ", size));
              }
              if (!has_shapes(arrived, into.shapes)) {
                detail::fail(errc::invalid_argument, rank_name(r), " received ", to_string(shapes_of(arrived)), " in ",
                             describe(waited), " where ", to_string(into.shapes),
                             " was expected; the stages must deliver what output_shapes() says");
              }
              for (std::size_t t = 0; t < arrived.size(); ++t) {
                std::memcpy(into.regions[t].data, arrived[t].byte_data(), arrived[t].bytes());
              }
            } catch (const detail::run_aborted&) {
              throw;
            } catch (...) {
              fail(std::current_exception());
              throw;
            }
          },
          detail::concat("receive ", describe(waited)));
      const auto t1 = d.record(l.recv);
      d.wait(l.compute, t1);
      marks.push_back({waited, p.step, t0, t1});
      return std::move(p.into);
    };

    for (std::size_t k = 0; k < list.size(); ++k) {
      if (failed_.load()) break;  // another rank failed: enqueue nothing more
      step = static_cast<int>(k);
      const action& a = list[k];
      board_.running(r, step);
      const auto st = static_cast<std::size_t>(a.stage);
      const auto mb = static_cast<std::size_t>(a.microbatch);
      const std::size_t i = st * m + mb;
      stage_type& stg = stage_at(a.stage);
      switch (a.kind) {
        case action_kind::recv_activation:
        case action_kind::recv_gradient: {
          const bool fwd = a.kind == action_kind::recv_activation;
          const int from = rank_of[fwd ? st - 1 : st + 1];
          if (recv[i]) {
            detail::fail(errc::invalid_schedule, "rank ", r, " posts ", describe(a), " while the receive for the same "
                         "stage and microbatch is still pending; a schedule receives a microbatch's gradient only after "
                         "its forward has run");
          }
          const auto& shapes = data.expected[static_cast<std::size_t>(fwd ? a.stage : a.stage + 1)][mb];
          recv[i] = posted{transport_->post_recv(from, r), step, stg.pool().acquire(shapes, l.recv, false)};
          break;
        }
        case action_kind::send_activation:
        case action_kind::send_gradient: {
          const bool fwd = a.kind == action_kind::send_activation;
          const int to = rank_of[fwd ? st + 1 : st - 1];
          box src = fwd ? (training ? stg.output(a.microbatch) : std::move(out[i])) : std::move(grad[i]);
          if (!src) {
            detail::fail(errc::invalid_schedule, "rank ", r, " has nothing to send in ", describe(a),
                         "; the schedule must send a microbatch's data after the compute that makes it");
          }
          const int receiving = fwd ? a.stage + 1 : a.stage;
          if (src.shapes != data.expected[static_cast<std::size_t>(receiving)][mb]) check_send(*src.data, data, a);
          d.wait(l.send, d.record(l.compute));
          const auto t0 = d.record(l.send);
          reads(l.send, src, access::read);
          d.enqueue(
              l.send,
              [this, &s, r, to, a, payload = src.data, fail = sink(step, phase::action)] {
                try {
                  auto h = transport_->post_send(r, to, *payload);
                  const wait_status done = transport_->complete_send(h, deadline());
                  if (done == wait_status::aborted) throw detail::run_aborted{};
                  if (done == wait_status::timed_out) {
                    timed_out(s, r, detail::concat(rank_name(r), " waited ", options_.timeout.count(), " ms for ",
                                                   rank_name(to), " to take its send of ", describe(a)));
                  }
                } catch (const detail::run_aborted&) {
                  throw;
                } catch (...) {
                  fail(std::current_exception());
                  throw;
                }
              },
              describe(a));
          const auto t1 = d.record(l.send);
          marks.push_back({a, step, t0, t1});
          if (fwd && training) {
            sent_out[i] = t1;  // the backward that frees the output waits for this
          } else {
            stg.pool().release(src, l.send, false);
          }
          break;
        }
        case action_kind::forward: {
          box in;
          if (a.stage == 0) {
            in = stg.pool().wrap(std::move(data.inputs[mb]), l.compute);
          } else if (rank_of[st - 1] == r) {
            in = std::move(handoff_in[i]);
          } else {
            in = receive(i, step);
          }
          if (in.shapes != data.expected[st][mb]) {
            detail::fail(errc::invalid_argument, "stage ", a.stage, " got an input of shapes ", to_string(in.shapes),
                         " for microbatch ", mb, " but its first layer takes ", to_string(data.expected[st][mb]),
                         "; the stages before it must deliver what output_shapes() says");
          }
          const auto t0 = d.record(l.compute);
          if (training) {
            box y = stg.forward(a.microbatch, std::move(in), sink(step, phase::action));
            if (a.stage == last) {
              box g = stg.output_gradient_buffer(a.microbatch);
              reads(l.compute, y, access::read);
              reads(l.compute, g, access::write);
              d.enqueue(
                  l.compute,
                  [loss = data.loss, target = &data.targets[mb], result = &data.losses[mb], scale = data.scales[mb], y = y,
                   g = g, mbi = a.microbatch, fail = sink(step, phase::loss)] {
                    try {
                      *result = (*loss)(*y.data, *target, *g.data, scale);
                      if (!has_shapes(*g.data, y.shapes)) {
                        detail::fail(errc::invalid_argument, "the loss left a gradient of shapes ", to_string(shapes_of(*g.data)),
                                     " for an output of shapes ", to_string(y.shapes), " (microbatch ", mbi,
                                     "); a loss must write into the gradient buffer it is given, not replace it");
                      }
                    } catch (...) {
                      fail(std::current_exception());
                      throw;
                    }
                  },
                  detail::concat("the loss of microbatch ", a.microbatch));
              handoff_grad[i] = std::move(g);
            } else if (rank_of[st + 1] == r) {
              box next = stage_at(a.stage + 1).pool().acquire(y.shapes, l.compute, false);
              for (std::size_t t = 0; t < y.regions.size(); ++t) {
                d.copy_async(l.compute, next.regions[t].data, y.regions[t].data, y.regions[t].bytes);
              }
              handoff_in[i + m] = std::move(next);
            }
          } else {
            box y = stg.infer(a.microbatch, std::move(in), sink(step, phase::action));
            if (a.stage == last) {
              finals.emplace_back(mb, std::move(y));
            } else if (rank_of[st + 1] == r) {
              handoff_in[i + m] = std::move(y);
            } else {
              out[i] = std::move(y);
            }
          }
          marks.push_back({a, step, t0, d.record(l.compute)});
          break;
        }
        case action_kind::backward:
        case action_kind::backward_input: {
          box g;
          if (a.stage == last || rank_of[st + 1] == r) {
            g = std::move(handoff_grad[i]);
          } else {
            g = receive(i, step);
          }
          if (sent_out[i]) d.wait(l.compute, *sent_out[i]);  // the backward frees the output the send reads
          sent_out[i].reset();
          const auto t0 = d.record(l.compute);
          const bool want = a.stage > 0;
          box gin = a.kind == action_kind::backward
                        ? stg.backward(a.microbatch, std::move(g), want, sink(step, phase::action))
                        : stg.backward_input(a.microbatch, std::move(g), want, sink(step, phase::action));
          if (want) {
            if (rank_of[st - 1] == r) {
              handoff_grad[i - m] = std::move(gin);
            } else {
              grad[i] = std::move(gin);
            }
          }
          marks.push_back({a, step, t0, d.record(l.compute)});
          break;
        }
        case action_kind::backward_weight: {
          const auto t0 = d.record(l.compute);
          stg.backward_weight(a.microbatch, sink(step, phase::action));
          marks.push_back({a, step, t0, d.record(l.compute)});
          break;
        }
      }
    }
    host_us_[static_cast<std::size_t>(r)] = micros(deadline_clock::now());
    at.where = phase::sends;
    settle(s, r, l);
    if (failed_.load()) throw detail::run_aborted{};
    for (auto& [mbi, y] : finals) data.outputs[mbi] = std::move(*y.data);
    if (options_.record_trace) {
      // The record completed once the stream got to it, after the host time taken above: where
      // the device says when, every rank's events share one clock.
      if constexpr (requires { d.completed_at(origin); }) origin_us = micros(d.completed_at(origin));
      for (const mark& k : marks) {
        events.push_back({k.act, k.step, origin_us + d.elapsed_us(origin, k.start), origin_us + d.elapsed_us(origin, k.end)});
      }
    }
  }

  // Every rank waits here after its actions, so that no optimizer hook runs in a step in which a
  // rank failed. (A hook that throws cannot undo the hooks that other ranks ran at the same time.)
  void wait_for_everyone(const schedule& s, int r) {
    std::unique_lock lock(mutex_);
    ++finished_;
    done_.notify_all();
    board_.waiting(r, static_cast<int>(s.ranks[static_cast<std::size_t>(r)].size()) - 1, -1);
    const bool all = done_.wait_until(lock, deadline(), [&] { return failure_.error || finished_ == s.num_ranks(); });
    if (failure_.error) throw detail::run_aborted{};
    if (!all) {
      // Recorded before the lock is let go, so that a rank arriving now cannot see every rank
      // finished and run its optimizer in a step that has failed.
      std::exception_ptr e;
      try {
        timed_out(s, r, detail::concat("rank ", r, " finished its actions and waited ", options_.timeout.count(),
                                       " ms for the other ranks to finish the step"));
      } catch (...) {
        e = std::current_exception();
      }
      set_failure(std::move(e), r, position{-1, phase::barrier, -1});
      lock.unlock();
      done_.notify_all();
      transport_->abort();
      throw detail::run_aborted{};
    }
  }

  [[noreturn]] void timed_out(const schedule& s, int r, const std::string& what) {
    if constexpr (distributed_transport<Transport>) {
      // The other ranks are other processes: each says for itself what it was doing.
      throw detail::watchdog_error(errc::timeout, detail::concat(what, "; raise the timeout (pipeline_options::timeout) if "
                                                                 "kernels are this slow, or look at that rank's process"));
    } else if constexpr (streams) {
      // The hosts enqueued long ago: what each rank's streams are doing is what tells the stuck one.
      std::string doing;
      for (std::size_t k = 0; k < lanes_.size(); ++k) {
        const lanes& l = lanes_[k];
        if constexpr (requires { l.device->status(l.compute); }) {
          const std::array<typename device_type::stream, 3> rank_streams{l.compute, l.send, l.recv};
          for (const auto& each : rank_streams) doing += detail::concat("\n  ", l.device->status(each));
        }
      }
      throw detail::watchdog_error(errc::timeout, detail::concat(what, "; the streams:", doing,
                                        "\nraise the timeout (pipeline_options::timeout) if kernels are this slow, "
                                        "or look at the stream that is stuck"));
    } else {
      throw detail::watchdog_error(errc::timeout, detail::concat(what, "; the other ranks:", board_.others(s, r),
                                        "\nraise the timeout (pipeline_options::timeout) if kernels are this slow, "
                                        "or look at the rank that is stuck"));
    }
  }

  // by_stage_[s]: the stage object of stage s, or nullptr where it lives in another process.
  void index_stages(const schedule& s) {
    by_stage_.assign(static_cast<std::size_t>(s.num_stages()), nullptr);
    for (stage_type& st : *stages_) {
      if (st.index() < 0 || st.index() >= s.num_stages() || by_stage_[static_cast<std::size_t>(st.index())] != nullptr) {
        detail::fail(errc::invalid_argument, "the executor was given stage ", st.index(), " twice or outside schedule \"",
                     s.name, "\"'s ", s.num_stages(), " stages; give each stage once");
      }
      by_stage_[static_cast<std::size_t>(st.index())] = &st;
    }
    for (const int r : local_ranks(s.num_ranks())) {
      for (const int st : s.place.stages_on(r)) {
        if (by_stage_[static_cast<std::size_t>(st)] == nullptr) {
          detail::fail(errc::invalid_argument, "schedule \"", s.name, "\" runs stage ", st, " on rank ", r,
                       ", but the executor was not given that stage; give it every stage of the ranks it runs");
        }
      }
    }
  }
  [[nodiscard]] stage_type& stage_at(int st) { return *by_stage_[static_cast<std::size_t>(st)]; }

  // Whether the stages can lend a receive buffers from their pools.
  static constexpr bool lends_receive_buffers =
      requires(stage_type& s, const std::vector<shape>& shapes) { s.pool().for_receive(shapes); };
  // Whether transfers go in the transport's agreed-shapes form (see ppipe::agrees_shapes): the
  // transport offers it, the stages can lend receive buffers, and the run's shapes are known.
  static constexpr bool agreed_transfers = agrees_shapes<Transport> && lends_receive_buffers;
  static bool agreed(const step_data<tensor_type, device_type>& data) { return agreed_transfers && !data.expected.empty(); }

  // Before a send in the agreed form: what it sends must have the shapes the receiving stage takes
  // (its receive is posted for those), so a mismatch is reported here, by the stage that made it.
  static void check_send(const payload_type& sent, const step_data<tensor_type, device_type>& data, const action& a) {
    const bool fwd = a.kind == action_kind::send_activation;
    const int receiving = fwd ? a.stage + 1 : a.stage;  // a gradient has the shapes of the stage's input
    const auto& want = data.expected[static_cast<std::size_t>(receiving)][static_cast<std::size_t>(a.microbatch)];
    if (has_shapes(sent, want)) return;
    if (fwd) {
      detail::fail(errc::invalid_argument, "stage ", a.stage, " produced an output of shapes ", to_string(shapes_of(sent)),
                   " for microbatch ", a.microbatch, " but stage ", a.stage + 1, "'s first layer takes ",
                   to_string(want), "; each layer's forward must write what its output_shapes() says");
    }
    detail::fail(errc::invalid_argument, "stage ", a.stage, " produced an input gradient of shapes ",
                 to_string(shapes_of(sent)), " for microbatch ", a.microbatch, " but its input has shapes ",
                 to_string(want), "; each layer's backward must write gradients of its inputs' shapes");
  }

  // What a receive is handed to fill: for a transport that fills given buffers, tensors of the
  // shapes the receiving stage expects (an activation: its input's; a gradient: its output's),
  // from that stage's pool; otherwise nothing.
  payload_type receive_buffers(const step_data<tensor_type, device_type>& data, const action& recv) {
    if constexpr ((fills_given_buffers<Transport> || agrees_shapes<Transport>) && lends_receive_buffers) {
      if (data.expected.empty()) return {};
      const int expecting = recv.kind == action_kind::recv_activation ? recv.stage : recv.stage + 1;
      return stage_at(recv.stage).pool().for_receive(
          data.expected[static_cast<std::size_t>(expecting)][static_cast<std::size_t>(recv.microbatch)]);
    } else {
      return {};
    }
  }

  // A rank as messages name it: a distributed transport says which process (and replica) it is.
  [[nodiscard]] std::string rank_name(int r) const {
    if constexpr (distributed_transport<Transport>) {
      return transport_->describe_rank(r);
    } else {
      return detail::concat("rank ", r);
    }
  }

  // The ranks this process runs: all of them, or a distributed transport's one.
  [[nodiscard]] std::vector<int> local_ranks(int p) const {
    if constexpr (distributed_transport<Transport>) {
      return {transport_->rank()};
    } else {
      std::vector<int> all(static_cast<std::size_t>(p));
      for (int r = 0; r < p; ++r) all[static_cast<std::size_t>(r)] = r;
      return all;
    }
  }

  // A distributed transport's run: this process runs its one rank on the calling thread; at the
  // end the transport makes every process agree on how the run went, so a failure on any rank is
  // thrown on every rank, and the losses or outputs reach every rank.
  void run_distributed(const schedule& s, step_data<tensor_type, device_type>& data, run_trace& trace)
    requires distributed_transport<Transport>
  {
    const int r = transport_->rank();
    position at;
    std::exception_ptr local;
    rank_outcome report;
    {
      // The slots hold what sends read until conclude() has cleared every transfer in flight.
      rank_slots slots(s);
      try {
        run_actions(s, r, data, trace.ranks[static_cast<std::size_t>(r)], at, slots);
      } catch (const detail::run_aborted&) {
        report.what = rank_outcome::outcome::aborted;
      } catch (...) {
        local = std::current_exception();
        failure_ = {local, r, at};
        report.what = rank_outcome::outcome::failed;
        try {
          rethrow_failure(s);
        } catch (const error& e) {
          report.code = e.code();
          report.message = std::string(e.message());
        }
      }
      const run_verdict verdict = transport_->conclude(report, deadline());
      if (!verdict.ok) {
        for (stage_type& st : *stages_) st.prepare(s.microbatches);
        if (local && verdict.rank == r) rethrow_failure(s);
        throw error(verdict.code, verdict.message);
      }
    }
    // Every rank learns the results, which the last stage's rank holds.
    const int last = s.place.rank_table()[static_cast<std::size_t>(s.num_stages() - 1)];
    std::vector<std::byte> bytes;
    if (s.mode == schedule_mode::training) {
      bytes.resize(data.losses.size() * sizeof(double));
      if (r == last) std::memcpy(bytes.data(), data.losses.data(), bytes.size());
      share(bytes, last, "the microbatch losses");
      if (bytes.size() != data.losses.size() * sizeof(double)) {
        detail::fail(errc::backend, "rank ", last, " sent ", bytes.size(), " bytes of losses for ", data.losses.size(),
                     " microbatches; every process must make the same calls on the pipeline");
      }
      std::memcpy(data.losses.data(), bytes.data(), bytes.size());
    } else {
      if (r == last) bytes = detail::serialize_payloads(data.outputs);
      share(bytes, last, "the inference outputs");
      if (r != last) data.outputs = detail::deserialize_payloads<tensor_type>(bytes);
    }
    try {
      run_optimizer(s, r, data, at);
    } catch (...) {
      failure_ = {std::current_exception(), r, at};
      rethrow_failure(s);
    }
  }

  // Runs the optimizer hook of every stage of rank r (training only); `at` says which one runs.
  void run_optimizer(const schedule& s, int r, step_data<tensor_type, device_type>& data, position& at) {
    if (!data.optimizer || !*data.optimizer || s.mode != schedule_mode::training) return;
    at.where = phase::optimizer;
    for (const int st : s.place.stages_on(r)) {
      at.stage = st;
      stage_type& stg = stage_at(st);
      basic_stage_info<device_type> info;
      static_cast<stage_info&>(info) = stage_info{st, r, stg.first_layer(), stg.end_layer()};
      info.device = &stg.device();
      if constexpr (streams) {
        // On the stage's stream, after the step's work; its failure is the hook's, not the device's.
        std::exception_ptr thrown;
        device_type& d = *stg.device().device;
        d.enqueue(stg.device().stream, [&thrown, hook = data.optimizer, info] {
          try {
            (*hook)(info);
          } catch (...) {
            thrown = std::current_exception();
          }
        }, "the optimizer hook");
        this->settle(s, r, this->lanes_[static_cast<std::size_t>(r)]);
        if (thrown) std::rethrow_exception(thrown);
      } else {
        (*data.optimizer)(info);
      }
    }
  }

  void share(std::vector<std::byte>& bytes, int root, const char* what)
    requires distributed_transport<Transport>
  {
    if (transport_->broadcast(bytes, root, deadline()) != wait_status::ready) {
      detail::fail(errc::timeout, "rank ", transport_->rank(), " waited ", options_.timeout.count(), " ms for rank ", root,
                   " to broadcast ", what);
    }
  }

  // The first failure wins; the caller holds mutex_.
  void set_failure(std::exception_ptr e, int rank, position at) {
    if (failure_.error) return;
    failed_.store(true);
    failure_.error = std::move(e);
    failure_.rank = rank;
    failure_.at = at;
  }

  void record_failure(std::exception_ptr e, int rank, position at) {
    {
      const std::lock_guard lock(mutex_);
      set_failure(std::move(e), rank, at);
    }
    done_.notify_all();
    transport_->abort();
  }

  [[noreturn]] void rethrow_failure(const schedule& s) {
    const failure_record f = failure_;
    const auto& list = s.ranks[static_cast<std::size_t>(std::max(f.rank, 0))];
    const auto action_at = [&](int k) {
      return detail::concat(describe(list[static_cast<std::size_t>(k)]), ", step ", k + 1, " of ", list.size());
    };
    std::string where;
    switch (f.at.where) {
      case phase::optimizer: where = detail::concat(rank_name(f.rank), "'s optimizer hook for stage ", f.at.stage); break;
      case phase::loss: where = detail::concat(rank_name(f.rank), "'s loss, after ", action_at(f.at.step)); break;
      case phase::sends: where = detail::concat(rank_name(f.rank), ", completing its sends after its last action"); break;
      case phase::barrier: where = detail::concat(rank_name(f.rank), ", waiting for the others to finish"); break;
      case phase::action:
        where = f.at.step >= 0 ? detail::concat(rank_name(f.rank), " in ", action_at(f.at.step)) : rank_name(f.rank);
        break;
    }
    detail::rethrow_at(f.error, where);
  }

  Transport* transport_;
  std::vector<stage_type>* stages_;
  std::vector<stage_type*> by_stage_;
  executor_options options_;
  detail::status_board board_;
  std::mutex mutex_;
  std::condition_variable done_;
  std::vector<lanes> lanes_;       // stream devices: each rank's streams
  std::vector<double> host_us_;    // stream devices: when each rank's host finished enqueueing
  failure_record failure_;
  std::atomic<bool> failed_{false};  // failure_.error is set: read by streams without the lock
  int finished_ = 0;
  deadline_clock::time_point origin_{};

  // The workers and the job they run; guarded by jobs_mutex_.
  std::vector<std::thread> workers_;
  std::mutex jobs_mutex_;
  std::condition_variable job_posted_;
  std::condition_variable job_done_;
  job job_;
  std::uint64_t generation_ = 0;
  int running_ = 0;
  bool stopping_ = false;
};

}  // namespace ppipe
