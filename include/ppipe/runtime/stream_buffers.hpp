#pragma once
/// @file
/// @brief The buffers of a stage whose layers run on a device's streams: payloads in shared boxes
/// that enqueued work holds on to, handed out again only once the last stream that used them has
/// passed an event.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ppipe/runtime/buffer_pool.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe {

/// @brief A payload that streams may still be using: enqueued work holds the box, so the host
/// never moves or reshapes the tensors in it while they are in flight. Its shapes are kept beside
/// it, so the host can plan with them without touching the payload.
template <class Tensor>
struct stream_payload {
  /// Where one tensor's bytes are, taken when the payload was made: a layer on a stream may assign
  /// a tensor as a whole (same shape, same storage), so the host never reads the tensor objects
  /// again to find them.
  struct region {
    std::byte* data = nullptr;  ///< the tensor's first byte
    std::size_t bytes = 0;      ///< the tensor's size in bytes
  };
  /// @brief The tensors, shared with enqueued work; null for an empty box.
  std::shared_ptr<basic_payload<Tensor>> data;
  std::vector<shape> shapes;                    ///< each tensor's shape, for the host to plan with
  std::vector<region> regions{};                ///< each tensor's bytes, in the payload's order

  /// @brief Whether the box holds a payload.
  /// @return true unless `data` is null
  [[nodiscard]] explicit operator bool() const noexcept { return data != nullptr; }
};

namespace detail {
/// What a stage on a stream device counts as held: payloads counted from the shapes the host
/// keeps (never from tensors a stream may be writing), and the most tensors held at once.
struct box_count {
  memory_stats stats;
  std::size_t live = 0;
  std::size_t peak_tensors = 0;

  template <class Box>
  void in(const Box& b) {
    ++live;
    peak_tensors = std::max(peak_tensors, live * std::max<std::size_t>(1, b.shapes.size()));
    stats.live_bytes += bytes_in(b);
    stats.peak_bytes = std::max(stats.peak_bytes, stats.live_bytes);
  }
  template <class Box>
  void out(const Box& b) {
    live -= std::min<std::size_t>(live, 1);
    stats.live_bytes -= std::min(stats.live_bytes, bytes_in(b));
  }
  template <class Box>
  static std::size_t bytes_in(const Box& b) {
    std::size_t n = 0;
    for (const shape& s : b.shapes) n += s.bytes();
    return n;
  }
};

/// The counting half of a stream stage's buffers, whatever memory they hand out.
class counted_buffers {
 public:
  /// @brief Counts a payload acquired uncounted (a receive) as held from now on.
  template <class Box>
  void count(const Box& b) {
    count_.in(b);
  }
  /// @brief Stops counting a payload that leaves the stage (an output handed on).
  template <class Box>
  void forget(const Box& b) {
    count_.out(b);
  }

  /// @brief Hold a microbatch's activations (training forward) ...
  void hold_microbatch() noexcept { count_.stats.hold_microbatch(); }
  /// @brief ... and let them go (its last backward has been enqueued).
  void drop_microbatch() noexcept { count_.stats.drop_microbatch(); }
  /// @brief Keep a held microbatch as input and output only, until its recompute ...
  void stash_microbatch() noexcept { count_.stats.stash_microbatch(); }
  /// @brief ... which holds it in full again.
  void unstash_microbatch() noexcept { count_.stats.unstash_microbatch(); }
  /// @brief A stashed microbatch is let go without its recompute.
  void drop_stashed() noexcept { count_.stats.drop_stashed(); }

  [[nodiscard]] const memory_stats& stats() const noexcept { return count_.stats; }
  /// @brief Starts a new peak measurement (live counts stay).
  void reset_peaks() noexcept { count_.stats.reset_peaks(); }
  /// @brief Forgets what a failed run left counted as held.
  void reset_live() noexcept { count_.stats.reset_live(); }

 protected:
  box_count count_;
};

/// The regions of a payload that only the host holds yet.
template <class Tensor>
std::vector<typename stream_payload<Tensor>::region> regions_of(basic_payload<Tensor>& p) {
  std::vector<typename stream_payload<Tensor>::region> out;
  out.reserve(p.size());
  for (Tensor& t : p) out.push_back({t.byte_data(), t.bytes()});
  return out;
}
}  // namespace detail

/// @brief Host buffers for a stage on a stream device (the CPU model), counted like buffer_pool.
///
/// A released payload goes back to the spare storage only once the event recorded after its last
/// use has completed (query(), never a wait): the host may then reshape and zero it without racing
/// a stream. Until then a new payload takes fresh storage, so a host that runs a step ahead holds
/// more storage than a synchronous one; what the stage counts as held (memory_stats) is the same,
/// in the order the schedule runs. With the device's poison on, released storage is filled with
/// NaN on the releasing stream, so a reader not ordered before the release computes NaN.
template <class Tensor, class Device>
class stream_buffers : public detail::counted_buffers {
 public:
  using payload_type = basic_payload<Tensor>;  ///< The tensors of one payload.
  using box = stream_payload<Tensor>;          ///< A payload that streams may be using.
  using stream_type = typename Device::stream;  ///< A stream of the device.
  using event_type = typename Device::event;    ///< An event of the device.

