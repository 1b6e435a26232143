#pragma once
/// @file
/// @brief detail::cpu_allocator: the stream-ordered memory pool of the CPU model. A released block
/// is reused at once on its own stream and on a stream ordered after the release, and fresh memory
/// is taken otherwise, as cudaMallocAsync reuses memory only along stream order.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <new>
#include <unordered_map>

#include "ppipe/device/vector_clock.hpp"
#include "ppipe/error.hpp"

namespace ppipe {

/// @brief What a cpu_stream_device's pool holds, in bytes (sizes rounded as allocated).
struct cpu_allocator_stats {
  std::size_t bytes_in_use = 0;       ///< allocated and not yet released
  std::size_t peak_bytes_in_use = 0;  ///< the most bytes_in_use has been
  std::size_t bytes_reserved = 0;     ///< taken from the system: in use plus cached for reuse
  std::size_t allocations = 0;        ///< allocate() calls
  std::size_t reused = 0;             ///< of those, served from a released block
  std::size_t host_bytes_in_use = 0;  ///< staging host memory (allocate_host()) not yet given back
};

namespace detail {

/// The pool. Not thread-safe: the device calls it under its own lock.
class cpu_allocator {
 public:
  /// Every block starts on this boundary (a cache line; CUDA's 256 bytes would cover it).
  static constexpr std::size_t alignment = 64;
  /// The byte that poisoned memory is filled with: 0xff... is a quiet NaN as float, double, half
  /// and bfloat16 alike.
  static constexpr unsigned char poison_byte = 0xff;

  /// What allocate() handed out.
  struct grant {
    void* p;
    std::size_t size;  ///< the rounded size
    bool reused;
  };

  explicit cpu_allocator(bool poison) : poison_(poison) {}
  cpu_allocator(const cpu_allocator&) = delete;
  cpu_allocator& operator=(const cpu_allocator&) = delete;
  ~cpu_allocator() {
    for (auto& [p, b] : blocks_) ::operator delete(p, std::align_val_t{alignment});
  }

  /// A block of at least `bytes` for stream `stream`, whose clock is `clock`: a released block
  /// that the stream is ordered after (its own releases always are), else fresh memory.
  grant allocate(std::size_t bytes, std::size_t stream, const vector_clock& clock) {
    const std::size_t size = round_up(bytes);
    ++stats_.allocations;
    // Best fit among the cached blocks no more than twice as large, so a small request does not
    // pin a large block.
    for (auto it = free_.lower_bound(size); it != free_.end() && it->first <= 2 * size; ++it) {
      block& b = blocks_.at(it->second);
      if (b.released_on != stream && !clock.covers(b.released_on, b.released_at)) continue;
      void* p = it->second;
      free_.erase(it);
      b.live = true;
      ++stats_.reused;
      in_use(b.size);
      return {p, b.size, true};
    }
    void* p = ::operator new(size, std::align_val_t{alignment});
    if (poison_) std::memset(p, poison_byte, size);  // fresh memory: nothing else can see it yet
    blocks_.emplace(p, block{size, true, 0, 0});
    stats_.bytes_reserved += size;
    in_use(size);
    return {p, size, false};
  }

  /// The size of live block `p`; throws if `p` is not one.
  [[nodiscard]] std::size_t live_size(void* p) const {
    const auto it = blocks_.find(p);
    if (it == blocks_.end()) {
      fail(errc::invalid_argument, "release(", p, ") of a pointer this device did not allocate: release only what its allocate() returned");
    }
    if (!it->second.live) fail(errc::invalid_argument, "release(", p, ") of a block already released: release each allocation once");
    return it->second.size;
  }

  /// Marks `p` free from item `tick` of `stream` on; returns its size. The caller enqueues the
  /// poisoning on that stream, so the memory changes only when the stream reaches the release.
  std::size_t release(void* p, std::size_t stream, std::uint64_t tick) {
    static_cast<void>(live_size(p));
    block& b = blocks_.at(p);
    b.live = false;
    b.released_on = stream;
    b.released_at = tick;
    free_.emplace(b.size, p);
    stats_.bytes_in_use -= b.size;
    return b.size;
  }

  /// Calls `fn(p, size)` for every block taken from the system (live or cached).
  template <class F>
  void each_block(F&& fn) const {
    for (const auto& [p, b] : blocks_) fn(p, b.size);
  }

  [[nodiscard]] const cpu_allocator_stats& stats() const noexcept { return stats_; }
  [[nodiscard]] bool poisons() const noexcept { return poison_; }

 private:
  struct block {
    std::size_t size;
    bool live;
    std::size_t released_on;
    std::uint64_t released_at;
  };

  static std::size_t round_up(std::size_t bytes) {
    if (bytes > SIZE_MAX - alignment) fail(errc::out_of_memory, "allocate(", bytes, ") is larger than any memory");
    return std::max<std::size_t>(alignment, (bytes + alignment - 1) / alignment * alignment);
  }

  void in_use(std::size_t size) {
    stats_.bytes_in_use += size;
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  }

  bool poison_;
  std::unordered_map<void*, block> blocks_;
  std::multimap<std::size_t, void*> free_;  // released blocks by size
  cpu_allocator_stats stats_;
};

}  // namespace detail
}  // namespace ppipe
