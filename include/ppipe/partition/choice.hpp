#pragma once
/// @file
/// @brief What a built-in partitioner returns: the split, and whether it is proven optimal.

#include "ppipe/partition/partition.hpp"

namespace ppipe {

/// @brief A partitioner's answer.
struct partition_choice {
  partition split;
  /// Proven: no contiguous split has a smaller largest stage time under the partitioner's rules.
  bool optimal = false;
};

}  // namespace ppipe
