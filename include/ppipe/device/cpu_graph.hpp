#pragma once
/// @file
/// @brief ppipe::cpu_graph: the work one stream of a cpu_stream_device captured, kept with the
/// accesses declared for it so that each launch is checked for races again, at its own place in
/// stream order.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "ppipe/device/cpu_stream.hpp"
#include "ppipe/device/stream_device.hpp"

namespace ppipe {

class cpu_stream_device;

/// @brief What one stream's capture recorded (cpu_stream_device::graph), ready to be launched any
/// number of times. A cheap copyable handle: copies share the recorded items.
class cpu_graph {
 public:
  cpu_graph() = default;
  /// @brief How many items a launch enqueues.
  /// @return the number of recorded items (host work, copies, zeroes and waits).
  [[nodiscard]] std::size_t size() const noexcept { return items_ ? items_->size() : 0; }

 private:
  friend class cpu_stream_device;
  struct declared {
    const void* p;
    std::size_t bytes;
    access mode;
  };
  struct item {
    detail::stream_item::kind what;
    std::shared_ptr<detail::cpu_task> fn;      // work: shared, since each launch runs it again
    std::shared_ptr<detail::event_mark> mark;  // wait
    std::string label;
    std::vector<declared> accesses;  // declared before it, checked again at each launch
  };
  std::shared_ptr<const std::vector<item>> items_;
};

}  // namespace ppipe
