#pragma once
/// @file
/// @brief The action interpreter for stages that run each call to completion (the host
/// backends): a rank's thread walks its action list, posting transfers where the schedule puts
/// them and completing each receive just before the compute that reads it.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/runtime/failure_channel.hpp"
#include "ppipe/runtime/run_context.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/runtime/watchdog.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe::detail {

/// Runs one rank's action list call by call on the rank's thread; the run's state is the
/// context's, so one interpreter serves every rank.
template <class Stage, class Transport>
class host_actions {
 public:
  using context = run_context<Stage, Transport>;
  using payload_type = typename context::payload_type;
  using data_type = typename context::data_type;

  explicit host_actions(context& ctx) : ctx_(ctx) {}

  /// What one rank keeps during a run, indexed by stage * m + microbatch.
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

  /// Runs rank r's actions of `s`; `at` follows the rank, for the message if it fails.
  void run(const schedule& s, int r, data_type& data, std::vector<trace_event>& events, run_position& at,
           rank_slots& slots) {
    // Locals, not members: the hot loop reaches them through one pointer fewer.
    context& ctx = ctx_;
    Transport& transport = *ctx.transport;
    status_board& board = ctx.board;
    int& step = at.step;
    const auto& list = s.ranks[static_cast<std::size_t>(r)];
    const auto m = static_cast<std::size_t>(s.microbatches);
    const int last = s.num_stages() - 1;
    const std::vector<int>& rank_of = s.place.rank_table();
    const bool training = s.mode == schedule_mode::training;
    const bool tracing = ctx.options.record_trace;
    if (tracing) events.reserve(list.size());

    const auto record = [&events, tracing, origin = ctx.origin](const action& a, int k, deadline_clock::time_point t0,
                                                                 deadline_clock::time_point t1) {
      if (tracing) events.push_back({a, k, micros_since(origin, t0), micros_since(origin, t1)});
    };
    // Waits for the receive of slot `i` and returns its payload.
    const auto receive = [&](std::size_t i, int k) {
      if (!slots.recv[i]) {
        fail(errc::invalid_schedule, "rank ", r, " has no receive for ", describe(list[static_cast<std::size_t>(k)]),
             "; the schedule must receive data before the compute that needs it");
      }
      // With agreed shapes the buffers went to the transport when the receive was posted.
      const action& waited = list[static_cast<std::size_t>(slots.recv_step[i])];
      payload_type in = agreed(data) ? payload_type{} : receive_buffers(data, waited);
      board.waiting(r, k, slots.recv_step[i]);
      const wait_status st = transport.complete_recv(*slots.recv[i], in, ctx.deadline());
      if (st == wait_status::aborted) throw run_aborted{};
      if (st == wait_status::timed_out) {
        const std::string from = ctx.rank_name(context::sender_of(s, waited));
        ctx.timed_out(s, r, concat(ctx.rank_name(r), " waited ", ctx.options.timeout.count(), " ms in ",
                                    describe(list[static_cast<std::size_t>(k)]), " for ", describe(waited), " from ",
                                    from, ", step ", k + 1, " of ", list.size()));
      }
      board.running(r, k);
      if (tracing) {
        double end = ctx.micros(deadline_clock::now());
        if constexpr (requires { slots.recv[i]->arrived; }) end = std::max(ctx.micros(slots.recv[i]->arrived), 0.0);
        const double start = slots.recv_posted[i];
        events.push_back({waited, slots.recv_step[i], start, std::max(start, end)});
      }
      slots.recv[i].reset();
      return in;
    };
    const auto check_input = [&](const payload_type& in, int st, int mb, const char* what) {
      if (data.expected.empty()) return;
      const auto& want = data.expected[static_cast<std::size_t>(st)][static_cast<std::size_t>(mb)];
      const std::vector<shape> got = shapes_of(in);
      if (got != want) {
        fail(errc::invalid_argument, "stage ", st, " got ", what, " of shapes ", to_string(got),
             " for microbatch ", mb, " but its first layer takes ", to_string(want),
             "; the stages before it and the transport must deliver what output_shapes() says");
      }
    };
    // Completes a send: waits up to the timeout, or (wait = false) only checks. True when done.
    // `key` is the slot (i, or i + n for the input gradient's send), for the message.
    const auto finish_send = [&](std::optional<typename rank_slots::send_handle>& h, bool wait, std::size_t key) {
      if (!h) return true;
      const wait_status st = transport.complete_send(*h, wait ? ctx.deadline() : already_passed);
      if (st == wait_status::aborted) throw run_aborted{};
      if (st == wait_status::ready) {
        h.reset();
        return true;
      }
      if (wait) {
        const auto [is_grad, i] = slots.decode(key);
        const int sent_stage = static_cast<int>(i / m);
        const int to_stage = is_grad ? sent_stage - 1 : sent_stage + 1;
        const action sent{sent_stage, static_cast<std::int32_t>(i % m),
                          is_grad ? action_kind::send_gradient : action_kind::send_activation};
        ctx.timed_out(s, r, concat(ctx.rank_name(r), " waited ", ctx.options.timeout.count(), " ms for ",
                                    ctx.rank_name(rank_of[static_cast<std::size_t>(to_stage)]),
                                    " to take its send of ", describe(sent)));
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

    ctx.walk(s, r, step, [] { return false; },
              [&](const action& a, Stage& stg, std::size_t st, std::size_t mb, std::size_t i) {
      switch (a.kind) {
        case action_kind::recv_activation:
        case action_kind::recv_gradient: {
          const int from = rank_of[a.kind == action_kind::recv_activation ? st - 1 : st + 1];
          const auto t0 = deadline_clock::now();
          if (slots.recv[i]) {
            fail(errc::invalid_schedule, "rank ", r, " posts ", describe(a), " while the receive at step ",
                 slots.recv_step[i] + 1, " for the same stage and microbatch is still pending; "
                 "a schedule receives a microbatch's gradient only after its forward has run");
          }
          slots.recv[i] = [&] {
            if constexpr (agreed_transfers) {
              if (agreed(data)) return transport.post_recv(from, r, agreed_shapes, receive_buffers(data, a));
            }
            return transport.post_recv(from, r);
          }();
          slots.recv_step[i] = step;
          slots.recv_posted[i] = ctx.micros(t0);
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
                context::check_send(src, data, a);
                return transport.post_send(r, to, src, agreed_shapes);
              }
            }
            return transport.post_send(r, to, src);
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
              at.where = run_phase::loss;
              data.losses[mb] = (*data.loss)(out, data.targets[mb], grad, data.scales[mb]);
              if (!has_shapes(grad, out)) {
                fail(errc::invalid_argument, "the loss left a gradient of shapes ", to_string(shapes_of(grad)),
                     " for an output of shapes ", to_string(shapes_of(out)), " (microbatch ", a.microbatch,
                     "); a loss must write into the gradient buffer it is given, not replace it");
              }
              at.where = run_phase::action;
              slots.handoff_grad[i] = std::move(grad);
            } else if (rank_of[st + 1] == r) {
              slots.handoff_in[i + m] = out;
            }
            if (ctx.recomputed[i] != 0) stg.stash(a.microbatch);
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
        case action_kind::recompute: {
          const auto t0 = deadline_clock::now();
          stg.recompute(a.microbatch);
          record(a, step, t0, deadline_clock::now());
          break;
        }
      }
    });
    at.where = run_phase::sends;
    poll_sends(true);
    ctx.host_us[static_cast<std::size_t>(r)] = ctx.micros(deadline_clock::now());
  }

