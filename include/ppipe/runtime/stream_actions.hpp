#pragma once
/// @file
/// @brief The action interpreter for stages on stream devices: a rank's host thread enqueues its
/// whole step on the rank's compute, send and receive streams, ordered by events, and waits only
/// at the end of the step.

#include <algorithm>
#include <array>
#include <bit>
#include <concepts>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ppipe/device/stream_device.hpp"
#include "ppipe/error.hpp"
#include "ppipe/runtime/device_mailbox.hpp"
#include "ppipe/runtime/failure_channel.hpp"
#include "ppipe/runtime/run_context.hpp"
#include "ppipe/runtime/stream_stage.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/runtime/watchdog.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/stream_transport.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe::detail {

/// A device's graph type, where it captures (a placeholder elsewhere).
template <class D>
struct graph_type_of {
  using type = std::monostate;
};
template <class D>
  requires requires { typename D::graph; }
struct graph_type_of<D> {
  using type = typename D::graph;
};

/// A transport's receive handle (a placeholder for one that runs on the streams, which has none).
template <class T>
struct recv_handle_of {
  using type = std::monostate;
};
template <transport T>
struct recv_handle_of<T> {
  using type = typename T::recv_handle;
};

/// Runs every rank's action list on the rank's streams. Each rank has a compute stream (its
/// stages'), a send stream and a receive stream on its device; events order them: a send waits for
/// the compute that made its payload, a compute waits for the receive that brought its input, a
/// backward waits for the send of the output it frees.
template <class Stage, class Transport>
class stream_actions {
  using context = run_context<Stage, Transport>;
  using device_type = typename context::device_type;
  using data_type = typename context::data_type;
  using payload_type = typename context::payload_type;
  using stage_tensor = typename context::stage_tensor_type;
  using box = stream_payload<stage_tensor>;
  // Stages that hold device tensors: the batch, the outputs and every transfer go through host
  // memory, by copies in stream order (the host never touches a device tensor's bytes).
  static constexpr bool staged = !std::same_as<stage_tensor, typename context::tensor_type>;
  // A device with staging host memory (page-locked on a GPU): staged copies go through it, so that
  // enqueueing them never makes the host wait, and the host moves the bytes to and from the
  // caller's memory (before the copy in, in host work after the copy out).
  static constexpr bool host_staging = staged && host_staging_device<device_type>;
  // A transport whose transfers are work on the streams (NCCL, or its CPU model): each run of a
  // rank's consecutive transfers is one group on the send stream, and no host work waits.
  static constexpr bool on_streams = stream_transport<Transport>;
  using recv_handle = typename recv_handle_of<Transport>::type;

 public:
  explicit stream_actions(context& ctx) : ctx_(ctx) {}

  stream_actions(const stream_actions&) = delete;
  stream_actions& operator=(const stream_actions&) = delete;
  ~stream_actions() {
    drop_graph();
    release_retired();
  }

  /// Whether steps may be captured into a graph and launched again: the device captures, and the
  /// stages hold device tensors (whose memory the graph owns while it is captured).
  static constexpr bool can_capture = host_staging && capturing_stream_device<device_type>;

  /// How a step runs: enqueued action by action (eager), enqueued into a graph that is then
  /// launched (capture), or launched from the graph of an earlier step (replay).
  enum class step_mode : unsigned char { eager, capture, replay };

  /// Decides, after open(), how this step runs. With `wanted`, a training step on ranks that share
  /// one device is captured when the step before had the same shapes, schedule and loss (the first
  /// one with them runs eagerly: what layers set up on first use, such as a library's workspace,
  /// is then in place), and launched from that graph while they stay the same.
  step_mode plan(const schedule& s, const data_type& data, bool wanted) {
    if (wanted && !one_device()) {
      detail::fail(errc::unsupported, "capture_graphs is on, but the ranks run on several devices, and a graph spans "
                   "the streams of one device; put every rank on one device (ppipe::cuda::backend), or turn "
                   "capture_graphs off");
    }
    if (!wanted) {
      drop_graph();
      last_key_.clear();
      return mode_ = step_mode::eager;
    }
    release_retired();
    if (s.mode != schedule_mode::training) return mode_ = step_mode::eager;  // the graph stays
    std::string key = key_of(s, data);
    if (graph_ && graph_->key == key) return mode_ = step_mode::replay;
    drop_graph();
    if (key != last_key_) {
      last_key_ = std::move(key);
      return mode_ = step_mode::eager;
    }
    if constexpr (can_capture) {
      device_type& d = *lanes_.front().device;
      if (!has_origin_) {
        origin_ = d.create_stream("graph launch");
        has_origin_ = true;
      }
      graph_run next;
      next.key = std::move(key);
      next.losses.assign(static_cast<std::size_t>(s.microbatches), 0.0);
      d.begin_capture(origin_);
      try {
        fork_ = d.record(origin_);
      } catch (...) {
        d.cancel_capture(origin_);
        throw;
      }
      graph_.emplace(std::move(next));
      return mode_ = step_mode::capture;
    } else {
      return mode_ = step_mode::eager;
    }
  }

  /// After every rank enqueued its step into the capture: joins their streams back and ends it.
  /// After a failure (of a rank, or of ending the capture) the capture is discarded with what it
  /// allocated, and the stages forget it.
  /// @return whether there is a graph to launch
  bool finish_capture(const schedule& s) {
    if constexpr (can_capture) {
      device_type& d = *lanes_.front().device;
      // What the step left for settle() to watch are events of the capture, which the host may
      // not query: nothing is watched (the launch is waited for as a whole).
      for (lanes& l : lanes_) {
        l.watch.clear();
        l.progress.clear();
        l.lent_out.clear();
      }
      if (!ctx_.failures.failed()) {
        try {
          for (lanes& l : lanes_) {
            for (const auto& e : l.joins) d.wait(origin_, e);
            l.joins.clear();
          }
          graph_->graph = d.end_capture(origin_);
        } catch (...) {
          ctx_.record_failure(std::current_exception(), 0, run_position{-1, run_phase::device, -1});
        }
      }
      if (ctx_.failures.failed()) {
        // Every stream still capturing is joined back first, so that the capture can end.
        for (lanes& l : lanes_) {
          for (const auto& each : l.streams()) {
            if (d.capturing(each)) d.wait(origin_, d.record(each));
          }
          l.joins.clear();
          l.copies_in.clear();
        }
        d.cancel_capture(origin_);
        for (Stage& st : *ctx_.stages) st.abandon_capture();
        drop_graph();
        forget_shapes();
        return false;
      }
      // The staging memory the graph copies through is its own now: kept while it lives.
      for (lanes& l : lanes_) {
        for (void* p : l.pinned) graph_->pinned.push_back(p);
        l.pinned.clear();
        l.watched_pinned.clear();
        for (const copy_in& c : l.copies_in) graph_->copies_in.push_back(c);
        l.copies_in.clear();
      }
      return true;
    } else {
      static_cast<void>(s);
      return false;
    }
  }

