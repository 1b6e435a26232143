#pragma once
/// @file
/// @brief The buffers of a stage whose tensors live in its device's memory: allocated and zeroed
/// on a stream, released in stream order, reused by the device's own pool.

#include <cstddef>
#include <memory>
#include <unordered_set>
#include <utility>
#include <vector>

#include "ppipe/device/stream_device.hpp"
#include "ppipe/runtime/buffer_pool.hpp"
#include "ppipe/runtime/stream_buffers.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe {

/// @brief Device-memory buffers for a stage on a stream device, with stream_buffers' interface
/// and counting. A payload's tensors come from the device's stream-ordered allocate(), zeroed on
/// the stream that first uses them; release() hands the memory back at a point of a stream, and
/// the device reuses it in stream order (a CUDA memory pool does, and so does the CPU model, which
/// also poisons it and checks who touches it). The host never touches the bytes, so nothing waits
/// on an event here, and the memory a stage holds is only what it counts.
/// @tparam Device a stream_device
template <stream_device Device>
class device_buffers : public detail::counted_buffers {
 public:
  using payload_type = basic_payload<device_tensor>;  ///< The tensors of one payload.
  using box = stream_payload<device_tensor>;          ///< A payload that streams may be using.
  using stream_type = typename Device::stream;        ///< A stream of the device.

  /// @param device where the memory comes from; outlives the buffers
  explicit device_buffers(Device* device = nullptr) : device_(device) {}

  /// @brief Tensors of `shapes` in the device's memory, zeroed on `s`, for work on `s` (another
  /// stream must be ordered after this point before it uses them); counted as held unless
  /// `counted` is false (a receive's buffers, counted when the stage takes them).
  /// @param shapes one shape per tensor of the payload
  /// @param s the stream the memory is allocated and zeroed on; only enqueues, never waits
  /// @param counted whether the stage counts the payload as held from now on
  /// @return a box that owns the new tensors; its memory stays allocated until release() or
  /// settle()
  box acquire(const std::vector<shape>& shapes, stream_type s, bool counted = true) {
    box b{std::make_shared<payload_type>(), shapes};
    b.data->reserve(shapes.size());
    for (const shape& sh : shapes) {
      const std::size_t bytes = sh.bytes();
      auto* p = static_cast<std::byte*>(device_->allocate(bytes, s));
      held_.insert(p);
      device_->zero_async(s, p, bytes);
      b.data->emplace_back(sh, p);
    }
    b.regions = detail::regions_of(*b.data);
    if (counted) count_.in(b);
    return b;
  }

  /// @brief Frees `b`'s memory when `last` reaches this point: every other stream that used it
  /// must be ordered before that point. `b` is empty afterwards.
  /// @param b the payload to free; an empty box is left alone
  /// @param last the stream after whose work so far the memory is freed
  /// @param counted false for a payload this stage no longer counts (one it handed on)
  void release(box& b, stream_type last, bool counted = true) {
    if (!b) return;
    for (const auto& r : b.regions) {
      device_->release(r.data, last);  // may refuse: then nothing changed
      held_.erase(r.data);
    }
    if (counted) count_.out(b);
    b = {};
  }

  /// @brief Gives `b`'s memory to `to`, the buffers of another stage on the same device, which
  /// frees it from then on (or settles it after a failed step); nothing is copied or counted. A
  /// gradient one stage hands the stage before it on its rank goes so, or both would free it.
  /// @param b the payload handed over; it stays valid
  /// @param to the buffers that own it from now on
  void hand_over(const box& b, device_buffers& to) {
    for (const auto& r : b.regions) {
      held_.erase(r.data);
      to.held_.insert(r.data);
    }
  }

  /// @brief Forgets what a capture that was discarded allocated: that memory was the graph's, and
  /// went with it.
  void forget_held() { held_.clear(); }

  /// @brief Frees, on `s`, what a failed step left allocated (its boxes were dropped without a
  /// release); only once the device's streams are synchronized, so that nothing uses them.
  /// @param s the stream the frees are enqueued on
  void settle(stream_type s) {
    for (void* p : held_) device_->release(p, s);
    held_.clear();
  }

 private:
  Device* device_;
  std::unordered_set<void*> held_;  // allocated and not yet released
};

}  // namespace ppipe