 private:
  // Whether the stages can lend a receive buffers from their pools.
  static constexpr bool lends_receive_buffers =
      requires(Stage& s, const std::vector<shape>& shapes) { s.pool().for_receive(shapes); };
  // Whether transfers go in the transport's agreed-shapes form (see ppipe::agrees_shapes): the
  // transport offers it, the stages can lend receive buffers, and the run's shapes are known.
  static constexpr bool agreed_transfers = agrees_shapes<Transport> && lends_receive_buffers;
  static bool agreed(const data_type& data) { return agreed_transfers && !data.expected.empty(); }

  // What a receive is handed to fill: for a transport that fills given buffers, tensors of the
  // shapes the receiving stage expects (an activation: its input's; a gradient: its output's),
  // from that stage's pool; otherwise nothing.
  payload_type receive_buffers(const data_type& data, const action& recv) {
    if constexpr ((fills_given_buffers<Transport> || agrees_shapes<Transport>) && lends_receive_buffers) {
      if (data.expected.empty()) return {};
      const int expecting = recv.kind == action_kind::recv_activation ? recv.stage : recv.stage + 1;
      return ctx_.stage_at(recv.stage).pool().for_receive(
          data.expected[static_cast<std::size_t>(expecting)][static_cast<std::size_t>(recv.microbatch)]);
    } else {
      return {};
    }
  }

  context& ctx_;
};

}  // namespace ppipe::detail