  /// Launches the step's graph: this step's batch into the staging memory the graph reads, the
  /// graph, a wait for it (with the timeout), the loss values out. A failure in it drops the graph.
  void replay(const schedule& s, data_type& data) {
    if constexpr (can_capture) {
      device_type& d = *lanes_.front().device;
      wait_status done = wait_status::timed_out;
      std::exception_ptr failed;
      try {
        for (const copy_in& c : graph_->copies_in) {
          const payload_type& from = c.target ? data.targets[c.mb] : data.inputs[c.mb];
          if (c.bytes != 0) std::memcpy(c.to, from[c.t].byte_data(), c.bytes);
        }
        d.launch(graph_->graph, origin_);
        done = d.synchronize(origin_, ctx_.deadline());
        failed = d.error();
        if (done != wait_status::ready && !failed) {
          timed_out(s, 0, concat("the step's graph did not finish within ", ctx_.options.timeout.count(), " ms"));
        }
      } catch (...) {
        if (!failed) failed = std::current_exception();
      }
      if (failed) {
        // The graph goes once its launch has ended; one still running past another timeout is
        // kept aside until it has.
        wait_status ended = done;
        if (ended != wait_status::ready) {
          d.abort();
          try {
            ended = d.synchronize(origin_, ctx_.deadline());
          } catch (...) {
            ended = wait_status::timed_out;
          }
        }
        if (ended == wait_status::ready) {
          drop_graph();
        } else {
          retired_.push_back(std::move(*graph_));
          graph_.reset();
        }
        forget_shapes();
        ctx_.record_failure(std::move(failed), 0, run_position{-1, run_phase::device, -1});
        return;
      }
      std::copy(graph_->losses.begin(), graph_->losses.end(), data.losses.begin());
    } else {
      static_cast<void>(s);
      static_cast<void>(data);
    }
  }

  /// After a failed step: the next one with the same shapes runs as usual before one is captured
  /// (what layers set up on first use may not have been done).
  void forget_shapes() noexcept {
    last_key_.clear();
    mode_ = step_mode::eager;
  }

  /// Finds the device and streams of each rank this process runs (over a distributed transport,
  /// one) before a run; the send and receive streams are made once, on the first run.
  void open(const schedule& s) {
    lanes_.resize(static_cast<std::size_t>(s.num_ranks()));
    mail_.reset(s.num_ranks());
    const std::vector<int> local = ctx_.local_ranks(s.num_ranks());
    for (const int r : local) {
      lanes& l = lanes_[static_cast<std::size_t>(r)];
      const auto on = s.place.stages_on(r);
      Stage& first = ctx_.stage_at(on.front());
      if (l.device == nullptr) {
        l.device = first.device().device;
        l.compute = first.device().stream;
        l.send = l.device->create_stream(concat("rank ", r, on_streams ? " transfers" : " send"));
        l.recv = l.device->create_stream(concat("rank ", r, " receive"));
      }
      for (const int st : on) {
        if (ctx_.stage_at(st).device().device != l.device) {
          detail::fail(errc::invalid_argument, "stages ", on.front(), " and ", st, " run on rank ", r,
                       " but on different devices; a rank's stages share its device");
        }
      }
    }
    refuse_waiting_host_work(s);
    // The last run drained every stream (settle() returns only then); what the stages let go of
    // after a failure is released on their streams since, and is waited for here, on every rank
    // first (ranks may share a device). Then a failure the last run left may go.
    for (const int r : local) {
      const lanes& l = lanes_[static_cast<std::size_t>(r)];
      for (const auto& each : l.streams()) {
        if (l.device->synchronize(each, ctx_.deadline()) != wait_status::ready) {
          detail::fail(errc::timeout, concat("rank ", r, "'s streams still run the last step's releases after ",
                                             ctx_.options.timeout.count(), " ms; ",
                                             "a device this slow needs a longer pipeline_options::timeout"));
        }
      }
    }
    for (const int r : local) lanes_[static_cast<std::size_t>(r)].device->clear_error();
  }

  /// Enqueues rank r's actions of `s` and waits for its streams; `at` follows the rank, for the
  /// message if the host fails.
  void run(const schedule& s, int r, data_type& data, std::vector<trace_event>& events, run_position& at) {
    lanes& l = lanes_[static_cast<std::size_t>(r)];
    device_type& d = *l.device;
    try {
      enqueue_step(s, r, data, events, at, l);
    } catch (...) {
      // While capturing nothing runs: the capture is discarded once every rank has stopped.
      if (mode_ == step_mode::capture) throw;
      // Nothing more is enqueued; what is in flight is skipped and drained before the stages let go.
      // Transfers on the streams wait for their peers: they are ended first.
      if constexpr (on_streams) ctx_.transport->abort();
      d.abort();
      settle(s, r, l);
      throw;
    }
  }

  /// A timeout on a stream device: the hosts enqueued long ago, so what each rank's streams are
  /// doing is what tells the stuck one.
  [[noreturn]] void timed_out(const schedule& /*s*/, int /*r*/, const std::string& what) const {
    std::string doing;
    for (std::size_t k = 0; k < lanes_.size(); ++k) {
      const lanes& l = lanes_[k];
      if (l.device == nullptr) continue;  // a rank of another process
      if constexpr (requires { l.device->status(l.compute); }) {
        for (const auto& each : l.streams()) doing += concat("\n  ", l.device->status(each));
      }
    }
    throw watchdog_error(errc::timeout, concat(what, "; the streams:", doing,
                                               "\nraise the timeout (pipeline_options::timeout) if kernels are "
                                               "this slow, or look at the stream that is stuck"));
  }

  /// Runs the optimizer hook of stage `stg` after the step's work, and waits for it; what the hook
  /// throws is the hook's failure, not the device's. Where layers enqueue their own work (GPU
  /// kernels) the hook does too: it is called on the rank's thread once the step's work is done,
  /// and launches its update on the stage's stream, since a function the stream calls back may
  /// not launch anything. Otherwise it runs on the compute stream, after the step's work.
  void run_hook(const schedule& s, int r, Stage& stg, const basic_optimizer_hook<device_type>& hook,
                const basic_stage_info<device_type>& info) {
    lanes& l = lanes_[static_cast<std::size_t>(r)];
    if constexpr (enqueues_own_work<typename Stage::model_type>) {
      settle(s, r, l);
      if (ctx_.failures.failed()) throw run_aborted{};
      hook(info);
      settle(s, r, l);
      if (ctx_.failures.failed()) throw run_aborted{};
      return;
    }
    std::exception_ptr thrown;
    device_type& d = *stg.device().device;
    d.enqueue(stg.device().stream, [&thrown, hook = &hook, info] {
      try {
        (*hook)(info);
      } catch (...) {
        thrown = std::current_exception();
      }
    }, "the optimizer hook");
    settle(s, r, l);
    if (thrown) std::rethrow_exception(thrown);
  }

