#pragma once
/// @file
/// @brief detail::vector_clock: what a stream of the CPU model is ordered after, so that ordering
/// can be decided on the host when work is enqueued, whatever the timing of the workers.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ppipe::detail {

/// A vector clock over streams: entry u is the last item of stream u that the owner is ordered
/// after. Each enqueued item ticks its own stream's entry, a record snapshots the clock and a wait
/// joins the snapshot, so "item (u, k) happens before" is `get(u) >= k`.
class vector_clock {
 public:
  /// The entry of stream `u`, 0 for a stream it has never heard of.
  [[nodiscard]] std::uint64_t get(std::size_t u) const noexcept { return u < ticks_.size() ? ticks_[u] : 0; }

  /// Advances stream `u`'s own entry by one item and returns the new item's number.
  std::uint64_t tick(std::size_t u) {
    if (u >= ticks_.size()) ticks_.resize(u + 1, 0);
    return ++ticks_[u];
  }

  /// Orders the owner after everything `other` is ordered after (the wait on an event).
  void join(const vector_clock& other) {
    if (other.ticks_.size() > ticks_.size()) ticks_.resize(other.ticks_.size(), 0);
    for (std::size_t u = 0; u < other.ticks_.size(); ++u) ticks_[u] = std::max(ticks_[u], other.ticks_[u]);
  }

  /// Whether item `k` of stream `u` is ordered before the owner's next item.
  [[nodiscard]] bool covers(std::size_t u, std::uint64_t k) const noexcept { return get(u) >= k; }

 private:
  std::vector<std::uint64_t> ticks_;
};

}  // namespace ppipe::detail
