#pragma once
/// @file
/// @brief What a built-in partitioner returns: the split, and whether it is proven optimal.

#include "ppipe/partition/partition.hpp"

namespace ppipe {

/// @brief A partitioner's answer.
struct partition_choice {
  /// The layers of each stage.
  partition split;
  /// Proven: no contiguous split has a smaller largest stage time under the partitioner's rules.
  bool optimal = false;
  /// When device memory limited the split: the largest stage time the best split would have without
  /// the limits (0 when they did not bind, or were not considered).
  double without_memory_limits = 0;
};

}  // namespace ppipe
