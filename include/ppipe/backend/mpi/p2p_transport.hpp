#pragma once
/// @file
/// @brief The CPU model of the NCCL backend across processes: a distributed stream_transport
/// whose groups run on CPU streams and move their bytes over MPI, one pipeline rank per process.

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ppipe/backend/mpi/error.hpp"
#include "ppipe/backend/mpi/session.hpp"
#include "ppipe/backend/mpi/transport.hpp"
#include "ppipe/device/cpu_device.hpp"
#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/tensor/tensor_view.hpp"
#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/stream_transport.hpp"
#include "ppipe/transport/transfer_groups.hpp"

namespace ppipe::mpi {

/// @brief Transfers on the rank's CPU streams, grouped and ordered as NCCL's are, between MPI
/// processes: what the NCCL backend does, run in CI without a GPU.
///
/// A group (begin_group/end_group, or one transfer outside a group) is one item on its stream,
/// which posts every transfer of the group over MPI, then waits until all of them have moved; the
/// k-th receive from a peer matches the k-th send from it. The bytes travel through the MPI
/// transport's agreed-shape messages, copied through host tensors of its own (the model copies;
/// NCCL does not), so a sent buffer is free, and a received one untouched, once its item has
/// returned. Everything else (agree, conclude, broadcast, the timeout policy, inquiries) is the
/// MPI transport's: a failed run is drained and concluded the same way.
///
/// The items call MPI from the transfer stream's thread, and the host thread's watchdog asks
/// peer_failed() meanwhile, one call at a time: MPI must provide MPI_THREAD_SERIALIZED at least
/// (ppipe::mpi::session(&argc, &argv, MPI_THREAD_SERIALIZED)).
class p2p_transport {
 public:
  using tensor_type = host_tensor;        ///< Payloads are host tensors.
  using device_type = cpu_stream_device;  ///< Transfers run on a CPU device's transfer stream.
  /// @brief Schedules are validated as NCCL needs them: sends wait for their receives.
  static constexpr transfer_model model = transfer_model::rendezvous;

  /// @param pipeline the processes of one pipeline, rank r running pipeline rank r (duplicated)
  /// @param options the MPI transport's options (timeout policy, inquiries)
  explicit p2p_transport(MPI_Comm pipeline, transport_options options = {})
      : p2p_transport(pipeline, MPI_COMM_NULL, options) {}

  /// @brief One of several data-parallel replicas of the pipeline (see ppipe::mpi::replicated):
  /// allreduce_mean() averages a stage's gradients over `replicas` on the stage's stream, as the
  /// NCCL transport does. Collective over both communicators.
  /// @param pipeline the processes of this replica's pipeline, rank r running pipeline rank r
  /// @param replicas the processes running this pipeline rank in every replica, or MPI_COMM_NULL
  /// @param options the MPI transport's options (timeout policy, inquiries)
  p2p_transport(MPI_Comm pipeline, MPI_Comm replicas, transport_options options)
      : state_(std::make_shared<wire>(pipeline, replicas, options)), groups_(state_->net.num_ranks()) {
    int level = MPI_THREAD_SINGLE;
    PPIPE_MPI_CHECK(MPI_Query_thread(&level));
    if (level < MPI_THREAD_SERIALIZED) {
      ppipe::detail::fail(errc::unsupported, "the MPI model of NCCL calls MPI from each rank's transfer stream, a "
                          "thread of its own, but MPI provides ", thread_level_name(level),
                          "; initialise MPI with MPI_THREAD_SERIALIZED or more (ppipe::mpi::session(&argc, &argv, "
                          "MPI_THREAD_SERIALIZED))");
    }
  }

