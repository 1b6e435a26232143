#pragma once
/// @file
/// @brief Replays a structurally sound schedule as its ranks would run it, with sends that never
/// block and receives that wait for their send. The validator uses it to find deadlocks, the
/// simulator to time every action.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ppipe/schedule/schedule.hpp"

namespace ppipe::detail {

/// Where each rank stopped: pc[r] == ranks[r].size() for a rank that finished, otherwise the step
/// of the receive it waits on.
struct replay_result {
  std::vector<std::size_t> pc;
  bool finished = true;
};

/// Identifies a message by its boundary and microbatch. Activations crossing from stage b to b+1
/// and gradients crossing from b+1 to b use key b*m + mb, gradients offset by stages*m.
struct message_keys {
  std::size_t microbatches;
  std::size_t gradient_offset;

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
};

/// Runs `s` to completion or deadlock. The schedule must have passed the structural checks
/// (indices in range, every transfer crossing ranks, every receive with its send). Hooks:
///   on_compute(rank, step, action)   a forward or backward runs
///   on_send(rank, key)               a message is posted
///   on_recv(rank, key)               a receive completes
template <class Hooks>
replay_result replay(const schedule& s, const std::vector<int>& rank_of, Hooks& hooks) {
  const std::size_t p = s.ranks.size();
  const auto stages = static_cast<std::size_t>(s.num_stages());
  const message_keys keys{static_cast<std::size_t>(s.microbatches),
                          stages * static_cast<std::size_t>(s.microbatches)};
  constexpr std::size_t none = static_cast<std::size_t>(-1);

  std::vector<std::uint8_t> sent(2 * keys.gradient_offset, 0);
  std::vector<std::size_t> waits_for(p, none);
  replay_result result{std::vector<std::size_t>(p, 0), true};
  std::vector<std::size_t> ready;
  ready.reserve(p);
  for (std::size_t r = p; r-- > 0;) ready.push_back(r);

  while (!ready.empty()) {
    const std::size_t r = ready.back();
    ready.pop_back();
    const auto& list = s.ranks[r];
    const int rank = static_cast<int>(r);
    std::size_t step = result.pc[r];
    for (; step < list.size(); ++step) {
      const action& a = list[step];
      if (is_compute(a.kind)) {
        hooks.on_compute(rank, static_cast<int>(step), a);
        continue;
      }
      const std::size_t key = keys.of(a);
      if (is_send(a.kind)) {
        sent[key] = 1;
        hooks.on_send(rank, key);
        const int peer_stage = a.kind == action_kind::send_activation ? a.stage + 1 : a.stage - 1;
        const auto peer = static_cast<std::size_t>(rank_of[static_cast<std::size_t>(peer_stage)]);
        if (waits_for[peer] == key) {
          waits_for[peer] = none;
          ready.push_back(peer);
        }
      } else if (sent[key] != 0) {
        hooks.on_recv(rank, key);
      } else {
        waits_for[r] = key;
        break;
      }
    }
    result.pc[r] = step;
  }
  for (std::size_t r = 0; r < p; ++r) {
    if (result.pc[r] < s.ranks[r].size()) result.finished = false;
  }
  return result;
}

}  // namespace ppipe::detail
