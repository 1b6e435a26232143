#pragma once
/// @file
/// @brief The host transport: ranks are threads of one process and messages are copies in memory.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe {

/// @brief In-process transport between rank threads. A send copies the payload into the receiving
/// rank's mailbox at once (so it never blocks and its buffer is free on return: the `buffered`
/// transfer model); a receive takes its message from the mailbox, waiting for it if it has not come.
class host_transport {
 public:
  /// @brief The buffer type it moves: payloads are vectors of host tensors.
  using tensor_type = host_tensor;

  /// @brief Handle of a posted send; already complete on the host.
  struct send_handle {
    /// @brief The receiving rank.
    int to = -1;
  };
  /// @brief Handle of a posted receive: which message of which channel it matches.
  struct recv_handle {
    /// @brief The sending rank.
    int from = -1;
    /// @brief The receiving rank, the one that posted the receive.
    int to = -1;
    /// @brief Which message of the channel from `from` to `to` it matches, counted from 0 since the
    /// last reset().
    std::uint64_t sequence = 0;
    /// When the data arrived (set by complete_recv), for the trace.
    deadline_clock::time_point arrived{};
  };

  /// @brief A transport of `ranks` empty mailboxes.
  /// @param ranks the number of pipeline ranks (threads) that talk through this transport, >= 1;
  /// fewer throws ppipe::error (invalid_argument)
  /// @param spin how long a receive polls before it blocks. By default 50 us when every rank can
  /// have a core of its own (ranks <= std::thread::hardware_concurrency()), and 0 otherwise, where
  /// a polling rank would take the core of a rank that has work.
  explicit host_transport(int ranks, std::optional<std::chrono::microseconds> spin = std::nullopt)
      : spin_(spin ? *spin : default_spin(ranks)) {
    if (ranks < 1) {
      detail::fail(errc::invalid_argument, "a host transport needs at least one rank (ranks=", ranks,
                   "); pass the pipeline's rank count");
    }
    boxes_.reserve(static_cast<std::size_t>(ranks));
    for (int r = 0; r < ranks; ++r) boxes_.push_back(std::make_unique<mailbox>(ranks));
    sent_.assign(static_cast<std::size_t>(ranks) * static_cast<std::size_t>(ranks), 0);
    posted_.assign(sent_.size(), 0);
  }

  /// @brief The number of ranks it connects.
  /// @return the `ranks` it was made with
  [[nodiscard]] int num_ranks() const noexcept { return static_cast<int>(boxes_.size()); }

  /// @brief Copies `data` into rank `to`'s mailbox. Called only by rank `from`'s thread.
  /// @param from the sending rank, in [0, num_ranks())
  /// @param to the receiving rank, in [0, num_ranks()) and not `from`; a bad pair throws
  /// ppipe::error (invalid_argument)
  /// @param data the payload, copied before the call returns (so it may be reused at once)
  /// @return a handle that complete_send() reports ready at once
  send_handle post_send(int from, int to, const payload& data) {
    check_pair(from, to);
    const std::uint64_t seq = sent_[index(from, to)]++;
    mailbox& box = *boxes_[static_cast<std::size_t>(to)];
    payload copy = data;
    {
      const std::lock_guard lock(box.mutex);
      box.channels[static_cast<std::size_t>(from)].emplace(seq, message{std::move(copy), deadline_clock::now()});
    }
    box.arrival.notify_all();
    return send_handle{to};
  }

  /// @brief Claims the next message from `from` to `to`. Called only by rank `to`'s thread.
  /// @param from the sending rank, in [0, num_ranks())
  /// @param to the receiving rank, in [0, num_ranks()) and not `from`; a bad pair throws
  /// ppipe::error (invalid_argument)
  /// @return the handle to pass to complete_recv(); it does not wait for the message
  recv_handle post_recv(int from, int to) {
    check_pair(from, to);
    return recv_handle{from, to, posted_[index(from, to)]++, {}};
  }