  /// @brief Buffers with no storage yet.
  /// @param device whose streams use the buffers, and whose events order their reuse; outlives the
  /// buffers, and must be set before acquire(), wrap() or release()
  explicit stream_buffers(Device* device = nullptr) : device_(device) {}

  /// @brief Zeroed tensors of `shapes`, first used by work on `s`; counted as held unless
  /// `counted` is false (a receive's buffers, counted when the stage takes them).
  /// Reuses spare storage whose last use has completed, else allocates host memory; the tensors
  /// are zeroed on the host before the call returns.
  /// @param shapes one shape per tensor of the payload
  /// @param s the stream whose work first uses the tensors
  /// @param counted whether the stage counts the payload as held from now on
  /// @return a box that owns the new tensors
  box acquire(const std::vector<shape>& shapes, stream_type s, bool counted = true) {
    collect();
    box b{std::make_shared<payload_type>(), shapes};
    b.data->reserve(shapes.size());
    for (const shape& sh : shapes) {
      auto found = spare_.find(sh.bytes());
      if (found == spare_.end() || found->second.empty()) {
        b.data->emplace_back(sh);
      } else {
        b.data->push_back(Tensor::adopt(sh, std::move(found->second.back())));
        found->second.pop_back();
        count_.stats.spare_bytes -= std::min(count_.stats.spare_bytes, sh.bytes());
      }
      track(s, b.data->back());
    }
    b.regions = detail::regions_of(*b.data);
    if (counted) count_.in(b);
    return b;
  }

  /// @brief Boxes a payload that comes from the host (the caller's batch), first used on `s`;
  /// not counted until a stage takes it (count()).
  /// @param p the payload; the box takes it over
  /// @param s the stream whose work first uses it
  /// @return a box of `p`, with its shapes and regions
  box wrap(payload_type&& p, stream_type s) {
    box b{std::make_shared<payload_type>(std::move(p)), {}};
    b.shapes = shapes_of(*b.data);
    b.regions = detail::regions_of(*b.data);
    for (const Tensor& t : *b.data) track(s, t);
    return b;
  }

  /// @brief Gives `b` back once the work enqueued on `last` so far has run: every other stream
  /// that used it must be ordered before that point. `b` is empty afterwards.
  /// @param b the payload to give back; an empty box is left alone
  /// @param last the stream whose work so far must run before the storage is reused; an event is
  /// recorded on it, and with the device's poison on the storage is filled with NaN on it
  /// @param counted false for a payload this stage no longer counts (one it handed on).
  void release(box& b, stream_type last, bool counted = true) {
    if (!b) return;
    if (counted) count_.out(b);
    retire(last, b);
    pending_.push_back({std::move(b.data), device_->record(last)});
    b = {};
  }

  /// @brief Gives `b` to the buffers of another stage on the same device: host tensors free
  /// themselves, so there is nothing to move.
  void hand_over(const box& /*b*/, stream_buffers& /*to*/) const noexcept {}

  /// @brief Drops every payload without waiting: for after the streams have been synchronized.
  void settle(stream_type /*unused*/ = {}) {
    collect();
    pending_.clear();
  }

 private:
  struct pending {
    std::shared_ptr<payload_type> data;
    event_type done;
  };

  // Storage whose last use has completed goes back to the spares, at most as many per size as
  // the stage ever held at once (what a steady run needs).
  void collect() {
    std::size_t keep = 0;
    for (pending& p : pending_) {
      if (!device_->query(p.done)) {
        pending_[keep++] = std::move(p);
        continue;
      }
      for (Tensor& t : *p.data) {
        const std::size_t bytes = t.bytes();
        auto& list = spare_[bytes];
        if (list.size() < std::max<std::size_t>(1, count_.peak_tensors)) {
          count_.stats.spare_bytes += bytes;
          list.push_back(std::move(t).release());
        }
      }
    }
    pending_.resize(keep);
  }

  void track(stream_type s, const Tensor& t) {
    if constexpr (requires { device_->track(s, t.byte_data(), t.bytes()); }) {
      device_->track(s, t.byte_data(), t.bytes());
    }
  }
  // Poisons on `last` what readers not ordered before it would still see, and ends the race
  // checker's watch there.
  void retire(stream_type last, const box& b) {
    if constexpr (requires { device_->retire(last, nullptr); device_->options().poison; }) {
      if (device_->options().poison) {
        device_->enqueue(
            last,
            [data = b.data, regions = b.regions] {
              for (const auto& r : regions) std::memset(r.data, 0xFF, r.bytes);
            },
            "poison a released buffer");
      }
      for (const auto& r : b.regions) device_->retire(last, r.data);
    }
  }

  Device* device_;
  std::vector<pending> pending_;
  std::unordered_map<std::size_t, std::vector<typename Tensor::storage>> spare_;  // by bytes
};

}  // namespace ppipe
