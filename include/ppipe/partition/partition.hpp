#pragma once
/// @file
/// @brief A partition: the contiguous range of layers each stage holds.

#include <cstddef>
#include <initializer_list>
#include <span>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"

namespace ppipe {

/// @brief Layers [0, L) cut into S contiguous, non-empty ranges, one per stage in stage order:
/// stage s holds layers [first(s), end(s)). Which rank runs a stage is the schedule's placement,
/// not the partition's.
class partition {
 public:
  /// @brief An empty partition (no stages); assign a real one before use.
  partition() = default;

  /// @brief From the S+1 cut points: bounds[0] == 0, bounds[S] == L, strictly increasing.
  /// @param bounds the cut points; stage s holds layers [bounds[s], bounds[s+1])
  /// @throws ppipe::error (errc::invalid_argument) when there are fewer than 2 cut points, the first
  /// is not 0, or two neighbours are not strictly increasing (an empty stage)
  explicit partition(std::vector<int> bounds) : bounds_(std::move(bounds)) {
    if (bounds_.size() < 2) {
      detail::fail(errc::invalid_argument, "a partition needs at least 2 cut points (got ",
                   bounds_.size(), "); give 0, the end of every stage, and the layer count");
    }
    if (bounds_.front() != 0) {
      detail::fail(errc::invalid_argument, "a partition's first cut point is ", bounds_.front(),
                   "; stage 0 must start at layer 0");
    }
    for (std::size_t s = 0; s + 1 < bounds_.size(); ++s) {
      if (bounds_[s + 1] <= bounds_[s]) {
        detail::fail(errc::invalid_argument, "stage ", s, " would hold layers [", bounds_[s], ", ",
                     bounds_[s + 1], "), which is empty; every stage needs at least one layer");
      }
    }
  }

  /// @brief From the number of layers of every stage, e.g. {40, 40}.
  /// @param sizes layers per stage, in stage order; each >= 1, together at most 2^30
  /// @return the partition whose stage s holds sizes[s] layers
  /// @throws ppipe::error (errc::invalid_argument) when a size is below 1, the sizes add up to more
  /// than 2^30, or `sizes` is empty
  static partition from_sizes(std::span<const int> sizes) {
    std::vector<int> bounds{0};
    bounds.reserve(sizes.size() + 1);
    long long total = 0;
    for (std::size_t s = 0; s < sizes.size(); ++s) {
      if (sizes[s] < 1) {
        detail::fail(errc::invalid_argument, "stage ", s, " is given ", sizes[s],
                     " layers; every stage needs at least one");
      }
      total += sizes[s];
      if (total > (1LL << 30)) {
        detail::fail(errc::invalid_argument, "the stage sizes add up to more than 2^30 layers");
      }
      bounds.push_back(static_cast<int>(total));
    }
    return partition(std::move(bounds));
  }
  /// @brief The same, from a braced list such as `partition::from_sizes({40, 40})`.
  /// @param sizes layers per stage, in stage order; each >= 1
  /// @return the partition whose stage s holds the s-th size's layers
  /// @throws ppipe::error (errc::invalid_argument) as the span overload does
  static partition from_sizes(std::initializer_list<int> sizes) {
    return from_sizes(std::span<const int>(sizes.begin(), sizes.size()));
  }

  /// @brief The number of stages S.
  /// @return S; 0 for a default-built partition
  [[nodiscard]] int num_stages() const noexcept {
    return bounds_.empty() ? 0 : static_cast<int>(bounds_.size()) - 1;
  }
  /// @brief The number of layers L the stages cover together.
  /// @return L; 0 for a default-built partition
  [[nodiscard]] int num_layers() const noexcept { return bounds_.empty() ? 0 : bounds_.back(); }
  /// @brief The first layer of `stage`.
  /// @param stage a stage in [0, num_stages())
  /// @return the index of its first layer
  /// @throws ppipe::error (errc::invalid_argument) when `stage` is out of range
  [[nodiscard]] int first(int stage) const { return bounds_[check(stage)]; }
  /// @brief One past the last layer of `stage`.
  /// @param stage a stage in [0, num_stages())
  /// @return the index after its last layer (the next stage's first)
  /// @throws ppipe::error (errc::invalid_argument) when `stage` is out of range
  [[nodiscard]] int end(int stage) const { return bounds_[check(stage) + 1]; }
  /// @brief The number of layers `stage` holds.
  /// @param stage a stage in [0, num_stages())
  /// @return end(stage) - first(stage), at least 1
  /// @throws ppipe::error (errc::invalid_argument) when `stage` is out of range
  [[nodiscard]] int size(int stage) const { return end(stage) - first(stage); }
  /// @brief The number of layers of every stage.
  /// @return one count per stage, in stage order (empty for a default-built partition)
  [[nodiscard]] std::vector<int> sizes() const {
    std::vector<int> out;
    for (std::size_t s = 0; s + 1 < bounds_.size(); ++s) out.push_back(bounds_[s + 1] - bounds_[s]);
    return out;
  }
  /// @brief The S+1 cut points.
  /// @return the cut points as given to the constructor (empty for a default-built partition)
  [[nodiscard]] const std::vector<int>& bounds() const noexcept { return bounds_; }
  /// @brief The stage that holds `layer`, found by binary search over the cut points.
  /// @param layer a layer in [0, num_layers())
  /// @return the stage s with first(s) <= layer < end(s)
  /// @throws ppipe::error (errc::invalid_argument) when `layer` is out of range
  [[nodiscard]] int stage_of(int layer) const {
    if (layer < 0 || layer >= num_layers()) {
      detail::fail(errc::invalid_argument, "layer ", layer, " is outside 0..", num_layers() - 1,
                   "; ask for a layer of this ", num_layers(), "-layer partition");
    }
    int lo = 0;
    int hi = num_stages() - 1;
    while (lo < hi) {  // the last stage whose first layer is <= layer
      const int mid = (lo + hi + 1) / 2;
      if (bounds_[static_cast<std::size_t>(mid)] <= layer) lo = mid; else hi = mid - 1;
    }
    return lo;
  }

  /// @brief Two partitions are equal when their cut points are.
  friend bool operator==(const partition&, const partition&) = default;

 private:
  [[nodiscard]] std::size_t check(int stage) const {
    if (stage < 0 || stage >= num_stages()) {
      detail::fail(errc::invalid_argument, "stage ", stage, " is outside 0..", num_stages() - 1,
                   "; ask for a stage of this ", num_stages(), "-stage partition");
    }
    return static_cast<std::size_t>(stage);
  }

  std::vector<int> bounds_;
};

}  // namespace ppipe
