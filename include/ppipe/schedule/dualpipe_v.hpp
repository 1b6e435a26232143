#pragma once
/// @file
/// @brief DualPipeV (DeepSeek's DualPipe cut in half, Sea AI Lab): two stages per rank in a V, with
/// a forward of one stage paired with a backward of the other, so that a model can overlap the
/// two (one's communication hidden under the other's compute).

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe::schedules {

/// @brief DualPipeV. Rank r of p holds stage r (the V's way down) and stage 2p-1-r (its way up),
/// as zb_v does. Its order, for m >= 2p microbatches, runs in eight phases: forwards of the first
/// stage to fill the V; forwards of both; input gradients (I) with their W right after and the
/// second stage's forwards; the steady state of paired actions, a forward of one stage run
/// together with a full backward (B) of the other, F0&B1 then F1&B0, then the second stage's
/// backwards with F1&B0 pairs; backwards of both stages, the later half split into I and W; and
/// the deferred W's, oldest first. Each rank holds at most 2p+1 stage-microbatches of activations.
///
/// A pair is a forward marked `paired` followed directly by its backward: its receives come before
/// the pair and its sends after it, and an executor may run the two as one (overlapped where the
/// model can) or back to back. The simulator charges them back to back (F&B = F + B).
struct dualpipe_v {
  static constexpr std::string_view name = "dualpipe_v";  ///< the name make_schedule() accepts
  /// Its schedules run I and W actions: a model needs backward_input/backward_weight.
  static constexpr bool splits_backward = true;

  /// @brief Builds DualPipeV's schedule, with its transfers in place.
  /// @param params p >= 1, m >= 2p; v must be 2
  /// @return the schedule, two stages per rank in a V, with paired actions and split backwards
  /// @throws ppipe::error (invalid_argument) when p or m is below its minimum, v is not 2, or p*m
  /// exceeds 2^26
  static schedule generate(const schedule_params& params) {
    detail::check_params(params, "dualpipe_v");
    if (params.virtual_stages != 2) {
      detail::fail(errc::invalid_argument, "dualpipe_v places exactly 2 stages on each rank (a V), but v=",
                   params.virtual_stages, "; pass v=2");
    }
    const int p = params.ranks;
    const int m = params.microbatches;
    if (m < 2 * p) {
      detail::fail(errc::invalid_argument, "dualpipe_v needs m >= 2p microbatches to fill its V from both ends, "
                   "but m=", m, " with p=", p, "; use m >= ", 2 * p, " or zb_v");
    }
    const int stages = 2 * p;
    std::vector<int> rank_of(static_cast<std::size_t>(stages));
    for (int st = 0; st < stages; ++st) rank_of[static_cast<std::size_t>(st)] = st < p ? st : stages - 1 - st;
    schedule s{std::string(name), placement::custom(rank_of, p), m, schedule_mode::training, {}};
    s.ranks.resize(static_cast<std::size_t>(p));
    for (int r = 0; r < p; ++r) {
      s.ranks[static_cast<std::size_t>(r)] = rank_order(p, m, r);
    }
    return lower(std::move(s));
  }

 private:
  // Rank r's compute actions. Chunk 0 is stage r, chunk 1 stage 2p-1-r; each runs its microbatches
  // in order. A split backward's W waits in a queue and runs, oldest first, where the order asks.
  static std::vector<action> rank_order(int p, int m, int r) {
    std::vector<action> out;
    out.reserve(static_cast<std::size_t>(m) * 6);
    const int stage[2] = {r, 2 * p - 1 - r};
    int next_f[2] = {0, 0};
    int next_b[2] = {0, 0};
    std::deque<action> waiting_w;
    const auto f = [&](int c, bool paired = false) {
      action a{stage[c], next_f[c]++, action_kind::forward};
      a.paired = paired;
      out.push_back(a);
    };
    const auto b = [&](int c, bool split = false) {
      const int mb = next_b[c]++;
      if (split) {
        out.push_back({stage[c], mb, action_kind::backward_input});
        waiting_w.push_back({stage[c], mb, action_kind::backward_weight});
      } else {
        out.push_back({stage[c], mb, action_kind::backward});
      }
    };
    const auto w = [&] {
      out.push_back(waiting_w.front());
      waiting_w.pop_front();
    };
    const auto pair = [&](int fc, int bc) {
      f(fc, true);
      b(bc);
    };
    const int below = p - r - 1;  // ranks after this one
    for (int i = 0; i < 2 * below; ++i) f(0);  // fill the way down
    for (int i = 0; i <= r; ++i) {             // both ways
      f(0);
      f(1);
    }
    for (int i = 0; i < below; ++i) {  // the way up's first backwards, W at once
      b(1, true);
      w();
      f(1);
    }
    for (int i = 0; i < m - 2 * p + r + 1; ++i) {  // the steady state: pairs
      if (i == 0 && r == p - 1) {
        f(0);  // at the V's turn the two run apart, as DualPipeV has them, for a smaller bubble
        b(1);
      } else {
        pair(0, 1);
      }
      pair(1, 0);
    }
    for (int i = 0; i < below; ++i) {
      b(1);
      pair(1, 0);
    }
    // Backwards of both stages; from the middle on split, so that their W's fill the drain.
    bool split = false;
    for (int i = 0; i <= r; ++i) {
      if (i == (r + 1) / 2 && r % 2 == 1) split = true;
      b(1, split);
      if (i == (r + 1) / 2 && r % 2 == 0) split = true;
      b(0, split);
    }
    for (int i = 0; i < below; ++i) {
      w();
      b(0, true);
    }
    while (!waiting_w.empty()) w();
    return out;
  }

  // Transfers at unit-time slot boundaries, each pair's two actions in consecutive slots with
  // nothing between them (detail::lower_by_time): no send waits under the rendezvous model.
  static schedule lower(schedule compute_only) {
    const auto starts = detail::unit_start_times(compute_only);
    return detail::lower_by_time(std::move(compute_only), starts);
  }
};

}  // namespace ppipe::schedules
