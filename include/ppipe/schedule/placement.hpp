#pragma once
/// @file
/// @brief Which pipeline rank holds each stage.

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ppipe/error.hpp"

namespace ppipe {

/// @brief Maps each of S stages to one of p ranks. A rank may hold several stages ("virtual
/// stages" or "chunks"); its chunk c is its c-th stage in increasing stage order.
class placement {
 public:
  /// @brief An empty placement (no ranks, no stages); assign a real one before use.
  placement() = default;

  /// @brief Megatron's looped placement: stage s on rank s % p, so rank r holds stages
  /// r, r+p, r+2p, ... (one per virtual stage).
  /// @param ranks pipeline ranks p (>= 1)
  /// @param stages_per_rank virtual stages v per rank (>= 1)
  /// @return a placement of p*v stages
  /// @throws ppipe::error (invalid_argument) when p or v is below 1, or p*v exceeds 2^20 stages
  static placement looped(int ranks, int stages_per_rank = 1) {
    if (ranks < 1) {
      detail::fail(errc::invalid_argument, "a pipeline needs at least one rank (ranks=", ranks,
                   "); pass ranks >= 1");
    }
    if (stages_per_rank < 1) {
      detail::fail(errc::invalid_argument, "each rank needs at least one stage (virtual stages v=",
                   stages_per_rank, "); pass v >= 1");
    }
    check_size(static_cast<long long>(ranks) * stages_per_rank);
    std::vector<int> rank_of(static_cast<std::size_t>(ranks * stages_per_rank));
    for (std::size_t s = 0; s < rank_of.size(); ++s) rank_of[s] = static_cast<int>(s) % ranks;
    return placement(std::move(rank_of), ranks, "looped");
  }

  /// @brief Any placement, given as the rank of each stage. Every rank must hold a stage.
  /// @param rank_of_stage rank_of_stage[s] is the rank of stage s, in 0 .. ranks-1 (1 to 2^20 stages)
  /// @param ranks pipeline ranks p (>= 1)
  /// @return the placement, with style() "custom" even when it happens to be looped
  /// @throws ppipe::error (invalid_argument) when `ranks` is below 1, the stage count is out of range,
  /// a stage names a rank outside 0 .. ranks-1, or a rank holds no stage
  static placement custom(std::vector<int> rank_of_stage, int ranks) {
    if (ranks < 1) {
      detail::fail(errc::invalid_argument, "a pipeline needs at least one rank (ranks=", ranks,
                   "); pass ranks >= 1");
    }
    check_size(static_cast<long long>(rank_of_stage.size()));
    std::vector<bool> used(static_cast<std::size_t>(ranks), false);
    for (std::size_t s = 0; s < rank_of_stage.size(); ++s) {
      const int r = rank_of_stage[s];
      if (r < 0 || r >= ranks) {
        detail::fail(errc::invalid_argument, "stage ", s, " is placed on rank ", r,
                     ", outside 0..", ranks - 1, "; give every stage a rank below ", ranks);
      }
      used[static_cast<std::size_t>(r)] = true;
    }
    for (int r = 0; r < ranks; ++r) {
      if (!used[static_cast<std::size_t>(r)]) {
        detail::fail(errc::invalid_argument, "rank ", r, " holds no stage; give each of the ",
                     ranks, " ranks at least one stage or use fewer ranks");
      }
    }
    return placement(std::move(rank_of_stage), ranks, "custom");
  }

  /// @brief The number of pipeline ranks p.
  /// @return p; 0 for a default-constructed placement
  [[nodiscard]] int num_ranks() const noexcept { return ranks_; }
  /// @brief The number of stages S over all ranks.
  /// @return S; 0 for a default-constructed placement
  [[nodiscard]] int num_stages() const noexcept { return static_cast<int>(rank_of_.size()); }
  /// @brief "looped" or "custom".
  /// @return the name of the factory that made it; empty for a default-constructed placement
  [[nodiscard]] const std::string& style() const noexcept { return style_; }