 private:
  using mailbox = device_mailbox<box, typename device_type::event>;
  // A copy of one tensor of the batch into staging memory that a captured step reads.
  struct copy_in {
    std::byte* to;
    bool target;
    std::size_t mb;
    std::size_t t;
    std::size_t bytes;
  };
  // A captured step: its graph, what must not change for a launch of it, the staging memory it
  // copies through, and where its host work leaves the loss values.
  struct graph_run {
    typename graph_type_of<device_type>::type graph{};
    std::string key;
    std::vector<copy_in> copies_in;
    std::vector<void*> pinned;
    std::vector<double> losses;
  };
  struct lent {
    box payload;
    std::shared_ptr<typename mailbox::receipt> answer;
    Stage* owner = nullptr;
  };
  struct watched {
    typename device_type::event need;    // the compute stream needs the data from here on
    typename device_type::event copied;  // the copy is done
    action waited, needed;
    int from = -1;
    int waited_step = -1;
    int step = -1;
    std::optional<deadline_clock::time_point> since{};  // when the host first saw `need` complete
  };
  struct lanes {
    device_type* device = nullptr;
    typename device_type::stream compute{};
    typename device_type::stream send{};
    typename device_type::stream recv{};
    // Host memory that copies enqueued in the last step read or write: kept until the next step,
    // when the streams have drained (a step that fails leaves copies in flight behind it).
    std::vector<std::shared_ptr<payload_type>> staging;
    // The tensors of the transfer groups enqueued on the streams (the transport holds only their
    // addresses): kept until the next step, when the streams have drained, so that a host that
    // throws cannot free what a group still reads or writes.
    std::vector<std::shared_ptr<basic_payload<stage_tensor>>> held;
    // The device's staging host memory those copies use, given back at the same time (by then
    // open() has waited for the streams, a failed step's too).
    std::vector<void*> pinned;
    // Of those, the ones a peer's stream reads (payloads through host memory), which a device with
    // a race checker watches until they are given back.
    std::vector<void*> watched_pinned;
    // Buffers sent by device copy to a rank on the same device, freed once its copy is done.
    std::vector<lent> lent_out;
    // Receives by device copy, in the order the compute stream needs them: what settle() watches.
    std::vector<watched> watch;
    // The end of every action of the step: on a device that counts no finished work, how
    // settle() sees progress.
    std::vector<typename device_type::event> progress;
    // While the step is captured: the ends of its streams, which the capture joins back, and
    // where its batch goes into staging memory (done again before every launch).
    std::vector<typename device_type::event> joins;
    std::vector<copy_in> copies_in;
    // The transport's work stopped with transfers_aborted in this step (see settle()).
    bool transfers_aborted = false;

    // (An array, not a braced list in a loop: nvcc's front end rejects the latter.)
    [[nodiscard]] std::array<typename device_type::stream, 3> streams() const { return {compute, send, recv}; }
  };
  enum class route : unsigned char { device_copy, through_host, transport };
  struct mark {  // an action's span on a stream, resolved into the trace after the step
    action act;
    int step = 0;
    typename device_type::event start;
    typename device_type::event end;
  };

  // Waits until every stream of rank r has run what was enqueued. Past twice the timeout without
  // any stream finishing an item, the rank fails naming what each stream is doing (twice: a
  // receive's own timeout names rank, peer and action, and must come first; four times across
  // processes, where a peer's report of its timeout must also reach this one); after any rank's
  // failure the rank's device skips its remaining work, so that the streams drain quickly.
  void settle(const schedule& s, int r, lanes& l) {
    device_type& d = *l.device;
    const auto patience = (distributed_transport<Transport> ? 4 : 2) * ctx_.options.timeout;
    auto last_progress = deadline_clock::now();
    std::size_t done = 0;
    bool reported = false;
    const auto rank_streams = l.streams();
    // Another rank's failure ended this rank's transfers: it stops, without a failure of its own.
    const auto stop_for_a_peer = [&] {
      reported = true;
      l.transfers_aborted = true;
      ctx_.transport->abort();
      d.abort();
    };
    // Work that layers enqueued themselves fails on the stream, where only the device's error
    // says so: it becomes the rank's failure (the first one wins, so a failure the stage's own
    // enqueued calls reported with their action comes first), and the other ranks stop waiting.
    bool device_failed = false;
    const auto note_device_failure = [&] {
      if (device_failed) return;
      if (std::exception_ptr e = d.error()) {
        device_failed = true;
        if (is_transfers_aborted(e)) {
          // The transport stopped because a rank failed (in another process, it may be): not this
          // rank's failure; the rank stops.
          l.transfers_aborted = true;
          d.abort();
          return;
        }
        ctx_.record_failure(std::move(e), r, run_position{-1, shared(r) ? run_phase::shared_device : run_phase::device, -1});
      }
    };
    for (const auto& stream : rank_streams) {
      for (;;) {
        const auto slice =
            std::min(deadline_clock::now() + std::chrono::milliseconds(20), deadline_clock::time_point::max());
        if (d.synchronize(stream, slice) == wait_status::ready) break;
        note_device_failure();
        // A transport that must act from the host (NCCL: abort its communicator, so that its
        // kernels end) does so here, and reports an asynchronous failure of its own.
        if constexpr (requires { { ctx_.transport->poll_failure() } -> std::same_as<std::exception_ptr>; }) {
          if (std::exception_ptr e = ctx_.transport->poll_failure()) {
            if (is_transfers_aborted(e)) {
              stop_for_a_peer();
            } else {
              ctx_.record_failure(std::move(e), r, run_position{-1, run_phase::sends, -1});
              d.abort();
            }
          }
        }
        // A rank of another process failed (a distributed transport says so): this one stops, and
        // waits only for what its streams are running.
        if constexpr (requires { ctx_.transport->peer_failed(); }) {
          if (!reported && !ctx_.failures.failed() && ctx_.transport->peer_failed()) stop_for_a_peer();
        }
        if (!reported && watch_receives(s, r, l)) reported = true;
        if (ctx_.failures.failed()) d.abort();
        std::size_t now_done = 0;
        if constexpr (requires { d.finished_items(); }) {
          now_done = d.finished_items();
        } else {  // a GPU counts nothing for the host: the step's own events say how far it got
          for (const auto& e : l.progress) now_done += d.query(e) ? 1 : 0;
        }
        if (now_done != done) {
          done = now_done;
          last_progress = deadline_clock::now();
        }
        if (!reported && deadline_clock::now() - last_progress > patience) {
          reported = true;
          std::string doing;
          for (const auto& each : rank_streams) {
            if constexpr (requires { d.status(each); }) doing += concat("\n  ", d.status(each));
          }
          std::exception_ptr e;
          try {
            timed_out(s, r, concat(ctx_.rank_name(r), "'s streams made no progress for ",
                                   patience.count(), " ms:", doing));
          } catch (...) {
            e = std::current_exception();
          }
          ctx_.record_failure(std::move(e), r, run_position{-1, run_phase::sends, -1});
          d.abort();
        }
      }
    }
    note_device_failure();
  }

  // "rank 1 waited 150 ms in 1F0 (...) for 1RECV_F0 (...) from rank 0": how every receive that
  // gave up starts its message (the tests read it back).
  [[nodiscard]] std::string waited_in(int r, const action& needed, const action& waited, int from) const {
    return concat(ctx_.rank_name(r), " waited ", ctx_.options.timeout.count(), " ms in ", describe(needed), " for ",
                  describe(waited), " from ", ctx_.rank_name(from));
  }
  // A receive must bring the shapes its buffers were made for.
  void check_arrived(int r, const std::vector<shape>& got, const std::vector<shape>& want, const action& waited) const {
    if (got == want) return;
    detail::fail(errc::invalid_argument, ctx_.rank_name(r), " received ", to_string(got), " in ", describe(waited),
                 " where ", to_string(want), " was expected; the stages must deliver what output_shapes() says");
  }
  // A loss must leave its gradient in the buffers it was given.
  template <class Payload>
  static void check_loss_gradient(const Payload& grad, const std::vector<shape>& want, int mb) {
    if (has_shapes(grad, want)) return;
    detail::fail(errc::invalid_argument, "the loss left a gradient of shapes ", to_string(shapes_of(grad)),
                 " for an output of shapes ", to_string(want), " (microbatch ", mb,
                 "); a loss must write into the gradient buffer it is given, not replace it");
  }
  // Declares that the work enqueued next on `on` uses every tensor of `b`.
  static void declare(device_type& d, typename device_type::stream on, const box& b, access mode) {
    for (const auto& region : b.regions) d.use(on, region.data, region.bytes, mode);
  }