  /// @brief The processes of the pipeline.
  /// @return their count
  [[nodiscard]] int num_ranks() const noexcept { return state_->net.num_ranks(); }
  /// @brief The pipeline rank this process runs.
  /// @return its rank in the communicator
  [[nodiscard]] int rank() const noexcept { return state_->net.rank(); }
  /// @brief How many replicas of the pipeline the job runs (1 without a replica communicator).
  /// @return their count
  [[nodiscard]] int replicas() const noexcept { return state_->net.replicas(); }
  /// @brief Which replica this process belongs to.
  /// @return its rank among the replicas
  [[nodiscard]] int replica() const noexcept { return state_->net.replica(); }
  /// @brief How many messages (one per tensor) have moved, sent or received, in this process.
  /// @return the count
  [[nodiscard]] std::size_t messages() const noexcept { return state_->messages.load(); }

  /// @brief Enqueues on stream `s` the replacement of each gradient by its mean over the replicas
  /// (ncclAllReduce with ncclAvg, modelled): one item that widens them to floats, all-reduces them
  /// over MPI (sum, then times 1/replicas) and writes them back, rounded to their dtype, as the
  /// MPI backend averages. A no-op with one replica.
  /// @param gradients the stage's gradients, in the device's memory
  /// @param d this rank's device
  /// @param s the stage's stream
  /// @param timeout how long the item waits for the other replicas
  void allreduce_mean(std::span<const tensor_view> gradients, device_type& d, device_type::stream s,
                      std::chrono::milliseconds timeout) {
    if (replicas() <= 1) return;
    std::size_t values = 0;
    for (const tensor_view& g : gradients) {
      d.use(s, g.data, g.bytes(), access::write);
      values += g.elements;
    }
    d.enqueue(s, [w = state_.get(), kept = std::vector<tensor_view>(gradients.begin(), gradients.end()), timeout] {
      ppipe::detail::reduce_as_floats(kept, [&](std::span<float> floats) {
        const std::lock_guard lock(w->calls);
        w->net.allreduce_mean(floats, deadline_after(timeout));
      });
    }, ppipe::detail::concat("all-reduce of ", values, " gradient values over ", replicas(), " replicas"));
  }

  /// @brief The mean of `values` over the replicas, in place, from the host (the MPI transport's):
  /// how a model whose layers run as host work on the stream averages its gradients.
  /// @param values this replica's gradients, replaced by the mean over the replicas
  /// @param deadline when to give up
  void allreduce_mean(std::span<float> values, deadline_clock::time_point deadline) {
    const std::lock_guard lock(state_->calls);
    state_->net.allreduce_mean(values, deadline);
  }

  /// @brief Opens a group (ncclGroupStart); groups nest.
  /// @param r the rank (this process's)
  void begin_group(int r) { groups_.begin(mine(r, "group")); }
  /// @brief Closes the group (ncclGroupEnd): the outermost one enqueues its transfers.
  /// @param r the rank (this process's)
  void end_group(int r) { groups_.end(mine(r, "group"), launch_group{state_, rank()}); }

  /// @brief Sends `bytes` bytes at `data` to rank `to` on stream `s` (ncclSend).
  /// @param from this process's rank
  /// @param to the receiving rank
  /// @param data what to send, unchanged until the stream gets to the group
  /// @param bytes how many bytes
  /// @param d this rank's device
  /// @param s the stream
  /// @param what the transfer, for messages
  void send(int from, int to, const void* data, std::size_t bytes, device_type& d, device_type::stream s,
            std::string_view what) {
    add(mine(from, "send"), {to, const_cast<void*>(data), bytes, true, std::string(what)}, d, s);
  }

  /// @brief Receives `bytes` bytes from rank `from` into `data` on stream `s` (ncclRecv).
  /// @param from the sending rank
  /// @param to this process's rank
  /// @param data where the bytes go
  /// @param bytes how many bytes; the matching send sends as many
  /// @param d this rank's device
  /// @param s the stream
  /// @param what the transfer, for messages
  void recv(int from, int to, void* data, std::size_t bytes, device_type& d, device_type::stream s,
            std::string_view what) {
    add(mine(to, "receive"), {from, data, bytes, false, std::string(what)}, d, s);
  }