  /// @brief The rank that holds `stage`.
  /// @param stage a stage, 0 .. num_stages()-1
  /// @return its rank, 0 .. num_ranks()-1
  /// @throws ppipe::error (invalid_argument) when `stage` is out of range
  [[nodiscard]] int rank_of(int stage) const {
    check_stage(stage);
    return rank_of_[static_cast<std::size_t>(stage)];
  }
  /// @brief The position of `stage` among its rank's stages (its virtual-stage chunk).
  /// @param stage a stage, 0 .. num_stages()-1
  /// @return its chunk, 0 for the rank's lowest stage
  /// @throws ppipe::error (invalid_argument) when `stage` is out of range
  [[nodiscard]] int chunk_of(int stage) const {
    check_stage(stage);
    return chunk_of_[static_cast<std::size_t>(stage)];
  }
  /// @brief The stages that `rank` holds, in increasing order.
  /// @param rank a rank, 0 .. num_ranks()-1
  /// @return a view into the placement, valid while it lives and is not assigned to
  /// @throws ppipe::error (invalid_argument) when `rank` is out of range
  [[nodiscard]] std::span<const int> stages_on(int rank) const {
    if (rank < 0 || rank >= ranks_) {
      detail::fail(errc::invalid_argument, "rank ", rank, " is outside 0..", ranks_ - 1,
                   "; ask for a rank of this ", ranks_, "-rank placement");
    }
    return stages_[static_cast<std::size_t>(rank)];
  }
  /// @brief The rank of every stage, indexed by stage (for loops that look up many stages).
  /// @return num_stages() entries, with no range checks on use
  [[nodiscard]] const std::vector<int>& rank_table() const noexcept { return rank_of_; }
  /// @brief True when stage s and stage s+1 live on different ranks, so a transfer crosses.
  /// @param stage the stage s, 0 .. num_stages()-2
  /// @return whether the data between s and s+1 moves between ranks
  /// @throws ppipe::error (invalid_argument) when s or s+1 is not a stage
  [[nodiscard]] bool crosses_after(int stage) const {
    return rank_of(stage) != rank_of(stage + 1);
  }

  /// @brief Equal when both have the same rank count and put every stage on the same rank; style()
  /// is not compared.
  /// @param a one placement
  /// @param b the other placement
  /// @return whether they place stages alike
  friend bool operator==(const placement& a, const placement& b) {
    return a.ranks_ == b.ranks_ && a.rank_of_ == b.rank_of_;
  }

 private:
  placement(std::vector<int> rank_of, int ranks, std::string style)
      : rank_of_(std::move(rank_of)),
        chunk_of_(rank_of_.size()),
        stages_(static_cast<std::size_t>(ranks)),
        ranks_(ranks),
        style_(std::move(style)) {
    for (std::size_t s = 0; s < rank_of_.size(); ++s) {
      auto& mine = stages_[static_cast<std::size_t>(rank_of_[s])];
      chunk_of_[s] = static_cast<int>(mine.size());
      mine.push_back(static_cast<int>(s));
    }
  }

  static void check_size(long long stages) {
    constexpr long long max_stages = 1 << 20;
    if (stages < 1 || stages > max_stages) {
      detail::fail(errc::invalid_argument, "a pipeline of ", stages,
                   " stages is outside what ppipe supports (1..", max_stages,
                   "); use fewer ranks or fewer stages per rank");
    }
  }
  void check_stage(int stage) const {
    if (stage < 0 || stage >= num_stages()) {
      detail::fail(errc::invalid_argument, "stage ", stage, " is outside 0..", num_stages() - 1,
                   "; ask for a stage of this ", num_stages(), "-stage placement");
    }
  }

  std::vector<int> rank_of_;
  std::vector<int> chunk_of_;
  std::vector<std::vector<int>> stages_;
  int ranks_ = 0;
  std::string style_;
};

}  // namespace ppipe