  // The receive of `waited` from a rank on the same device, for `needed` (step k): the sender's
  // letter taken on the host, then a copy on the receive stream after the sender's event, which
  // the compute stream waits for. The host waits only for the sender's host to have posted it.
  box receive_copy(const schedule& s, int r, lanes& l, box into, const action& waited, int waited_step,
                   const action& needed, int k, int from, const typename device_type::event& need,
                   std::vector<mark>& marks) {
    device_type& d = *l.device;
    const std::size_t size = s.ranks[static_cast<std::size_t>(r)].size();
    const std::uint64_t key =
        mailbox::message_key(waited.stage, waited.microbatch, waited.kind == action_kind::recv_gradient);
    std::optional<typename mailbox::letter> got = mail_.take(from, r, key, ctx_.deadline(), stopped());
    if (!got) {
      if (ctx_.failures.failed()) throw run_aborted{};
      timed_out(s, r, concat(waited_in(r, needed, waited, from), " (whose host never sent it), step ", k + 1, " of ", size));
    }
    check_arrived(r, got->payload.shapes, into.shapes, waited);
    const auto t0 = d.record(l.recv);
    d.wait(l.recv, got->ready);
    for (std::size_t t = 0; t < into.regions.size(); ++t) {
      d.copy_async(l.recv, into.regions[t].data, got->payload.regions[t].data, into.regions[t].bytes);
    }
    const auto t1 = d.record(l.recv);
    got->answer->sign(t1);
    d.wait(l.compute, t1);
    marks.push_back({waited, waited_step, t0, t1});
    l.watch.push_back({need, t1, waited, needed, from, waited_step, k, {}});
    return into;
  }

  // Before a backward frees the output a rank on the same device copies: the compute stream waits
  // for that copy, once the receiver's host has enqueued it.
  void wait_for_copy(const schedule& s, int r, lanes& l, typename mailbox::receipt& answer, const action& a, int k,
                     std::size_t size) {
    const auto copied = answer.wait(ctx_.deadline(), stopped());
    if (!copied) {
      if (ctx_.failures.failed()) throw run_aborted{};
      timed_out(s, r, concat(ctx_.rank_name(r), " waited ", ctx_.options.timeout.count(), " ms in ", describe(a),
                             " for the next rank to take the output it frees (its host never received it), step ",
                             k + 1, " of ", size));
    }
    l.device->wait(l.compute, *copied);
  }

  // The first receive by device copy that the compute stream needs and whose copy has not run:
  // past the timeout the rank fails, naming the action, what it waited for and from whom, as a
  // rank that blocks in a receive would. Returns whether it reported.
  bool watch_receives(const schedule& s, int r, lanes& l) {
    device_type& d = *l.device;
    for (watched& w : l.watch) {
      if (d.query(w.copied)) continue;
      if (!d.query(w.need)) return false;  // the compute stream has not got there yet
      const auto now = deadline_clock::now();
      if (!w.since) w.since = now;
      if (now - *w.since <= ctx_.options.timeout) return false;
      std::exception_ptr e;
      try {
        timed_out(s, r, concat(waited_in(r, w.needed, w.waited, w.from),
                               on_streams ? " (on its transfer stream), step " : " (on its receive stream), step ", w.step + 1,
                               " of ", s.ranks[static_cast<std::size_t>(r)].size()));
      } catch (...) {
        e = std::current_exception();
      }
      ctx_.record_failure(std::move(e), r, run_position{w.waited_step, run_phase::action, -1});
      d.abort();
      return true;
    }
    return false;
  }

  // `bytes` bytes of the device's staging host memory, kept by the lane for this step.
  static std::byte* pinned_bytes(lanes& l, std::size_t bytes) {
    // The slot first, so that a push_back that throws loses no memory (release_host ignores null).
    l.pinned.push_back(nullptr);
    l.pinned.back() = l.device->allocate_host(bytes);
    return static_cast<std::byte*>(l.pinned.back());
  }
  // Every block goes back even if the race checker reports one (the first report is rethrown).
  static void give_back_pinned(lanes& l) {
    std::vector<void*> watched;
    std::vector<void*> all;
    watched.swap(l.watched_pinned);
    all.swap(l.pinned);
    std::exception_ptr first;
    if constexpr (requires { l.device->retire(l.send, nullptr); }) {
      for (void* p : watched) {
        try {
          l.device->retire(l.send, p);
        } catch (...) {
          if (!first) first = std::current_exception();
        }
      }
    }
    for (void* p : all) l.device->release_host(p);
    if (first) std::rethrow_exception(first);
  }
  // Bytes a host function moves from staging memory once a copy out has filled it.
  struct unstaged {
    const std::byte* from;
    std::byte* to;
    std::size_t bytes;
  };
  static void move_out(const std::vector<unstaged>& list) {
    for (const unstaged& u : list) std::memcpy(u.to, u.from, u.bytes);
  }

  // Host tensors of `shapes` that copies of this step read or write, kept by the lane.
  static std::shared_ptr<payload_type> host_payload(lanes& l, const std::vector<shape>& shapes) {
    auto p = std::make_shared<payload_type>();
    p->reserve(shapes.size());
    for (const shape& sh : shapes) p->emplace_back(sh);
    l.staging.push_back(p);
    return p;
  }

  // A host payload copied into new device tensors of stage `stg` on the compute stream; the
  // host memory is the caller's batch, which outlives the step. Not counted until the stage takes it.
  // `record` (while capturing): the batch tensor it copies, {target, mb}, for the launches.
  static box to_device(Stage& stg, const payload_type& host, lanes& l,
                       std::optional<std::pair<bool, std::size_t>> record = std::nullopt) {
    box b = stg.pool().acquire(shapes_of(host), l.compute, false);
    for (std::size_t t = 0; t < host.size(); ++t) {
      const std::byte* from = host[t].byte_data();
      if constexpr (host_staging) {
        std::byte* p = pinned_bytes(l, b.regions[t].bytes);
        if (b.regions[t].bytes != 0) std::memcpy(p, from, b.regions[t].bytes);
        if (record) l.copies_in.push_back({p, record->first, record->second, t, b.regions[t].bytes});
        from = p;
      }
      l.device->copy_async(l.compute, b.regions[t].data, from, b.regions[t].bytes);
    }
    return b;
  }

