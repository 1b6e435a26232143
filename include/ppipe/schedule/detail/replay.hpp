#pragma once
/// @file
/// @brief Replays a structurally sound schedule as its ranks would run it, under one of the two
/// transfer models. The validator uses it to find deadlocks, the simulator to time every action.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ppipe/schedule/detail/channels.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe::detail {

/// Where each rank stopped. For a rank that finished, pc == posted_end == its list's size. For a
/// stuck rank, pc is the receive (buffered) or the start of the transfer group (rendezvous) it
/// waits in, and posted_end the end of that run of transfers, which it has posted.
struct replay_result {
  std::vector<std::size_t> pc;
  std::vector<std::size_t> posted_end;
  bool finished = true;
};

/// Hooks a replay calls, in an order consistent with each rank's list:
///   on_compute(rank, step, action)   a forward or backward runs
///   buffered:   on_send(rank, key)   a message is posted;   on_recv(rank, key)  a receive completes
///   rendezvous: on_post(rank)        a group is posted;     on_match(from, to)  a message moves;
///               on_group_done(rank)  every transfer of the rank's group has met its peer
struct no_hooks {
  void on_compute(int, int, const action&) noexcept {}
  void on_send(int, std::size_t) noexcept {}
  void on_recv(int, std::size_t) noexcept {}
  void on_post(int) noexcept {}
  void on_match(int, int) noexcept {}
  void on_group_done(int) noexcept {}
};

/// Sends never block: reaching a run of consecutive transfers, a rank posts all of its sends, then
/// waits in each of its receives until that receive's send has been posted.
template <class Hooks>
replay_result replay_buffered(const schedule& s, Hooks& hooks) {
  const std::size_t p = s.ranks.size();
  const std::vector<int>& rank_of = s.place.rank_table();
  const message_keys keys(s.num_stages(), s.microbatches);
  constexpr std::size_t none = static_cast<std::size_t>(-1);

  std::vector<std::uint8_t> sent(keys.size(), 0);
  std::vector<std::size_t> waits_for(p, none);
  replay_result result{std::vector<std::size_t>(p, 0), std::vector<std::size_t>(p, 0), true};
  std::vector<std::size_t> ready;
  ready.reserve(p);
  for (std::size_t r = p; r-- > 0;) ready.push_back(r);

  while (!ready.empty()) {
    const std::size_t r = ready.back();
    ready.pop_back();
    const auto& list = s.ranks[r];
    const int rank = static_cast<int>(r);
    std::size_t& posted = result.posted_end[r];  // the sends of [pc, posted) are out already
    std::size_t step = result.pc[r];
    for (; step < list.size(); ++step) {
      const action& a = list[step];
      if (is_compute(a.kind)) {
        hooks.on_compute(rank, static_cast<int>(step), a);
        continue;
      }
      if (posted <= step) {  // a new run of transfers: out go all of its sends
        for (posted = step; posted < list.size() && is_transfer(list[posted].kind); ++posted) {
          const action& t = list[posted];
          if (!is_send(t.kind)) continue;
          const std::size_t key = keys.of(t);
          sent[key] = 1;
          hooks.on_send(rank, key);
          const auto peer = static_cast<std::size_t>(rank_of[static_cast<std::size_t>(peer_stage(t))]);
          if (waits_for[peer] == key) {
            waits_for[peer] = none;
            ready.push_back(peer);
          }
        }
      }
      if (is_send(a.kind)) continue;
      const std::size_t key = keys.of(a);
      if (sent[key] == 0) {
        waits_for[r] = key;
        break;
      }
      hooks.on_recv(rank, key);
    }
    result.pc[r] = step;
    posted = std::max(posted, step);
  }
  for (std::size_t r = 0; r < p; ++r) {
    if (result.pc[r] < s.ranks[r].size()) result.finished = false;
  }
  return result;
}

/// Each run of consecutive transfers is a group posted at once; the rank goes on when all of them
/// have met their peers. A channel's k-th message moves once its k-th send and k-th receive are
/// both posted (the structural checks made sure they are the same message).
template <class Hooks>
replay_result replay_rendezvous(const schedule& s, const channel_map& channels, Hooks& hooks) {
  const std::size_t p = s.ranks.size();
  std::vector<std::size_t> sends(channels.size(), 0), recvs(channels.size(), 0), moved(channels.size(), 0);
  std::vector<std::size_t> waiting(p, 0);  // transfers of the rank's current group not yet moved
  replay_result result{std::vector<std::size_t>(p, 0), std::vector<std::size_t>(p, 0), true};
  std::vector<std::size_t> ready;
  ready.reserve(p);
  for (std::size_t r = p; r-- > 0;) ready.push_back(r);
  std::vector<int> touched;

  const auto move = [&](int c) {
    const auto ch = static_cast<std::size_t>(c);
    const auto [from, to] = channels.ends(c);
    while (moved[ch] < sends[ch] && moved[ch] < recvs[ch]) {
      ++moved[ch];
      hooks.on_match(from, to);
      if (--waiting[static_cast<std::size_t>(from)] == 0) ready.push_back(static_cast<std::size_t>(from));
      if (--waiting[static_cast<std::size_t>(to)] == 0) ready.push_back(static_cast<std::size_t>(to));
    }
  };

  while (!ready.empty()) {
    const std::size_t r = ready.back();
    ready.pop_back();
    const auto& list = s.ranks[r];
    const int rank = static_cast<int>(r);
    std::size_t& pc = result.pc[r];
    std::size_t& end = result.posted_end[r];
    if (pc < end) {  // the group this rank waited in is complete
      hooks.on_group_done(rank);
      pc = end;
    }
    while (pc < list.size() && is_compute(list[pc].kind)) {
      hooks.on_compute(rank, static_cast<int>(pc), list[pc]);
      ++pc;
    }
    end = pc;
    if (pc == list.size()) continue;
    hooks.on_post(rank);
    touched.clear();
    for (; end < list.size() && is_transfer(list[end].kind); ++end) {
      const int c = channels.of(list[end]);
      ++(is_send(list[end].kind) ? sends : recvs)[static_cast<std::size_t>(c)];
      ++waiting[r];
      touched.push_back(c);
    }
    for (const int c : touched) move(c);
  }
  for (std::size_t r = 0; r < p; ++r) {
    if (result.pc[r] < s.ranks[r].size()) result.finished = false;
  }
  return result;
}

/// Runs the replay of `model`.
template <class Hooks>
replay_result replay(const schedule& s, transfer_model model, Hooks& hooks) {
  if (model == transfer_model::buffered) return replay_buffered(s, hooks);
  const channel_map channels(s.place);
  return replay_rendezvous(s, channels, hooks);
}

}  // namespace ppipe::detail
