#pragma once
/// @file
/// @brief The pool a stage takes its activation and gradient buffers from and returns them to,
/// and the counts that show what a stage held at its peak.

#include <algorithm>
#include <cstddef>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ppipe/runtime/tensor.hpp"

namespace ppipe {

/// @brief What a stage held: microbatches of activations (what the simulator's
/// peak_stage_activations predicts) and bytes of buffers.
struct memory_stats {
  int live_microbatches = 0;  ///< microbatches whose activations the stage holds now
  int peak_microbatches = 0;  ///< the most it held at once
  std::size_t live_bytes = 0;  ///< bytes of buffers out of the pool now
  std::size_t peak_bytes = 0;  ///< the most at once
};

/// @brief Buffers for one stage, used by its rank's thread only. The primary template is declared
/// here; each buffer type specializes it (the host's below, a device's in its backend).
template <class Tensor>
class buffer_pool;

/// @brief Host buffers: released storage is kept by size and handed out again, so a steady
/// pipeline stops allocating after its first step.
template <>
class buffer_pool<host_tensor> {
 public:
  /// @brief A zeroed tensor of shape `s`, from recycled storage when there is some.
  host_tensor acquire(const shape& s) {
    const std::size_t n = s.elements();
    auto& free = free_[n];
    host_tensor t;
    if (free.empty()) {
      t = host_tensor(s);
    } else {
      t = host_tensor::adopt(s, std::move(free.back()));
      free.pop_back();
      pooled_ -= n;
    }
    count_in(t.bytes());
    return t;
  }
  /// @brief One zeroed tensor per shape.
  payload acquire(const std::vector<shape>& shapes) {
    payload p;
    p.reserve(shapes.size());
    for (const shape& s : shapes) p.push_back(acquire(s));
    return p;
  }
  /// @brief Counts a payload that came from elsewhere (the caller's batch, a receive) as held by
  /// this stage; release() gives its storage to this pool.
  void adopt(const payload& p) { count_in(bytes_of(p)); }
  /// @brief Stops counting a payload that leaves the stage (its output, handed to the caller).
  void forget(const payload& p) {
    const std::size_t bytes = bytes_of(p);
    stats_.live_bytes -= std::min(stats_.live_bytes, bytes);
  }
  /// @brief Returns a payload's buffers to the pool.
  void release(payload& p) {
    for (host_tensor& t : p) {
      const std::size_t bytes = t.bytes();
      stats_.live_bytes -= std::min(stats_.live_bytes, bytes);
      std::vector<float> storage = std::move(t).release();
      // Keep at most a few steps' worth of spare storage; beyond that let it go.
      if (pooled_ + storage.size() <= max_pooled_) {
        pooled_ += storage.size();
        free_[storage.size()].push_back(std::move(storage));
      }
    }
    p.clear();
  }

  /// @brief A microbatch's activations are now held (training forward) ...
  void hold_microbatch() {
    ++stats_.live_microbatches;
    stats_.peak_microbatches = std::max(stats_.peak_microbatches, stats_.live_microbatches);
  }
  /// @brief ... and now let go (its last backward is done).
  void drop_microbatch() { --stats_.live_microbatches; }

  [[nodiscard]] const memory_stats& stats() const noexcept { return stats_; }
  /// @brief Starts a new peak measurement (live counts stay).
  void reset_peaks() noexcept {
    stats_.peak_microbatches = stats_.live_microbatches;
    stats_.peak_bytes = stats_.live_bytes;
  }

 private:
  void count_in(std::size_t bytes) {
    stats_.live_bytes += bytes;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.live_bytes);
  }

  std::unordered_map<std::size_t, std::vector<std::vector<float>>> free_;
  std::size_t pooled_ = 0;                           // floats held in free_
  std::size_t max_pooled_ = std::size_t{1} << 28;    // 1 GiB of floats
  memory_stats stats_;
};

}  // namespace ppipe
