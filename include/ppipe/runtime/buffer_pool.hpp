#pragma once
/// @file
/// @brief The pool a stage takes its activation and gradient buffers from and returns them to,
/// and the counts that show what a stage held at its peak.

#include <algorithm>
#include <cstddef>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ppipe/tensor/tensor.hpp"

namespace ppipe {

/// @brief What a stage held: microbatches of activations (what the simulator's
/// peak_stage_activations predicts) and bytes of buffers.
struct memory_stats {
  int live_microbatches = 0;  ///< microbatches whose activations the stage holds now
  int peak_microbatches = 0;  ///< the most it held at once
  /// Recomputed microbatches of which the stage keeps only its input and output now, between their
  /// forward and their recompute (R)
  int live_stashed = 0;
  int peak_stashed = 0;       ///< the most it kept so at once
  std::size_t live_bytes = 0;  ///< bytes of buffers out of the pool now
  std::size_t peak_bytes = 0;  ///< the most at once
  std::size_t spare_bytes = 0;  ///< released buffers the pool keeps for reuse
  // Generation (see pipeline::generate): the per-sequence state of the stage's layers.
  int live_sequences = 0;        ///< sequences whose state (KV cache) the stage holds now
  std::size_t cache_bytes = 0;   ///< bytes of that state now
  std::size_t peak_cache_bytes = 0;  ///< the most at once

  /// @brief A microbatch's activations are now held (training forward) ...
  void hold_microbatch() noexcept {
    ++live_microbatches;
    peak_microbatches = std::max(peak_microbatches, live_microbatches);
  }
  /// @brief ... and now let go (its last backward is done).
  void drop_microbatch() noexcept { --live_microbatches; }
  /// @brief A held microbatch is now kept as input and output only, until its recompute ...
  void stash_microbatch() noexcept {
    --live_microbatches;
    ++live_stashed;
    peak_stashed = std::max(peak_stashed, live_stashed);
  }
  /// @brief ... which holds it in full again.
  void unstash_microbatch() noexcept {
    --live_stashed;
    hold_microbatch();
  }
  /// @brief A stashed microbatch is let go without its recompute (after a failed step).
  void drop_stashed() noexcept { --live_stashed; }
  /// @brief Starts a new peak measurement (live counts stay).
  void reset_peaks() noexcept {
    peak_microbatches = live_microbatches;
    peak_stashed = live_stashed;
    peak_bytes = live_bytes;
    peak_cache_bytes = cache_bytes;
  }
  /// @brief Forgets what a failed run left counted as held.
  void reset_live() noexcept {
    live_microbatches = 0;
    live_stashed = 0;
    live_bytes = 0;
  }
};

/// @brief Buffers for one stage, used by its rank's thread only. The primary template is declared
/// here; each buffer type specializes it (the host's below, a device's in its backend).
template <class Tensor>
class buffer_pool;

/// @brief Host buffers: released storage is kept by size in bytes (any dtype reuses any storage of
/// its size) and handed out again, so a steady pipeline stops allocating after its first step.
/// The pool keeps, per size, no more spare buffers than the most of that size the stage ever held
/// at once: storage that arrives from elsewhere (the caller's batch, a receive) and is released
/// here replaces what the stage would have allocated, and the rest is freed.
template <>
class buffer_pool<host_tensor> {
 public:
  /// @brief A zeroed tensor of shape `s`, from recycled storage when there is some.
  /// @param s the shape, dtype included; throws ppipe::error (invalid_argument) as
  /// shape::elements() does
  /// @return the tensor, counted as held by the stage until release() or forget()
  host_tensor acquire(const shape& s) {
    const std::size_t n = s.bytes();
    size_class& c = classes_[n];
    host_tensor t;
    if (c.spare.empty()) {
      t = host_tensor(s);
    } else {
      t = host_tensor::adopt(s, std::move(c.spare.back()));
      c.spare.pop_back();
      stats_.spare_bytes -= std::min(stats_.spare_bytes, t.bytes());
    }
    count_in(c, t.bytes());
    return t;
  }
  /// @brief One zeroed tensor per shape.
  /// @param shapes the shapes, in the payload's order; each checked as in acquire(const shape&)
  /// @return the payload, every tensor counted as held
  payload acquire(const std::vector<shape>& shapes) {
    payload p;
    p.reserve(shapes.size());
    for (const shape& s : shapes) p.push_back(acquire(s));
    return p;
  }
  /// @brief Buffers for a receive of these shapes, which a transport fills whole: recycled storage
  /// where there is some, not zeroed, else new. Not counted as held: the stage adopts what it
  /// receives (see adopt()), and storage the transport replaces is simply freed.
  /// @param shapes the shapes the receive expects, in the payload's order
  /// @return one tensor per shape, whose bytes the transport is to overwrite
  payload for_receive(const std::vector<shape>& shapes) {
    payload p;
    p.reserve(shapes.size());
    for (const shape& s : shapes) {
      auto found = classes_.find(s.bytes());
      if (found == classes_.end() || found->second.spare.empty()) {
        p.emplace_back(s);
        continue;
      }
      size_class& c = found->second;
      p.push_back(host_tensor::reuse(s, std::move(c.spare.back())));
      c.spare.pop_back();
      stats_.spare_bytes -= std::min(stats_.spare_bytes, p.back().bytes());
    }
    return p;
  }
  /// @brief Counts a payload that came from elsewhere (the caller's batch, a receive) as held by
  /// this stage; release() gives its storage to this pool.
  /// @param p the payload; only its tensors' sizes are read
  void adopt(const payload& p) {
    for (const host_tensor& t : p) count_in(classes_[t.bytes()], t.bytes());
  }
  /// @brief Stops counting a payload that leaves the stage (its output, handed to the caller).
  /// @param p the payload; only its tensors' sizes are read, and the caller keeps it
  void forget(const payload& p) {
    for (const host_tensor& t : p) count_out(classes_[t.bytes()], t.bytes());
  }
  /// @brief Returns a payload's buffers to the pool.
  /// @param p the payload, counted as held (acquired or adopted here); its storage is kept for
  /// reuse or freed, and `p` is empty afterwards
  void release(payload& p) {
    for (host_tensor& t : p) {
      size_class& c = classes_[t.bytes()];
      count_out(c, t.bytes());
      if (c.live + c.spare.size() < c.peak) {
        stats_.spare_bytes += t.bytes();
        c.spare.push_back(std::move(t).release());
      }
    }
    p.clear();
  }