  // The last stage's output `y` copied into host tensors made here, in `out`; `y` is freed after
  // the copy (the stage no longer counts it).
  static void to_host(Stage& stg, box& y, payload_type& out, lanes& l) {
    out.clear();
    for (const shape& sh : y.shapes) out.emplace_back(sh);
    if constexpr (host_staging) {
      // On the send stream, so that the compute stream does not wait for the host work.
      device_type& d = *l.device;
      d.wait(l.send, d.record(l.compute));
      std::vector<unstaged> back;
      for (std::size_t t = 0; t < out.size(); ++t) {
        std::byte* p = pinned_bytes(l, y.regions[t].bytes);
        d.copy_async(l.send, p, y.regions[t].data, y.regions[t].bytes);
        back.push_back({p, out[t].byte_data(), y.regions[t].bytes});
      }
      d.enqueue(l.send, [back = std::move(back)] { move_out(back); }, "outputs to the caller's memory");
      stg.pool().release(y, l.send, false);
    } else {
      for (std::size_t t = 0; t < out.size(); ++t) {
        l.device->copy_async(l.compute, out[t].byte_data(), y.regions[t].data, y.regions[t].bytes);
      }
      stg.pool().release(y, l.compute, false);
    }
  }

  // The loss of microbatch `mb` on stage `stg`'s device: the target copied in, the value written
  // into `losses` (one f64 per microbatch, made on first use), in stream order. Layers that enqueue
  // their own work get a loss called here that enqueues its own; otherwise it is enqueued.
  void device_loss(Stage& stg, data_type& data, const box& y, const box& g, std::size_t mb, int mbi, box& losses,
                   lanes& l, run_position& at, std::function<void(std::exception_ptr)> fail) {
    device_type& d = *l.device;
    const payload_type& host_target = data.targets[mb];
    box target = to_device(stg, host_target, l, capturing() ? std::optional(std::pair{true, mb}) : std::nullopt);
    if (!losses) {
      losses = stg.pool().acquire({shape({static_cast<std::int64_t>(data.losses.size())}, dtype::f64)}, l.compute, false);
    }
    const stage_tensor value(shape({1}, dtype::f64), losses.regions[0].data + mb * sizeof(double));
    declare(d, l.compute, y, access::read);
    declare(d, l.compute, target, access::read);
    declare(d, l.compute, g, access::write);
    d.use(l.compute, value.byte_data(), sizeof(double), access::write);
    const auto ctx = stg.context(mbi, pass_mode::training);
    if constexpr (enqueues_own_work<typename Stage::model_type>) {
      at.where = run_phase::loss;
      (*data.loss)(ctx, *y.data, *target.data, *g.data, data.scales[mb], value);
      check_loss_gradient(*g.data, y.shapes, mbi);
      at.where = run_phase::action;
    } else {
      d.enqueue(
          l.compute,
          [loss = data.loss, ctx, y, target, g, value, scale = data.scales[mb], mbi, fail = std::move(fail)] {
            try {
              (*loss)(ctx, *y.data, *target.data, *g.data, scale, value);
              check_loss_gradient(*g.data, y.shapes, mbi);
            } catch (...) {
              fail(std::current_exception());
              throw;
            }
          },
          concat("the loss of microbatch ", mbi));
    }
    stg.pool().release(target, l.compute, false);
  }

  void enqueue_step(const schedule& s, int r, data_type& data, std::vector<trace_event>& events,
                    run_position& at, lanes& l) {
    device_type& d = *l.device;
    l.staging.clear();
    l.held.clear();
    if constexpr (host_staging) give_back_pinned(l);
    l.lent_out.clear();  // a failed step's: the stages' buffers let go of them (prepare())
    l.watch.clear();
    l.progress.clear();
    l.transfers_aborted = false;
    if (capturing()) {
      // Every stream of the rank joins the capture, after the point where it began.
      for (const auto& each : l.streams()) d.wait(each, fork_);
    }
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
      std::optional<recv_handle> handle;  // none: by device copy (same device), or on the streams
      int step = -1;
      box into;
      // On the streams: the send stream's event once the receive's group has moved it (a compute
      // ends the open group before it takes a receive, so this is set by then).
      std::optional<typename device_type::event> moved{};
    };
    std::vector<std::optional<posted>> recv(n);
    std::vector<box> handoff_in(n), handoff_grad(n), out(n), grad(n);
    std::vector<std::optional<typename device_type::event>> sent_out(n);
    std::vector<std::shared_ptr<typename mailbox::receipt>> copied_out(n);  // the same, by device copy
    std::vector<std::pair<std::size_t, box>> finals;
    box losses;  // staged, on the last stage's rank: each microbatch's loss value, in device memory
    std::vector<mark> marks;
    marks.reserve(list.size());
    // The transfer group being built on the streams: its sends (with what frees their payload once
    // the group has moved it) and the receives it fills.
    struct grouped_send {
      action a;
      int step;
      std::size_t i;
      box payload;
      bool kept;  // a training output, freed by its backward after the group
      Stage* owner;
    };
    struct open_group {
      std::vector<grouped_send> sends;
      std::vector<std::size_t> recvs;
      // Gives the lane the group's tensors to keep until the streams have drained: the transport
      // holds only their addresses.
      void hold_in(lanes& lane, const std::vector<std::optional<posted>>& posts) const {
        for (const grouped_send& x : sends) lane.held.push_back(x.payload.data);
        for (const std::size_t i : recvs) lane.held.push_back(posts[i]->into.data);
      }
    };
    std::optional<open_group> group;
    const auto join_group = [&] {
      if constexpr (on_streams) {
        if (group) return;
        ctx_.transport->begin_group(r);
        group.emplace();
      }
    };
    // Ends the group: its transfers go onto the send stream together, and what waits for them
    // waits for the event after them.
    const auto end_group = [&] {
      if (!group) return;
      open_group g = std::move(*group);
      group.reset();
      g.hold_in(l, recv);
      const auto t0 = d.record(l.send);
      if constexpr (on_streams) ctx_.transport->end_group(r);
      const auto t1 = d.record(l.send);
      for (grouped_send& x : g.sends) {
        marks.push_back({x.a, x.step, t0, t1});
        if (x.kept) {
          sent_out[x.i] = t1;
        } else {
          x.owner->pool().release(x.payload, l.send, false);
        }
      }
      for (const std::size_t i : g.recvs) {
        recv[i]->moved = t1;
        marks.push_back({list[static_cast<std::size_t>(recv[i]->step)], recv[i]->step, t0, t1});
      }
    };
    const auto origin = d.record(l.compute);
    double origin_us = ctx_.micros(deadline_clock::now());