  /// @brief Ends the groups in flight, which throw transfers_aborted on their stream, and every
  /// group until reset(). What they posted is drained by conclude().
  void abort() { state_->aborted.store(true); }

  /// @brief Whether another process has reported its rank's failure in this run, for the
  /// executor's watchdog: a rank stalled in its own work then stops instead of timing out. While a
  /// group is waiting on the transfer stream it says no: the group looks at the reports itself.
  /// @return true once a report of a failure has arrived
  bool peer_failed() {
    const std::unique_lock lock(state_->calls, std::try_to_lock);
    return lock.owns_lock() && state_->net.peer_failed();
  }

  /// @brief Readies the transport for the next run (its streams have drained).
  void reset() {
    const std::lock_guard lock(state_->calls);
    state_->aborted.store(false);
    state_->kept.clear();
    groups_.reset();
    state_->net.reset();
  }

  /// @brief See ppipe::distributed_transport (the MPI transport's, which also drains what a
  /// failed run's groups left in flight).
  /// @param mine how this rank's part ended
  /// @param deadline when to give up
  /// @return what every process concludes
  run_verdict conclude(const rank_outcome& mine, deadline_clock::time_point deadline) {
    const std::lock_guard lock(state_->calls);
    return state_->net.conclude(mine, deadline);
  }
  /// @brief Gives every rank the bytes rank `root` holds.
  /// @param bytes what `root` sends; elsewhere replaced by what arrives
  /// @param root the rank that holds them
  /// @param deadline when to give up
  /// @return ready, or timed_out
  wait_status broadcast(std::vector<std::byte>& bytes, int root, deadline_clock::time_point deadline) {
    const std::lock_guard lock(state_->calls);
    return state_->net.broadcast(bytes, root, deadline);
  }
  /// @brief See ppipe::distributed_transport.
  /// @param fields what this process must hold alike with the others
  /// @param problem what kept it from preparing the run, or empty
  /// @param deadline when to give up
  void agree(const std::vector<agreement_field>& fields, std::string_view problem,
             deadline_clock::time_point deadline) {
    const std::lock_guard lock(state_->calls);
    state_->net.agree(fields, problem, deadline);
  }
  /// @brief Rank `r` as messages name it.
  /// @param r a pipeline rank
  /// @return e.g. "rank 2"
  [[nodiscard]] std::string describe_rank(int r) const { return state_->net.describe_rank(r); }

 private:
  // What the stream items share with the transport: the MPI transport that carries the bytes,
  // the abort flag, and the host tensors of the transfers in flight.
  struct wire {
    wire(MPI_Comm pipeline, MPI_Comm replicas, transport_options options) : net(pipeline, replicas, options) {}
    mpi::transport net;
    std::mutex calls;  // one MPI call at a time, from the stream's thread or the host's
    std::atomic<bool> aborted{false};
    std::atomic<std::size_t> messages{0};
    // The copies that a stopped group's sends leave in flight, until conclude() has drained the
    // run (touched by the stream's items, and between runs by the host).
    std::vector<std::shared_ptr<payload>> kept;
  };
  struct launch_group {
    std::shared_ptr<wire> state;
    int rank;
    void operator()(std::vector<transfer_op> ops, device_type& d, device_type::stream s) const {
      const std::string label = transfer_groups<device_type>::label(rank, ops);
      // The item's accesses, declared right before it as a copy declares its own.
      for (const transfer_op& o : ops) d.use(s, o.data, o.bytes, o.is_send ? access::read : access::write);
      // A plain pointer: the transport outlives every step's items, and the last owner of the
      // wire (whose MPI transport frees communicators) must be the host, not a stream's thread.
      d.enqueue(s, [w = state.get(), r = rank, ops = std::move(ops)] { run_group(*w, r, ops); }, label);
    }
  };

  int mine(int r, const char* what) const {
    if (r != rank()) {
      ppipe::detail::fail(errc::invalid_argument, "rank ", rank(), " (this process) was asked to ", what, " for rank ",
                          r, "; a process issues only its own rank's transfers");
    }
    return r;
  }