  /// @brief A microbatch's activations are now held (training forward) ...
  void hold_microbatch() noexcept { stats_.hold_microbatch(); }
  /// @brief ... and now let go (its last backward is done).
  void drop_microbatch() noexcept { stats_.drop_microbatch(); }
  /// @brief A held microbatch is now kept as input and output only, until its recompute ...
  void stash_microbatch() noexcept { stats_.stash_microbatch(); }
  /// @brief ... which holds it in full again.
  void unstash_microbatch() noexcept { stats_.unstash_microbatch(); }
  /// @brief A stashed microbatch is let go without its recompute.
  void drop_stashed() noexcept { stats_.drop_stashed(); }

  /// @brief What the stage holds now and has held at most.
  /// @return the counts, valid as long as the pool
  [[nodiscard]] const memory_stats& stats() const noexcept { return stats_; }
  /// @brief Starts a new peak measurement (live counts stay).
  void reset_peaks() noexcept { stats_.reset_peaks(); }
  /// @brief A sequence's state of `bytes` is now held (its admission) ...
  /// @param bytes the size of the sequence's state (its KV cache)
  void hold_sequence(std::size_t bytes) noexcept {
    ++stats_.live_sequences;
    stats_.cache_bytes += bytes;
    stats_.peak_cache_bytes = std::max(stats_.peak_cache_bytes, stats_.cache_bytes);
  }
  /// @brief ... and now freed (the sequence has finished).
  /// @param bytes the size given to hold_sequence() for it
  void drop_sequence(std::size_t bytes) noexcept {
    --stats_.live_sequences;
    stats_.cache_bytes -= std::min(stats_.cache_bytes, bytes);
  }
  /// @brief Forgets every buffer still counted as held: after a failed run, whose buffers were
  /// dropped without being released, so that the counts start again from zero.
  void reset_live() noexcept {
    stats_.reset_live();
    for (auto& entry : classes_) entry.second.live = 0;
  }
 private:
  struct size_class {
    std::vector<host_tensor::storage> spare;
    std::size_t live = 0;  // buffers of this size the stage holds now
    std::size_t peak = 0;  // ... and at most, ever
  };

  void count_in(size_class& c, std::size_t bytes) {
    ++c.live;
    c.peak = std::max(c.peak, c.live);
    stats_.live_bytes += bytes;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.live_bytes);
  }
  void count_out(size_class& c, std::size_t bytes) {
    c.live -= std::min<std::size_t>(c.live, 1);
    stats_.live_bytes -= std::min(stats_.live_bytes, bytes);
  }

  std::unordered_map<std::size_t, size_class> classes_;  // by bytes, so any dtype reuses any storage
  memory_stats stats_;
};

}  // namespace ppipe