    const auto sink = [this, r](int k, run_phase where) {
      return [this, r, k, where](std::exception_ptr e) {
        ctx_.record_failure(std::move(e), r, run_position{k, where, -1});
      };
    };
    const auto reads = [&](typename device_type::stream on, const box& b, access mode) { declare(d, on, b, mode); };
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
      const int from = context::sender_of(s, waited);
      // The compute stream needs the data once it has run what is enqueued on it so far: the
      // receive's timeout counts from then, as it does on a host rank that blocks in the receive.
      const auto need = d.record(l.compute);
      if (p.moved) {
        d.wait(l.compute, *p.moved);
        l.watch.push_back({need, *p.moved, waited, needed, from, p.step, k, {}});
        return std::move(p.into);
      }
      if (!p.handle) return receive_copy(s, r, l, std::move(p.into), waited, p.step, needed, k, from, need, marks);
      if constexpr (!on_streams) {  // (the transport by host work on the receive stream)
        // Staged: the transport delivers into host memory, copied to the device after it lands.
        std::vector<std::byte*> landing;
        if constexpr (host_staging) {
          for (const auto& region : p.into.regions) landing.push_back(pinned_bytes(l, region.bytes));
        } else if constexpr (staged) {
          const std::shared_ptr<payload_type> host = host_payload(l, p.into.shapes);  // the lane keeps it
          for (auto& t : *host) landing.push_back(t.byte_data());
        }
        const auto t0 = d.record(l.recv);
        reads(l.recv, p.into, access::write);
        d.enqueue(
            l.recv,
            [this, &s, &d, r, from, waited, needed, k, need, handle = p.handle, into = p.into, landing,
             fail = sink(p.step, run_phase::action), size = list.size()]() mutable {
              try {
                typename context::payload_type arrived;
                std::optional<deadline_clock::time_point> due;
                wait_status st = wait_status::timed_out;
                for (;;) {
                  if (!due && d.query(need)) due = ctx_.deadline();
                  const auto slice = deadline_clock::now() + std::chrono::milliseconds(10);
                  st = ctx_.transport->complete_recv(*handle, arrived, due ? std::min(*due, slice) : slice);
                  if (st != wait_status::timed_out || (due && deadline_clock::now() >= *due)) break;
                }
                if (st == wait_status::aborted) throw run_aborted{};
                if (st == wait_status::timed_out) {
                  timed_out(s, r, concat(waited_in(r, needed, waited, from), " (on its receive stream), step ", k + 1,
                                         " of ", size));
                }
                if (!has_shapes(arrived, into.shapes)) check_arrived(r, shapes_of(arrived), into.shapes, waited);
                for (std::size_t t = 0; t < arrived.size(); ++t) {
                  std::byte* to = staged ? landing[t] : into.regions[t].data;
                  std::memcpy(to, arrived[t].byte_data(), arrived[t].bytes());
                }
              } catch (const run_aborted&) {
                throw;
              } catch (...) {
                fail(std::current_exception());
                throw;
              }
            },
            concat("receive ", describe(waited)));
        if constexpr (staged) {
          for (std::size_t t = 0; t < landing.size(); ++t) {
            d.copy_async(l.recv, p.into.regions[t].data, landing[t], p.into.regions[t].bytes);
          }
        }
        const auto t1 = d.record(l.recv);
        d.wait(l.compute, t1);
        marks.push_back({waited, p.step, t0, t1});
        return std::move(p.into);
      } else {
        detail::fail(errc::invalid_schedule, "rank ", r, "'s receive for ", describe(needed), " was never posted on its "
                     "streams");
      }
    };

    // After another rank's failure nothing more is enqueued.
    // A group left open by a throw is ended all the same (NCCL's group state is the thread's),
    // after the transport and the device have been aborted, so that its transfers never run, and
    // with its tensors kept until the streams have drained.
    struct group_closer {
      std::optional<open_group>* group;
      std::vector<std::optional<posted>>* recv;
      lanes* lane;
      Transport* transport;
      int rank;
      ~group_closer() {
        if constexpr (on_streams) {
          if (!group->has_value()) return;
          try {
            (*group)->hold_in(*lane, *recv);
            transport->abort();
            lane->device->abort();
            group->reset();
            transport->end_group(rank);
          } catch (...) {  // the step has failed already; what failed first is reported
          }
        }
      }
    } closer{&group, &recv, &l, ctx_.transport, r};
    ctx_.walk(s, r, step, [&] { return ctx_.failures.failed(); },
              [&](const action& a, Stage& stg, std::size_t st, std::size_t mb, std::size_t i) {
      if constexpr (on_streams) {
        if (is_compute(a.kind)) end_group();
      }
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
          std::optional<recv_handle> handle;
          if constexpr (on_streams) {
            if (route_of(from, r) == route::transport) {
              box into = stg.pool().acquire(shapes, l.send, false);
              join_group();
              const std::string what = describe(a);
              for (const auto& region : into.regions) {
                ctx_.transport->recv(from, r, region.data, region.bytes, d, l.send, what);
              }
              recv[i] = posted{std::nullopt, step, std::move(into)};
              group->recvs.push_back(i);
              break;
            }
          } else {
            if (route_of(from, r) == route::transport) handle = ctx_.transport->post_recv(from, r);
          }
          recv[i] = posted{std::move(handle), step, stg.pool().acquire(shapes, l.recv, false)};
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
          // The receive this send meets: its stage's RECV_F, or the previous stage's RECV_B.
          const std::uint64_t letter_key = mailbox::message_key(fwd ? a.stage + 1 : a.stage - 1, a.microbatch, !fwd);
          if (src.shapes != data.expected[static_cast<std::size_t>(receiving)][mb]) {
            context::check_send(*src.data, data, a);
          }
          free_lent(l, false);
          d.wait(l.send, d.record(l.compute));
          const auto t0 = d.record(l.send);
          // Once the send stream has read `src` (at `t1`): a training output stays for its
          // backward, which waits for `t1`; anything else is freed there.
          const auto read_out = [&](const typename device_type::event& from, const typename device_type::event& t1,
                                box& payload) {
            marks.push_back({a, step, from, t1});
            if (fwd && training) {
              sent_out[i] = t1;
            } else {
              stg.pool().release(payload, l.send, false);
            }
          };
          const route way = route_of(r, to);
          if constexpr (on_streams) {
            if (way == route::transport) {
              // Read by the group's transfers once the send stream gets to them: the payload is
              // kept until then.
              join_group();
              const std::string what = describe(a);
              for (const auto& region : src.regions) {
                ctx_.transport->send(r, to, region.data, region.bytes, d, l.send, what);
              }
              group->sends.push_back({a, step, i, std::move(src), fwd && training, &stg});
              break;
            }
          }
          if constexpr (host_staging) {
            if (way == route::through_host) {
              // The receiver's device cannot reach this one's memory: the payload goes to staging host
              // memory on the send stream, and the receiver copies it in after this event. The memory
              // stays the lane's until the next step, when every stream has drained.
              reads(l.send, src, access::read);
              box hop;
              hop.shapes = src.shapes;
              for (const auto& region : src.regions) {
                std::byte* p = pinned_bytes(l, region.bytes);
                if constexpr (requires { d.track(l.send, p, region.bytes); }) {
                  d.track(l.send, p, region.bytes);
                  l.watched_pinned.push_back(p);
                }
                d.copy_async(l.send, p, region.data, region.bytes);
                hop.regions.push_back({p, region.bytes});
              }
              const auto t1 = d.record(l.send);
              mail_.post(r, to, {std::move(hop), t1, std::make_shared<typename mailbox::receipt>(), letter_key});
              read_out(t0, t1, src);
              break;
            }
          }
          if (way == route::device_copy) {
            // The receiver copies on its own stream after t0, and says when it is done.
            auto answer = std::make_shared<typename mailbox::receipt>();
            mail_.post(r, to, {src, t0, answer, letter_key});
            marks.push_back({a, step, t0, t0});
            if (fwd && training) {
              copied_out[i] = std::move(answer);  // the backward that frees the output waits for the copy
            } else {
              l.lent_out.push_back({std::move(src), std::move(answer), &stg});
            }
            break;
          }
          if constexpr (!on_streams) {  // (the transport by host work on the send stream)
            reads(l.send, src, access::read);
            std::shared_ptr<const payload_type> sent;
            std::vector<unstaged> unstage;  // staging memory to the host tensors sent, before the send
            if constexpr (staged) {
              std::shared_ptr<payload_type> host = host_payload(l, src.shapes);
              for (std::size_t t = 0; t < host->size(); ++t) {
                std::byte* to_bytes = (*host)[t].byte_data();
                if constexpr (host_staging) {
                  to_bytes = pinned_bytes(l, src.regions[t].bytes);
                  unstage.push_back({to_bytes, (*host)[t].byte_data(), src.regions[t].bytes});
                }
                d.copy_async(l.send, to_bytes, src.regions[t].data, src.regions[t].bytes);
              }
              sent = std::move(host);
            } else {
              sent = src.data;
            }
            d.enqueue(
                l.send,
                [this, &s, r, to, a, payload = std::move(sent), unstage = std::move(unstage),
                 fail = sink(step, run_phase::action)] {
                  try {
                    move_out(unstage);
                    auto h = ctx_.transport->post_send(r, to, *payload);
                    const wait_status done = ctx_.transport->complete_send(h, ctx_.deadline());
                    if (done == wait_status::aborted) throw run_aborted{};
                    if (done == wait_status::timed_out) {
                      timed_out(s, r, concat(ctx_.rank_name(r), " waited ", ctx_.options.timeout.count(), " ms for ",
                                             ctx_.rank_name(to), " to take its send of ", describe(a)));
                    }
                  } catch (const run_aborted&) {
                    throw;
                  } catch (...) {
                    fail(std::current_exception());
                    throw;
                  }
                },
                describe(a));
            read_out(t0, d.record(l.send), src);
          }
          break;
        }
        case action_kind::forward: {
          box in;
          if (a.stage == 0) {
            if constexpr (staged) {
              in = to_device(stg, data.inputs[mb], l, capturing() ? std::optional(std::pair{false, mb}) : std::nullopt);
            } else {
              in = stg.pool().wrap(std::move(data.inputs[mb]), l.compute);
            }
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
            box y = stg.forward(a.microbatch, std::move(in), sink(step, run_phase::action));
            if (a.stage == last) {
              box g = stg.output_gradient_buffer(a.microbatch);
              if constexpr (staged) {
                device_loss(stg, data, y, g, mb, a.microbatch, losses, l, at, sink(step, run_phase::loss));
              } else {
                reads(l.compute, y, access::read);
                reads(l.compute, g, access::write);
                d.enqueue(
                    l.compute,
                    [loss = data.loss, target = &data.targets[mb], result = &data.losses[mb], scale = data.scales[mb], y = y,
                     g = g, mbi = a.microbatch, fail = sink(step, run_phase::loss)] {
                      try {
                        *result = (*loss)(*y.data, *target, *g.data, scale);
                        check_loss_gradient(*g.data, y.shapes, mbi);
                      } catch (...) {
                        fail(std::current_exception());
                        throw;
                      }
                    },
                    concat("the loss of microbatch ", a.microbatch));
              }
              handoff_grad[i] = std::move(g);
            } else if (rank_of[st + 1] == r) {
              box next = ctx_.stage_at(a.stage + 1).pool().acquire(y.shapes, l.compute, false);
              for (std::size_t t = 0; t < y.regions.size(); ++t) {
                d.copy_async(l.compute, next.regions[t].data, y.regions[t].data, y.regions[t].bytes);
              }
              handoff_in[i + m] = std::move(next);
            }
            if (ctx_.recomputed[i] != 0) stg.stash(a.microbatch);
          } else {
            box y = stg.infer(a.microbatch, std::move(in), sink(step, run_phase::action));
            if (a.stage == last) {
              if constexpr (staged) {
                to_host(stg, y, data.outputs[mb], l);
              } else {
                finals.emplace_back(mb, std::move(y));
              }
            } else if (rank_of[st + 1] == r) {
              stg.pool().hand_over(y, ctx_.stage_at(a.stage + 1).pool());  // the next stage's infer frees it
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
          if (copied_out[i]) {
            wait_for_copy(s, r, l, *copied_out[i], a, step, list.size());
            copied_out[i].reset();
          }
          const auto t0 = d.record(l.compute);
          const bool want = a.stage > 0;
          box gin = a.kind == action_kind::backward
                        ? stg.backward(a.microbatch, std::move(g), want, sink(step, run_phase::action))
                        : stg.backward_input(a.microbatch, std::move(g), want, sink(step, run_phase::action));
          if (want) {
            if (rank_of[st - 1] == r) {
              stg.pool().hand_over(gin, ctx_.stage_at(a.stage - 1).pool());  // the stage before frees it
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
          stg.backward_weight(a.microbatch, sink(step, run_phase::action));
          marks.push_back({a, step, t0, d.record(l.compute)});
          break;
        }
        case action_kind::recompute: {
          const auto t0 = d.record(l.compute);
          stg.recompute(a.microbatch, sink(step, run_phase::action));
          marks.push_back({a, step, t0, d.record(l.compute)});
          break;
        }
      }
    });
    end_group();
    if constexpr (staged) {
      if (losses) {
        const std::size_t bytes = losses.regions[0].bytes;
        if constexpr (host_staging) {
          std::byte* p = pinned_bytes(l, bytes);
          d.copy_async(l.compute, p, losses.regions[0].data, bytes);
          d.enqueue(
              l.compute,
              [back = std::vector<unstaged>{
                   {p, reinterpret_cast<std::byte*>(capturing() ? graph_->losses.data() : data.losses.data()), bytes}}] {
                move_out(back);
              },
              "loss values to the host");
        } else {
          d.copy_async(l.compute, data.losses.data(), losses.regions[0].data, bytes);
        }
        ctx_.stage_at(last).pool().release(losses, l.compute, false);
      }
    }
    ctx_.host_us[static_cast<std::size_t>(r)] = ctx_.micros(deadline_clock::now());
    at.where = run_phase::sends;
    free_lent(l, true);
    if (capturing()) {
      // Nothing has run: the capture is joined back and launched once every rank got here. (A
      // receiver always takes its letter in a step that does not fail, so nothing is lent.)
      for (const auto& each : l.streams()) l.joins.push_back(d.record(each));
      if (ctx_.failures.failed()) throw run_aborted{};
      return;
    }
    if constexpr (!requires { d.finished_items(); }) {
      for (const mark& k : marks) l.progress.push_back(k.end);
    }
    settle(s, r, l);
    // What a receiver never took (it failed): nothing uses it now that the streams have drained.
    for (lent& x : l.lent_out) x.owner->pool().release(x.payload, l.send, false);
    l.lent_out.clear();
    if (ctx_.failures.failed() || l.transfers_aborted) throw run_aborted{};
    if constexpr (!staged) {
      for (auto& [mbi, y] : finals) data.outputs[mbi] = std::move(*y.data);
    }
    if (ctx_.options.record_trace) {
      // The record completed once the stream got to it, after the host time taken above: where
      // the device says when, every rank's events share one clock.
      if constexpr (requires { d.completed_at(origin); }) origin_us = ctx_.micros(d.completed_at(origin));
      for (const mark& k : marks) {
        events.push_back(
            {k.act, k.step, origin_us + d.elapsed_us(origin, k.start), origin_us + d.elapsed_us(origin, k.end)});
      }
    }
  }

  [[nodiscard]] bool capturing() const noexcept { return mode_ == step_mode::capture; }
  // Whether every rank runs on one device: a capture spans one device's streams.
  [[nodiscard]] bool one_device() const {
    return std::all_of(lanes_.begin(), lanes_.end(), [&](const lanes& l) { return l.device == lanes_.front().device; });
  }
  // What a graph's launches must share with the step it captured: the schedule (its actions, not
  // only its name: with_recompute keeps the name), the loss, and
  // each microbatch's shapes and share of the batch (the loss's scale, in the graph).
  static std::string key_of(const schedule& s, const data_type& data) {
    std::string key = concat(s.name, '|', fingerprint(s), '|', s.num_ranks(), '|', s.num_stages(), '|', s.microbatches,
                             '|', static_cast<const void*>(data.loss));
    for (std::size_t mb = 0; mb < data.inputs.size(); ++mb) {
      key += concat('|', to_string(shapes_of(data.inputs[mb])), to_string(shapes_of(data.targets[mb])), '*',
                    std::bit_cast<std::uint64_t>(data.scales[mb]));
    }
    return key;
  }
  // Lets the graph go, with the staging memory it copies through (no launch of it is running:
  // each replay waits for its own).
  void drop_graph() noexcept {
    if (!graph_) return;
    give_back_pinned(*graph_);
    graph_.reset();
  }
  // The staging memory a graph copies through, back to the device.
  void give_back_pinned(const graph_run& g) noexcept {
    if (lanes_.empty() || lanes_.front().device == nullptr) return;
    for (void* p : g.pinned) lanes_.front().device->release_host(p);
  }
  // Lets go of the graphs whose failed launches have ended since (the origin stream is idle).
  void release_retired() noexcept {
    if (retired_.empty() || lanes_.empty() || lanes_.front().device == nullptr) return;
    device_type& d = *lanes_.front().device;
    try {
      if (d.synchronize(origin_, deadline_clock::now()) != wait_status::ready) return;
    } catch (...) {
      return;
    }
    for (const graph_run& g : retired_) give_back_pinned(g);
    retired_.clear();
  }

  // Whether rank r's device serves other ranks too.
  [[nodiscard]] bool shared(int r) const {
    for (int q = 0; q < static_cast<int>(lanes_.size()); ++q) {
      if (q != r && same_device(r, q)) return true;
    }
    return false;
  }
  // Whether ranks r and q run on one device: their payloads then cross by device copies.
  [[nodiscard]] bool same_device(int r, int q) const {
    const device_type* a = lanes_[static_cast<std::size_t>(r)].device;
    return a != nullptr && a == lanes_[static_cast<std::size_t>(q)].device;
  }
  // Whether rank r runs in this process (over a distributed transport, only one does).
  [[nodiscard]] bool here(int r) const { return lanes_[static_cast<std::size_t>(r)].device != nullptr; }
  // How payloads from rank `from` reach rank `to`: by a copy on the receiver's device from the
  // sender's memory (one device, or peers that reach each other's memory: GPUs with peer access);
  // through staging host memory, copied out and in on either side of the sender's event (peers
  // without it); or by the transport, in host work on the streams.
  [[nodiscard]] route route_of(int from, int to) const {
    if (same_device(from, to)) return route::device_copy;
    if (!here(from) || !here(to)) return route::transport;
    const device_type& a = *lanes_[static_cast<std::size_t>(from)].device;
    const device_type& b = *lanes_[static_cast<std::size_t>(to)].device;
    if constexpr (requires { { b.peer_of(a) } -> std::convertible_to<bool>; }) {
      if (!b.peer_of(a)) return route::transport;
      // (Host tensors are every peer's to copy: only device memory may be out of reach.)
      if constexpr (staged && requires { { b.reaches(a) } -> std::convertible_to<bool>; }) {
        if (!b.reaches(a)) {
          if constexpr (host_staging) {
            return route::through_host;
          } else {
            detail::fail(errc::unsupported, ctx_.rank_name(to), "'s device cannot reach the memory of ",
                         ctx_.rank_name(from), "'s, and has no staging host memory (allocate_host()) to pass "
                         "payloads through; give the device staging memory, or peer access");
          }
        }
      }
      return route::device_copy;
    } else {
      return route::transport;
    }
  }
  // Whether host work on rank r's device may block (a GPU's must not).
  [[nodiscard]] bool host_work_may_wait(int r) const {
    const device_type& d = *lanes_[static_cast<std::size_t>(r)].device;
    if constexpr (requires { { d.host_work_may_wait() } -> std::convertible_to<bool>; }) {
      return d.host_work_may_wait();
    } else {
      return true;
    }
  }
  // Payloads by the transport wait in host work on the streams (a receive blocks until the sender
  // sends): refused, before anything runs, between ranks whose devices do not allow that.
  void refuse_waiting_host_work(const schedule& s) const {
    if constexpr (on_streams) return;  // its transfers are the device's own work
    const std::vector<int>& rank_of = s.place.rank_table();
    for (std::size_t st = 0; st + 1 < rank_of.size(); ++st) {
      const int a = rank_of[st];
      const int b = rank_of[st + 1];
      if (a == b || route_of(a, b) != route::transport) continue;
      const int stuck = host_work_may_wait(a) ? b : a;
      if (host_work_may_wait(stuck)) continue;
      detail::fail(errc::unsupported, ctx_.rank_name(a), " and ", ctx_.rank_name(b), " pass payloads between stages ",
                   st, " and ", st + 1, " on devices that share neither events nor memory, so the transport would "
                   "carry them in host work on their streams, and ", ctx_.rank_name(stuck), "'s device does not let host "
                   "work wait; put the ranks on devices of one process (peers), or use a backend whose transport "
                   "runs on the device's streams");
    }
  }
  [[nodiscard]] std::function<bool()> stopped() const {
    return [this] { return ctx_.failures.failed(); };
  }
  // Frees the buffers whose receiver has enqueued its copy (all of them with `wait`, waiting for
  // the receivers' hosts until the timeout), each on the send stream after that copy.
  void free_lent(lanes& l, bool wait) {
    std::size_t keep = 0;
    for (std::size_t j = 0; j < l.lent_out.size(); ++j) {
      lent& x = l.lent_out[j];
      const auto copied = wait ? x.answer->wait(ctx_.deadline(), stopped()) : x.answer->peek();
      if (!copied) {
        if (keep != j) l.lent_out[keep] = std::move(x);  // (a vector moved onto itself empties)
        ++keep;
        continue;
      }
      l.device->wait(l.send, *copied);
      x.owner->pool().release(x.payload, l.send, false);
    }
    l.lent_out.resize(keep);
  }

  context& ctx_;
  std::vector<lanes> lanes_;  // each rank's device and streams
  mailbox mail_;
  // Steps captured into a graph (see plan()).
  step_mode mode_ = step_mode::eager;
  std::string last_key_;           // the last eager step's key
  std::optional<graph_run> graph_;
  std::vector<graph_run> retired_;  // failed launches that had not ended (see replay())
  typename device_type::stream origin_{};  // where captures begin and graphs launch
  bool has_origin_ = false;
  typename device_type::event fork_{};     // where the capture began, which every stream waits for
};

}  // namespace ppipe::detail