  void add(int r, transfer_op op, device_type& d, device_type::stream s) {
    if (op.peer < 0 || op.peer >= num_ranks() || op.peer == r) {
      ppipe::detail::fail(errc::invalid_argument, "rank ", r, "'s ", op.what, " names rank ", op.peer,
                          "; its peer must be another rank in 0..", num_ranks() - 1);
    }
    if (op.bytes % 2 != 0) {
      ppipe::detail::fail(errc::unsupported, "rank ", r, "'s ", op.what, " moves ", op.bytes, " bytes; the MPI model "
                          "moves tensors of 2-byte units (every ppipe dtype is)");
    }
    groups_.add(r, std::move(op), d, s, true, launch_group{state_, r});
  }

  // On the stream: posts the group's transfers, then waits for all of them, a slice at a time so
  // that abort() is seen; a failure reported by another process ends the wait too.
  static void run_group(wire& w, int r, const std::vector<transfer_op>& ops) {
    struct posted {
      std::shared_ptr<payload> staged;  // a send's copy, which MPI reads until the send completes
      std::optional<transport::send_handle> sent;
      std::optional<transport::recv_handle> received;
      bool done = false;
    };
    std::vector<posted> flight(ops.size());
    try {
      if (w.aborted.load()) throw_aborted(r);
      for (std::size_t i = 0; i < ops.size(); ++i) {
        const transfer_op& o = ops[i];
        const shape units({static_cast<std::int64_t>(o.bytes / 2)}, dtype::f16);
        if (o.is_send) {
          flight[i].staged = std::make_shared<payload>();
          flight[i].staged->emplace_back(units);
          if (o.bytes != 0) std::memcpy(flight[i].staged->front().byte_data(), o.data, o.bytes);
          const std::lock_guard lock(w.calls);
          flight[i].sent = w.net.post_send(r, o.peer, *flight[i].staged, agreed_shapes);
        } else {
          payload into;
          into.emplace_back(units);
          const std::lock_guard lock(w.calls);
          flight[i].received = w.net.post_recv(o.peer, r, agreed_shapes, std::move(into));
        }
      }
      for (std::size_t left = ops.size(); left > 0;) {
        for (std::size_t i = 0; i < ops.size(); ++i) {
          posted& f = flight[i];
          if (f.done) continue;
          const auto slice = deadline_clock::now() + std::chrono::milliseconds(2);
          wait_status st = wait_status::timed_out;
          std::unique_lock lock(w.calls);
          if (f.sent) {
            st = w.net.complete_send(*f.sent, slice);
          } else {
            payload arrived;
            st = w.net.complete_recv(*f.received, arrived, slice);
            lock.unlock();
            if (st == wait_status::ready && ops[i].bytes != 0) {
              std::memcpy(ops[i].data, arrived.front().byte_data(), ops[i].bytes);
            }
          }
          if (st == wait_status::aborted) throw_aborted(r);
          if (st == wait_status::ready) {
            f.done = true;
            f.staged.reset();
            --left;
            w.messages.fetch_add(1);
          }
          if (w.aborted.load()) throw_aborted(r);
        }
      }
    } catch (...) {
      // Whatever ended the group, the copies its posted sends read stay with the transport until
      // conclude() has drained them (MPI reads them until then).
      const std::lock_guard lock(w.calls);
      for (posted& f : flight) {
        if (f.staged && !f.done) w.kept.push_back(std::move(f.staged));
      }
      throw;
    }
  }

  [[noreturn]] static void throw_aborted(int r) {
    throw transfers_aborted(ppipe::detail::concat("rank ", r, "'s transfer group was aborted: a rank failed"));
  }

  std::shared_ptr<wire> state_;  // shared with the items on the streams
  transfer_groups<device_type> groups_;
};

static_assert(stream_transport<p2p_transport>);
static_assert(distributed_transport<p2p_transport>);
static_assert(stream_replicas<p2p_transport>);

}  // namespace ppipe::mpi
