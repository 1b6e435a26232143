#pragma once
/// @file
/// @brief The CPU model of NCCL point-to-point: a stream_transport between ranks of this process
/// whose transfers run on CPU streams with NCCL's matching, grouping and rendezvous, so that CI
/// runs the NCCL backend's protocol without a GPU.

#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "ppipe/device/cpu_device.hpp"
#include "ppipe/error.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/transport/stream_transport.hpp"
#include "ppipe/transport/transfer_groups.hpp"

namespace ppipe {

/// @brief Point-to-point transfers on cpu_stream_device streams, with NCCL's semantics:
/// - the k-th receive rank `to` posts from rank `from` matches the k-th send `from` posts to `to`,
///   whatever the transfers are; a byte count that differs is an error on both streams;
/// - a group (begin_group/end_group, nested or not) is one item on its stream: it posts all its
///   transfers at once, and the stream goes on once every one of them has met its other end and
///   moved (transfer_model::rendezvous: a send waits for its receive, as a large NCCL send does);
/// - a transfer outside a group is a group of its own.
/// So a schedule that needs a send and a receive to be grouped hangs here as it would on NCCL; the
/// executor's watchdog then names the rank, the peer and the transfer. abort() ends every group
/// in flight with an error, and withdraws what they posted.
class cpu_p2p_transport {
  struct launch_group;

 public:
  /// @brief The buffer type of its payloads: host tensors, whose bytes the CPU streams move.
  using tensor_type = host_tensor;
  /// @brief The device whose streams run the transfers.
  using device_type = cpu_stream_device;
  /// @brief Sends wait for their receives.
  static constexpr transfer_model model = transfer_model::rendezvous;

  /// @brief A transport between `ranks` ranks, with nothing posted.
  /// @param ranks the ranks (threads of this process) that talk through it, >= 1; fewer throws
  /// ppipe::error (invalid_argument)
  /// @param grouped false makes every transfer a group of its own, whatever begin_group() says: a
  /// pipeline whose schedule needs groups then hangs, as it would on NCCL without them (tests)
  explicit cpu_p2p_transport(int ranks, bool grouped = true) : groups_(ranks), grouped_(grouped) {
    if (ranks < 1) {
      detail::fail(errc::invalid_argument, "a CPU point-to-point transport needs at least one rank (ranks=", ranks,
                   "); pass the pipeline's rank count");
    }
    state_ = std::make_shared<fabric>();
    state_->ranks = static_cast<std::size_t>(ranks);
    state_->channels.resize(static_cast<std::size_t>(ranks) * static_cast<std::size_t>(ranks));
  }

  /// @brief The number of ranks it connects.
  /// @return the `ranks` it was made with
  [[nodiscard]] int num_ranks() const noexcept { return static_cast<int>(state_->ranks); }

  /// @brief Opens a group on rank `rank`'s thread (ncclGroupStart); groups nest.
  /// @param rank the rank whose transfers follow
  void begin_group(int rank) { groups_.begin(rank); }

  /// @brief Closes rank `rank`'s group (ncclGroupEnd): the outermost one enqueues its transfers.
  /// @param rank the rank that opened it
  void end_group(int rank) { groups_.end(rank, launcher(rank)); }

  /// @brief Sends `bytes` bytes at `data` to rank `to`, on stream `s` of `d` (ncclSend).
  /// @param from the sending rank (the caller's)
  /// @param to the receiving rank
  /// @param data what to send: read when the stream gets to the group, unchanged until then
  /// @param bytes how many bytes
  /// @param d the sending rank's device
  /// @param s the stream the send runs on
  /// @param what the transfer, for messages
  void send(int from, int to, const void* data, std::size_t bytes, device_type& d, device_type::stream s,
            std::string_view what) {
    add(from, {to, const_cast<void*>(data), bytes, true, std::string(what)}, d, s);
  }

  /// @brief Receives `bytes` bytes from rank `from` into `data`, on stream `s` of `d` (ncclRecv).
  /// @param from the sending rank
  /// @param to the receiving rank (the caller's)
  /// @param data where the bytes go: written when the group runs
  /// @param bytes how many bytes; the matching send must send as many
  /// @param d the receiving rank's device
  /// @param s the stream the receive runs on
  /// @param what the transfer, for messages
  void recv(int from, int to, void* data, std::size_t bytes, device_type& d, device_type::stream s,
            std::string_view what) {
    add(to, {from, data, bytes, false, std::string(what)}, d, s);
  }

  /// @brief Ends every group in flight with an error on its stream, and every group enqueued
  /// later, until reset().
  void abort() {
    {
      const std::lock_guard lock(state_->mutex);
      state_->aborted = true;
    }
    state_->moved.notify_all();
  }

  /// @brief Readies the transport for the next run (every stream has drained): forgets what an
  /// aborted run left posted and any group left open.
  void reset() {
    const std::lock_guard lock(state_->mutex);
    state_->aborted = false;
    for (auto& c : state_->channels) {
      c.sends.clear();
      c.recvs.clear();
    }
    groups_.reset();
  }

