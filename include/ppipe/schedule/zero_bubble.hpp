#pragma once
/// @file
/// @brief Zero-bubble schedules (Qi et al. 2023): the backward split into input gradient (I) and
/// weight gradient (W), with W moved into what would be bubble. ZB-H1 keeps 1F1B's peak
/// activation memory and cuts its bubble to (p-1)(F+I-W); ZB-V puts two stages on each rank in a V
/// and, with equal costs, leaves almost no bubble at the same peak memory.

#include <algorithm>
#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "ppipe/error.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe::schedules {

/// @brief ZB-H1. Rank r runs 1F1B's p-r-1 warm-up forwards, then pairs of a forward and an input
/// gradient (I); the W of a pair follows it only after the rank's first r pairs, so that each rank
/// keeps r W's in hand; the cool-down runs an I and a W at a time, and the W's kept in hand fill
/// the time the rank would otherwise wait for the last I's. Every rank holds at most p microbatches
/// of activations (from a forward until its W): 1F1B's peak, which 1F1B reaches on its first stage
/// only. With F = I = W the bubble is (p-1)(F+I-W) per rank against 1F1B's (p-1)(F+I+W): a
/// third of it. This is the paper's hand-made order, built for equal costs: with other costs it is
/// still valid and exact, but its bubble is not the formula's (with F = 2I = 2W it can exceed
/// 1F1B's).
///
/// Transfers sit at unit-time slot boundaries (detail::lower_by_time), so that no send waits under
/// the rendezvous model.
struct zb_h1 {
  static constexpr std::string_view name = "zb_h1";  ///< the name make_schedule() accepts
  /// Its schedules run I and W actions: a model needs backward_input/backward_weight.
  static constexpr bool splits_backward = true;

  /// @brief Builds ZB-H1's schedule, with its transfers in place.
  /// @param params p >= 1 and m >= 1; v must be 1
  /// @return the schedule, placed one stage per rank, with split backwards (I and W)
  /// @throws ppipe::error (invalid_argument) when p or m is below 1, v is not 1, or p*m exceeds 2^26
  static schedule generate(const schedule_params& params) {
    detail::check_params(params, "zb_h1");
    detail::require_one_stage_per_rank(params, "zb_h1");
    const int p = params.ranks;
    const int m = params.microbatches;
    schedule s{std::string(name), placement::looped(p), m, schedule_mode::training, {}};
    s.ranks.resize(static_cast<std::size_t>(p));
    for (int r = 0; r < p; ++r) {
      auto& list = s.ranks[static_cast<std::size_t>(r)];
      list.reserve(static_cast<std::size_t>(m) * 3);
      const int warmup = std::min(p - r - 1, m);
      int next_f = 0;
      int next_i = 0;
      int next_w = 0;
      while (next_f < warmup) list.push_back({r, next_f++, action_kind::forward});
      for (int k = 0; next_f < m; ++k) {
        list.push_back({r, next_f++, action_kind::forward});
        list.push_back({r, next_i++, action_kind::backward_input});
        if (k >= r) list.push_back({r, next_w++, action_kind::backward_weight});
      }
      while (next_i < m) {
        list.push_back({r, next_i++, action_kind::backward_input});
        list.push_back({r, next_w++, action_kind::backward_weight});
      }
      while (next_w < m) list.push_back({r, next_w++, action_kind::backward_weight});
    }
    // Transfers at unit-time boundaries. 1F1B's lowering (each receive just before its compute) is
    // valid for this order but slow under rendezvous: a W sits between a rank's send and the
    // receive its peer waits to post, so sends are held up (p=4, m=8: 33 instead of 27).
    const auto starts = detail::unit_start_times(s);
    return detail::lower_by_time(std::move(s), starts);
  }
};

/// @brief ZB-V. Rank r holds stages r and 2p-1-r, so a microbatch goes down the ranks and back up
/// (a V), and the first and the last stage share rank 0. The order is built by list scheduling
/// with unit costs: whenever a rank is free it runs, in this order of preference, the ready I with
/// the lowest microbatch (of its later stage first), else a ready forward (later stage first) if the
/// rank holds fewer than 2p stage-microbatches of activations, else its oldest pending W. Two
/// stages per rank are each half of a 1F1B stage, so 2p of them are 1F1B's peak of p microbatches.
/// With F = I = W (per stage) the bubble per rank is the pipeline's fill, (p-1)F, which no
/// schedule can beat, for p <= 4 and every m >= p, and at most twice the fill beyond; 1F1B over
/// the same layers idles 6(p-1)F.
struct zb_v {
  static constexpr std::string_view name = "zb_v";  ///< the name make_schedule() accepts
  /// Its schedules run I and W actions: a model needs backward_input/backward_weight.
  static constexpr bool splits_backward = true;

