#pragma once
/// @file
/// @brief Names for the messages of a schedule and the channels they travel on.

#include <cstddef>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ppipe/schedule/action.hpp"
#include "ppipe/schedule/placement.hpp"

namespace ppipe::detail {

/// Identifies a message by its boundary and microbatch: activations crossing from stage b to b+1
/// have key b*m + mb, gradients crossing from b+1 to b the same plus stages*m.
struct message_keys {
  std::size_t microbatches = 0;
  std::size_t gradient_offset = 0;  // stages * microbatches

  message_keys() = default;
  message_keys(int stages, int m)
      : microbatches(static_cast<std::size_t>(m)),
        gradient_offset(static_cast<std::size_t>(stages) * static_cast<std::size_t>(m)) {}

  [[nodiscard]] std::size_t size() const noexcept { return 2 * gradient_offset; }

  /// The key of a transfer action's message.
  [[nodiscard]] std::size_t of(const action& a) const noexcept {
    const auto mb = static_cast<std::size_t>(a.microbatch);
    const auto stage = static_cast<std::size_t>(a.stage);
    switch (a.kind) {
      case action_kind::send_activation: return stage * microbatches + mb;
      case action_kind::recv_activation: return (stage - 1) * microbatches + mb;
      case action_kind::send_gradient: return gradient_offset + (stage - 1) * microbatches + mb;
      default: return gradient_offset + stage * microbatches + mb;  // recv_gradient
    }
  }
  /// The send and the receive of a message.
  [[nodiscard]] std::pair<action, action> ends(std::size_t key) const noexcept {
    const bool gradient = key >= gradient_offset;
    const std::size_t k = gradient ? key - gradient_offset : key;
    const auto b = static_cast<std::int32_t>(k / microbatches);
    const auto mb = static_cast<std::int32_t>(k % microbatches);
    if (gradient) return {{b + 1, mb, action_kind::send_gradient}, {b, mb, action_kind::recv_gradient}};
    return {{b, mb, action_kind::send_activation}, {b + 1, mb, action_kind::recv_activation}};
  }
};

/// The other end of a transfer: the receive of a send, the send of a receive.
inline action counterpart(const action& a) noexcept {
  switch (a.kind) {
    case action_kind::send_activation: return {a.stage + 1, a.microbatch, action_kind::recv_activation};
    case action_kind::recv_activation: return {a.stage - 1, a.microbatch, action_kind::send_activation};
    case action_kind::send_gradient: return {a.stage - 1, a.microbatch, action_kind::recv_gradient};
    default: return {a.stage + 1, a.microbatch, action_kind::send_gradient};  // recv_gradient
  }
}

/// The stage at the other end of a transfer action.
inline int peer_stage(const action& a) noexcept { return counterpart(a).stage; }

/// One channel per ordered pair of ranks that exchange messages: every message from rank A to rank
/// B, activation or gradient, travels on A->B in order.
class channel_map {
 public:
  explicit channel_map(const placement& place) {
    const auto& rank_of = place.rank_table();
    const std::size_t stages = rank_of.size();
    forward_.assign(stages, -1);
    backward_.assign(stages, -1);
    std::unordered_map<long long, int> ids;
    const auto id = [&](int from, int to) {
      const long long pair = static_cast<long long>(from) * place.num_ranks() + to;
      const auto [it, added] = ids.emplace(pair, static_cast<int>(ends_.size()));
      if (added) ends_.emplace_back(from, to);
      return it->second;
    };
    for (std::size_t b = 0; b + 1 < stages; ++b) {
      if (rank_of[b] == rank_of[b + 1]) continue;
      forward_[b] = id(rank_of[b], rank_of[b + 1]);
      backward_[b] = id(rank_of[b + 1], rank_of[b]);
    }
  }

  /// The channel a transfer action uses. The action must cross ranks.
  [[nodiscard]] int of(const action& a) const noexcept {
    const auto s = static_cast<std::size_t>(a.stage);
    switch (a.kind) {
      case action_kind::send_activation: return forward_[s];
      case action_kind::recv_activation: return forward_[s - 1];
      case action_kind::send_gradient: return backward_[s - 1];
      default: return backward_[s];  // recv_gradient
    }
  }
  [[nodiscard]] std::size_t size() const noexcept { return ends_.size(); }
  /// The sending and the receiving rank of a channel.
  [[nodiscard]] std::pair<int, int> ends(int channel) const { return ends_[static_cast<std::size_t>(channel)]; }

 private:
  std::vector<int> forward_;   // forward_[b]: activations from stage b to b+1
  std::vector<int> backward_;  // backward_[b]: gradients from stage b+1 to b
  std::vector<std::pair<int, int>> ends_;
};

}  // namespace ppipe::detail