  /// @brief Waits until the claimed message has arrived and moves it into `into`. It first polls
  /// for up to spin() (a thread woken from a condition variable takes tens of microseconds on some
  /// machines, longer than many a step), then blocks.
  /// @param h the handle from post_recv(), on the thread of its receiving rank; its `arrived` is
  /// set to when the message reached the mailbox
  /// @param into replaced by the received payload when ready; left alone otherwise
  /// @param deadline when to give up waiting
  /// @return ready when the message was taken, aborted after abort(), timed_out when `deadline`
  /// passed first
  wait_status complete_recv(recv_handle& h, payload& into, deadline_clock::time_point deadline) {
    mailbox& box = *boxes_[static_cast<std::size_t>(h.to)];
    auto& channel = box.channels[static_cast<std::size_t>(h.from)];
    const auto take = [&] {
      const auto found = channel.find(h.sequence);
      if (found == channel.end()) return false;
      into = std::move(found->second.data);
      h.arrived = found->second.sent;
      channel.erase(found);
      return true;
    };
    if (spin_.count() > 0) {
      const auto until = std::min(deadline, deadline_clock::now() + spin_);
      do {
        {
          const std::lock_guard lock(box.mutex);
          if (aborted_) return wait_status::aborted;
          if (take()) return wait_status::ready;
        }
        std::this_thread::yield();
      } while (deadline_clock::now() < until);
    }
    std::unique_lock lock(box.mutex);
    box.arrival.wait_until(lock, deadline, [&] { return aborted_ || channel.count(h.sequence) != 0; });
    if (aborted_) return wait_status::aborted;
    return take() ? wait_status::ready : wait_status::timed_out;
  }

  /// @brief How long a receive polls before it blocks.
  /// @return the `spin` given to the constructor, or the default it chose
  [[nodiscard]] std::chrono::microseconds spin() const noexcept { return spin_; }

  /// @brief Host sends are complete when posted.
  /// @return ready, or aborted after abort() and until reset()
  wait_status complete_send(send_handle&, deadline_clock::time_point) { return aborted() ? wait_status::aborted : wait_status::ready; }

  /// @brief Wakes every waiting receive with `aborted`, until reset().
  void abort() {
    aborted_.store(true);
    for (auto& box : boxes_) {
      // Taking the lock orders the flag before any waiter's next check, so no wake-up is lost.
      { const std::lock_guard lock(box->mutex); }
      box->arrival.notify_all();
    }
  }

  /// @brief Forgets undelivered messages and the abort, for the next run. Not thread-safe: call it
  /// between runs only.
  void reset() {
    for (auto& box : boxes_) {
      const std::lock_guard lock(box->mutex);
      for (auto& channel : box->channels) channel.clear();
    }
    aborted_.store(false);
    std::fill(sent_.begin(), sent_.end(), 0);
    std::fill(posted_.begin(), posted_.end(), 0);
  }

  /// @brief Messages sent but not yet received, over all ranks (0 after a clean run).
  /// @return the count; takes every mailbox's lock in turn
  [[nodiscard]] std::size_t undelivered() const {
    std::size_t n = 0;
    for (const auto& box : boxes_) {
      const std::lock_guard lock(box->mutex);
      for (const auto& channel : box->channels) n += channel.size();
    }
    return n;
  }

 private:
  struct message {
    payload data;
    deadline_clock::time_point sent;
  };
  // One mailbox per receiving rank, one channel per sender, messages keyed by their sequence
  // number, so receives may complete in any order while matching sends in FIFO order.
  struct mailbox {
    explicit mailbox(int ranks) : channels(static_cast<std::size_t>(ranks)) {}
    mutable std::mutex mutex;
    std::condition_variable arrival;
    std::vector<std::unordered_map<std::uint64_t, message>> channels;
  };

  [[nodiscard]] bool aborted() const noexcept { return aborted_.load(); }
  [[nodiscard]] std::size_t index(int from, int to) const noexcept {
    return static_cast<std::size_t>(from) * boxes_.size() + static_cast<std::size_t>(to);
  }
  void check_pair(int from, int to) const {
    const int p = num_ranks();
    if (from < 0 || from >= p || to < 0 || to >= p || from == to) {
      detail::fail(errc::invalid_argument, "no host channel from rank ", from, " to rank ", to,
                   " in a ", p, "-rank transport; transfers go between two different ranks in 0..", p - 1);
    }
  }

  std::vector<std::unique_ptr<mailbox>> boxes_;
  static std::chrono::microseconds default_spin(int ranks) {
    const unsigned cores = std::thread::hardware_concurrency();
    return cores != 0 && static_cast<unsigned>(ranks) <= cores ? std::chrono::microseconds(50)
                                                               : std::chrono::microseconds(0);
  }

  std::chrono::microseconds spin_;
  std::atomic<bool> aborted_{false};
  // sent_[from*p+to] is touched only by rank `from`, posted_[from*p+to] only by rank `to`.
  std::vector<std::uint64_t> sent_;
  std::vector<std::uint64_t> posted_;
};

static_assert(transport<host_transport>);

}  // namespace ppipe