  /// @brief Builds ZB-V's schedule, with its transfers in place.
  /// @param params p >= 1 and m >= 1; v must be 2
  /// @return the schedule on the V placement of 2p stages, with split backwards (I and W)
  /// @throws ppipe::error (invalid_argument) when p or m is below 1, v is not 2, or 2p*m exceeds 2^26
  static schedule generate(const schedule_params& params) {
    detail::check_params(params, "zb_v");
    if (params.virtual_stages != 2) {
      detail::fail(errc::invalid_argument, "zb_v places exactly 2 stages on each rank (a V), but v=",
                   params.virtual_stages, "; pass v=2");
    }
    const int p = params.ranks;
    const int m = params.microbatches;
    const int stages = 2 * p;
    std::vector<int> rank_of(static_cast<std::size_t>(stages));
    for (int st = 0; st < stages; ++st) rank_of[static_cast<std::size_t>(st)] = st < p ? st : stages - 1 - st;
    schedule s{std::string(name), placement::custom(rank_of, p), m, schedule_mode::training, {}};
    s.ranks.resize(static_cast<std::size_t>(p));

    // Unit-cost list scheduling. done[kind][stage][mb]: the time the action ended (-1: not yet).
    constexpr long not_yet = -1;
    const auto idx = [m](int st, int mb) { return static_cast<std::size_t>(st) * static_cast<std::size_t>(m) + static_cast<std::size_t>(mb); };
    std::vector<long> f_done(static_cast<std::size_t>(stages) * static_cast<std::size_t>(m), not_yet);
    std::vector<long> i_done(f_done.size(), not_yet);
    struct rank_state {
      long free_at = 0;
      int alive = 0;                  // stage-microbatches whose activations are held (F done, W not)
      int next_f[2] = {0, 0};         // per chunk (0: stage r, 1: stage 2p-1-r)
      int next_i[2] = {0, 0};
      std::deque<action> pending_w;   // W's whose I has run, oldest first
      long w_end = -1;                // a running W frees its microbatch when it ends
    };
    std::vector<rank_state> ranks(static_cast<std::size_t>(p));
    const int limit = 2 * p;
    const std::size_t total = static_cast<std::size_t>(stages) * static_cast<std::size_t>(m) * 3;
    std::size_t placed = 0;
    for (long t = 0; placed < total; ++t) {
      if (t > static_cast<long>(total) * 4 + 16) {
        detail::fail(errc::invalid_schedule, "zb_v could not place every action for p=", p, ", m=", m,
                     "; this is a bug in ppipe's zb_v generator");
      }
      for (int r = 0; r < p; ++r) {
        rank_state& rs = ranks[static_cast<std::size_t>(r)];
        if (rs.w_end >= 0 && rs.w_end <= t) {
          --rs.alive;
          rs.w_end = -1;
        }
        if (rs.free_at > t) continue;
        const int stage_of[2] = {r, stages - 1 - r};
        auto& list = s.ranks[static_cast<std::size_t>(r)];
        const auto run = [&](action a) {
          list.push_back(a);
          ++placed;
          rs.free_at = t + 1;
          if (a.kind == action_kind::forward) {
            f_done[idx(a.stage, a.microbatch)] = t + 1;
            ++rs.alive;
          } else if (a.kind == action_kind::backward_input) {
            i_done[idx(a.stage, a.microbatch)] = t + 1;
            rs.pending_w.push_back({a.stage, a.microbatch, action_kind::backward_weight});
          } else {
            rs.w_end = t + 1;
          }
        };
        // A ready I: the lowest microbatch, the later stage first.
        int best = -1;
        for (int c = 1; c >= 0; --c) {
          const int st = stage_of[c];
          const int mb = rs.next_i[c];
          if (mb >= m) continue;
          const long f = f_done[idx(st, mb)];
          const long need = st == stages - 1 ? f : i_done[idx(st + 1, mb)];
          if (f == not_yet || need == not_yet || need > t) continue;
          if (best < 0 || mb < rs.next_i[best]) best = c;
        }
        if (best >= 0) {
          run({stage_of[best], rs.next_i[best]++, action_kind::backward_input});
          continue;
        }
        // A ready forward, the later stage first, within the memory limit.
        if (rs.alive < limit) {
          bool ran = false;
          for (int c = 1; c >= 0 && !ran; --c) {
            const int st = stage_of[c];
            const int mb = rs.next_f[c];
            if (mb >= m) continue;
            if (st > 0 && (f_done[idx(st - 1, mb)] == not_yet || f_done[idx(st - 1, mb)] > t)) continue;
            run({st, rs.next_f[c]++, action_kind::forward});
            ran = true;
          }
          if (ran) continue;
        }
        if (!rs.pending_w.empty()) {
          const action w = rs.pending_w.front();
          rs.pending_w.pop_front();
          run(w);
        }
      }
    }
    const auto starts = detail::unit_start_times(s);
    return detail::lower_by_time(std::move(s), starts);
  }
};

}  // namespace ppipe::schedules
