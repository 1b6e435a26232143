#pragma once
/// @file
/// @brief ppipe::cpu_graph: the work a capture of a cpu_stream_device recorded, on the stream that
/// began it and on the streams that joined it, kept with the accesses declared for it so that each
/// launch is checked for races again, at its own place in stream order.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "ppipe/device/cpu_stream.hpp"
#include "ppipe/device/stream_device.hpp"

namespace ppipe {

class cpu_stream_device;

/// @brief What a capture recorded (cpu_stream_device::graph), ready to be launched any number of
/// times. A cheap copyable handle: copies share the recorded items.
class cpu_graph {
 public:
  cpu_graph() = default;
  /// @brief How many items a launch enqueues.
  /// @return the number of recorded items (host work, copies, zeroes, records and waits).
  [[nodiscard]] std::size_t size() const noexcept { return items_ ? items_->size() : 0; }
  /// @brief How many streams the capture spanned: the one that began it and those that joined.
  /// @return the streams; 1 for a capture of one stream
  [[nodiscard]] std::size_t streams() const noexcept { return branches_.size(); }
  /// @brief The memory the graph owns: what the capture allocated, at the same addresses in
  /// every launch (a block released in the capture may serve a later allocation of it).
  /// @return bytes
  [[nodiscard]] std::size_t memory_bytes() const noexcept { return memory_bytes_; }

 private:
  friend class cpu_stream_device;
  struct declared {
    const void* p;
    std::size_t bytes;
    access mode;
  };
  enum class memory_op : unsigned char { none, allocate, release };
  struct item {
    detail::stream_item::kind what;
    std::shared_ptr<detail::cpu_task> fn;      // work: shared, since each launch runs it again
    std::shared_ptr<detail::event_mark> mark;  // record, wait
    std::string label;
    std::vector<declared> accesses;  // declared before it, checked again at each launch
    std::size_t branch = 0;          // the capture's stream it was enqueued on
    memory_op op = memory_op::none;  // an allocation or release of the graph's memory, at this place
    void* block = nullptr;
    std::size_t bytes = 0;
  };
  std::shared_ptr<const std::vector<item>> items_;  // in the order they were enqueued
  std::vector<std::size_t> branches_;  // each stream of the capture, as the device numbers its streams
  const void* owner_ = nullptr;        // the device that captured it
  std::shared_ptr<void> memory_;       // the blocks it owns (freed with the last handle and launch)
  std::size_t memory_bytes_ = 0;
};

}  // namespace ppipe