  /// @brief How many messages (one per tensor) have moved since the transport was made.
  /// @return the count
  [[nodiscard]] std::size_t messages() const {
    const std::lock_guard lock(state_->mutex);
    return state_->messages;
  }

 private:
  // One transfer of a group, as the stream runs it.
  struct op {
    transfer_op t;
    bool done = false;
    std::string failure;  // why it cannot move (a byte count that differs)
  };
  // The transfers from one rank to another, posted and not yet matched, oldest first.
  struct channel {
    std::deque<std::shared_ptr<op>> sends;
    std::deque<std::shared_ptr<op>> recvs;
  };
  struct fabric {
    mutable std::mutex mutex;
    std::condition_variable moved;
    std::size_t ranks = 0;
    std::vector<channel> channels;  // [from * ranks + to]
    bool aborted = false;
    std::size_t messages = 0;
  };

  void add(int rank, transfer_op t, device_type& d, device_type::stream s) {
    if (t.peer < 0 || t.peer >= num_ranks()) {
      detail::fail(errc::invalid_argument, "rank ", rank, "'s ", t.what, " names rank ", t.peer, ", but this transport's "
                   "ranks run 0..", num_ranks() - 1);
    }
    groups_.add(rank, std::move(t), d, s, grouped_, launcher(rank));
  }

  // Enqueues a group of rank `rank`'s as one item on its stream.
  [[nodiscard]] launch_group launcher(int rank) { return {this, rank}; }

  // On the stream: posts every transfer of the group, moves what meets its other end, and waits
  // until all of them have moved (or the transport is aborted).
  static void run_group(fabric& f, int rank, const std::vector<std::shared_ptr<op>>& ops) {
    const std::size_t ranks = f.ranks;
    std::unique_lock lock(f.mutex);
    const auto aborted = [&] {
      throw transfers_aborted(detail::concat("rank ", rank, "'s transfer group was aborted: another rank failed"));
    };
    if (f.aborted) aborted();
    bool moved = false;
    for (const auto& o : ops) {
      const std::size_t from = o->t.is_send ? static_cast<std::size_t>(rank) : static_cast<std::size_t>(o->t.peer);
      const std::size_t to = o->t.is_send ? static_cast<std::size_t>(o->t.peer) : static_cast<std::size_t>(rank);
      channel& c = f.channels[from * ranks + to];
      auto& mine = o->t.is_send ? c.sends : c.recvs;
      auto& theirs = o->t.is_send ? c.recvs : c.sends;
      if (theirs.empty()) {
        mine.push_back(o);
        continue;
      }
      const std::shared_ptr<op> other = theirs.front();
      theirs.pop_front();
      const transfer_op& s = o->t.is_send ? o->t : other->t;
      const transfer_op& r = o->t.is_send ? other->t : o->t;
      if (s.bytes != r.bytes) {
        const std::string why = detail::concat("rank ", from, "'s ", s.what, " sends ", s.bytes, " bytes to rank ", to,
                                               ", whose matching ", r.what, " receives ", r.bytes,
                                               "; both ends of a transfer must agree on its size (NCCL would hang or "
                                               "corrupt)");
        o->failure = why;
        other->failure = why;
      } else {
        if (s.bytes != 0) std::memcpy(r.data, s.data, s.bytes);
        ++f.messages;
      }
      o->done = true;
      other->done = true;
      moved = true;
    }
    if (moved) f.moved.notify_all();
    const auto all_done = [&] {
      for (const auto& o : ops) {
        if (!o->done) return false;
      }
      return true;
    };
    f.moved.wait(lock, [&] { return f.aborted || all_done(); });
    if (!all_done()) {
      // Nothing may move into or out of this group's buffers once its stream has gone on.
      for (auto& c : f.channels) {
        for (auto* q : {&c.sends, &c.recvs}) {
          std::erase_if(*q, [&](const std::shared_ptr<op>& x) {
            for (const auto& o : ops) {
              if (o == x) return true;
            }
            return false;
          });
        }
      }
      aborted();
    }
    for (const auto& o : ops) {
      if (!o->failure.empty()) detail::fail(errc::invalid_argument, o->failure);
    }
  }

  struct launch_group {
    cpu_p2p_transport* self;
    int rank;
    void operator()(std::vector<transfer_op> group, device_type& d, device_type::stream s) const {
      std::string label = transfer_groups<device_type>::label(rank, group);
      std::vector<std::shared_ptr<op>> ops;
      ops.reserve(group.size());
      for (transfer_op& t : group) {
        // The item's accesses, declared right before it as a copy declares its own.
        d.use(s, t.data, t.bytes, t.is_send ? access::read : access::write);
        ops.push_back(std::make_shared<op>(op{std::move(t), false, {}}));
      }
      d.enqueue(s, [state = self->state_, r = rank, ops = std::move(ops)] { run_group(*state, r, ops); }, label);
    }
  };

  std::shared_ptr<fabric> state_;  // shared with the items enqueued on the streams
  transfer_groups<device_type> groups_;
  bool grouped_ = true;
};

static_assert(stream_transport<cpu_p2p_transport>);

}  // namespace ppipe
