#pragma once
/// @file
/// @brief How ranks that share a device hand each other payloads without the host touching them:
/// the sender posts its buffers with an event after the work that wrote them; the receiver copies
/// them on its own stream after that event and answers with an event after the copy, which the
/// sender waits for before it frees them.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "ppipe/device/wait.hpp"

namespace ppipe::detail {

/// Waits on `cv` (with `lock` held) until `ready()`, returning true; or, returning false, until
/// `deadline` or until `stop()` says the run failed, which it asks every few milliseconds.
template <class Ready>
bool wait_for_mail(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, deadline_clock::time_point deadline,
                   const std::function<bool()>& stop, Ready&& ready) {
  while (!ready()) {
    if (stop && stop()) return false;
    const auto now = deadline_clock::now();
    if (now >= deadline) return false;
    cv.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(10)));
  }
  return true;
}

/// Host-side letters between the ranks of one process, one queue per (sender, receiver) pair. A
/// receiver takes a letter when a compute needs it, which need not be the order the sender posted
/// in (two stages on a rank, as in a V, take activations and gradients from one peer in the order
/// they compute), so a letter carries its message's key and is taken by it. Only handles and
/// events cross: the bytes stay in device memory until the receiver's stream copies them.
/// @tparam Box the sender's payload (it keeps the buffers' handles)
/// @tparam Event the device's event
template <class Box, class Event>
class device_mailbox {
 public:
  /// The receiver's answer: the event after its copy, once it has enqueued the copy.
  class receipt {
   public:
    /// Called by the receiver once: the sender may free the buffers after `copied` completes.
    void sign(Event copied) {
      {
        const std::lock_guard lock(mutex_);
        copied_ = std::move(copied);
      }
      ready_.notify_all();
    }
    /// The event, if the receiver has signed; waits until `deadline`, or until `stop()` says the
    /// run failed, checking every few milliseconds.
    std::optional<Event> wait(deadline_clock::time_point deadline, const std::function<bool()>& stop) {
      std::unique_lock lock(mutex_);
      if (!wait_for_mail(lock, ready_, deadline, stop, [&] { return copied_.has_value(); })) return std::nullopt;
      return copied_;
    }
    /// The event, if the receiver has signed; never waits.
    std::optional<Event> peek() {
      const std::lock_guard lock(mutex_);
      return copied_;
    }

   private:
    std::mutex mutex_;
    std::condition_variable ready_;
    std::optional<Event> copied_;
  };

  /// What a sender posts: its buffers, an event after the work that wrote them, and the receipt
  /// the receiver signs.
  struct letter {
    Box payload;
    Event ready;
    std::shared_ptr<receipt> answer;
    std::uint64_t key = 0;  ///< which message: the same on both sides (see message_key)
  };

  /// Empties every box for a run of `ranks` ranks.
  void reset(int ranks) {
    const std::lock_guard lock(mutex_);
    ranks_ = static_cast<std::size_t>(ranks);
    queues_.assign(ranks_ * ranks_, {});
  }

  /// Posts a letter from rank `from` to rank `to`; never blocks.
  void post(int from, int to, letter l) {
    {
      const std::lock_guard lock(mutex_);
      queues_[index(from, to)].push_back(std::move(l));
    }
    arrived_.notify_all();
  }

  /// The letter `key` from `from` to `to`: waits for the sender's host to post it until
  /// `deadline`, or until `stop()` says the run failed (then, or at the deadline, nothing).
  std::optional<letter> take(int from, int to, std::uint64_t key, deadline_clock::time_point deadline,
                             const std::function<bool()>& stop) {
    std::unique_lock lock(mutex_);
    auto& q = queues_[index(from, to)];
    const auto find = [&] { return std::find_if(q.begin(), q.end(), [&](const letter& l) { return l.key == key; }); };
    if (!wait_for_mail(lock, arrived_, deadline, stop, [&] { return find() != q.end(); })) return std::nullopt;
    const auto it = find();
    letter l = std::move(*it);
    q.erase(it);
    return l;
  }

  /// The key of the message a receive action takes: its stage, microbatch and kind.
  /// @param stage the receiving stage
  /// @param microbatch the microbatch
  /// @param gradient whether it is a gradient (RECV_B) rather than an activation (RECV_F)
  /// @return the key
  static std::uint64_t message_key(int stage, int microbatch, bool gradient) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(stage)) << 33) |
           (static_cast<std::uint64_t>(static_cast<std::uint32_t>(microbatch)) << 1) | (gradient ? 1U : 0U);
  }

 private:
  [[nodiscard]] std::size_t index(int from, int to) const {
    return static_cast<std::size_t>(from) * ranks_ + static_cast<std::size_t>(to);
  }

  std::mutex mutex_;
  std::condition_variable arrived_;
  std::size_t ranks_ = 0;
  std::vector<std::deque<letter>> queues_;
};

}  // namespace ppipe::detail
