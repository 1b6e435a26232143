#pragma once
/// @file
/// @brief The search behind the balanced and heterogeneous partitioners: prefix sums, a greedy
/// feasibility probe, and bisection over the bit patterns of doubles.
///
/// A stage's time is computed one way everywhere, (C[j] - C[i]) / speed, from the prefix sums C of
/// the layer costs, and its memory as (P[j] - P[i]) + in_flight * (A[j] - A[i]). Both only grow as
/// the stage takes more layers. A stage that recomputes adds the forward of the layers whose outputs
/// its policy lets go to its time, and bounds its memory by the smaller of that and held microbatches
/// in full plus stashed ones' kept inputs, from prefix sums with a stride of k under every(k).
/// Those grow as the stage ends later but not always as it starts earlier (the kept layers move),
/// and the probes below assume both: such problems go to a dynamic programme over (stage, end)
/// instead, exact whatever the figures do (split_tables::monotone()). Whether some split keeps every stage within a time bound B (and its
/// memory) is then decided exactly by the probes below, and the smallest double B that passes,
/// found by bisecting bit patterns, is the optimal bottleneck itself, not an approximation.
///
/// The probe fills stages in order. When every single layer fits on every stage, the set of layers
/// at which stage k can end is an interval, and the greedy rule "each stage takes as many layers as
/// it may" is exact. When some layer fits on some stages only (a slow device, a small memory), that
/// set has holes and the greedy rule can fail where a split exists, so the probe tracks the whole
/// set as a list of intervals instead (O(S * L) per probe instead of O(S log L)).
///
/// Stages that share a rank's memory (several stages per rank and a finite capacity) are coupled,
/// and no probe here is exact for that. The search then tries the split that is optimal for time
/// alone (optimal if it fits), fixed shares of each rank's memory per stage (each share exact in
/// itself), and the greedy probe that tracks each rank's memory, and keeps the best; it says when
/// the result is not proven optimal (split_result::optimal).

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "ppipe/partition/partition.hpp"
#include "ppipe/partition/problem.hpp"

namespace ppipe::detail {

/// The smallest double x in (lo, hi] with feasible(x), for x >= 0, given that feasible only grows
/// with x, feasible(hi) holds and feasible(lo) does not (not evaluated). Non-negative doubles order
/// like their bit patterns, so this bisects those: at most 64 probes, and exact.
template <class Feasible>
double smallest_feasible(double lo, double hi, Feasible&& feasible) {
  auto a = std::bit_cast<std::uint64_t>(lo);
  auto b = std::bit_cast<std::uint64_t>(hi);
  while (b - a > 1) {
    const std::uint64_t mid = a + (b - a) / 2;
    if (feasible(std::bit_cast<double>(mid))) b = mid; else a = mid;
  }
  return std::bit_cast<double>(b);
}

/// Prefix sums and per-stage figures of a partition problem.
struct split_tables {
  int layers = 0;
  int stages = 0;
  std::vector<double> cost, params, acts;  // prefix sums, layers + 1 entries
  std::vector<double> forward;             // prefix sums of forward times, where a stage recomputes
  std::vector<int> keep_every;             // per stage: recompute_policy::interval(); 1: none, 0: full
  std::vector<double> held, stashed;       // per stage: peak held and stashed microbatches
  std::vector<double> layer_forward, layer_acts;  // per layer, where a stage recomputes
  // Per interval k >= 2 in use: sums with stride k, S[x] = v[x] + S[x - k], of forwards and activations.
  struct strided {
    int k;
    std::vector<double> forward, acts;
  };
  std::vector<strided> stride;
  std::vector<double> speed;               // per stage: its rank's speed (1 when ignored)
  std::vector<double> in_flight;           // per stage
  std::vector<int> rank;                   // per stage
  std::vector<double> capacity;            // per rank (infinity when ignored)
  std::vector<double> stage_capacity;      // per stage: its rank's, or its share when coupled
  bool memory_limited = false;             // some rank has a finite capacity
  bool coupled = false;                    // ... and holds more than one stage
  double largest_layer = 0;                // the largest single-layer cost, C[l+1] - C[l]
  std::vector<double> largest_layer_memory;  // per stage: the most memory one layer takes there

  split_tables(const partition_problem& pb, bool use_devices)
      : layers(pb.num_layers()), stages(pb.num_stages()) {
    const auto L = static_cast<std::size_t>(layers);
    cost.assign(L + 1, 0.0);
    params.assign(L + 1, 0.0);
    acts.assign(L + 1, 0.0);
    for (std::size_t i = 0; i < L; ++i) {
      cost[i + 1] = cost[i] + pb.cost(i);
      params[i + 1] = params[i] + pb.layers[i].parameter_memory;
      acts[i + 1] = acts[i] + pb.layers[i].activation_memory;
      largest_layer = std::max(largest_layer, cost[i + 1] - cost[i]);
    }
    if (!std::isfinite(cost[L])) {
      fail(errc::invalid_argument, "the layer costs add up to ", cost[L],
           ", which overflows; measure them in a larger unit of time");
    }
    bool recomputes = false;
    for (int st = 0; st < stages; ++st) {
      keep_every.push_back(pb.training() ? pb.policy(st).interval() : 1);
      held.push_back(static_cast<double>(pb.held_of(st)));
      stashed.push_back(static_cast<double>(pb.stashed_of(st)));
      recomputes = recomputes || keep_every.back() != 1;
    }
    if (recomputes) {
      forward.assign(L + 1, 0.0);
      for (std::size_t i = 0; i < L; ++i) {
        forward[i + 1] = forward[i] + pb.layers[i].forward;
        layer_forward.push_back(pb.layers[i].forward);
        layer_acts.push_back(pb.layers[i].activation_memory);
      }
      for (const int k : keep_every) {
        if (k < 2 || std::any_of(stride.begin(), stride.end(), [&](const strided& e) { return e.k == k; })) continue;
        strided e{k, layer_forward, layer_acts};
        for (std::size_t x = static_cast<std::size_t>(k); x < L; ++x) {
          e.forward[x] += e.forward[x - static_cast<std::size_t>(k)];
          e.acts[x] += e.acts[x - static_cast<std::size_t>(k)];
        }
        stride.push_back(std::move(e));
      }
    }
    const int R = pb.num_ranks();
    capacity.assign(static_cast<std::size_t>(R), std::numeric_limits<double>::infinity());
    std::vector<int> stages_held(static_cast<std::size_t>(R), 0);  // per rank
    for (int s = 0; s < stages; ++s) {
      const int r = pb.place.rank_of(s);
      rank.push_back(r);
      speed.push_back(use_devices ? pb.device(r).speed : 1.0);
      in_flight.push_back(static_cast<double>(pb.in_flight[static_cast<std::size_t>(s)]));
      ++stages_held[static_cast<std::size_t>(r)];
    }
    if (use_devices) {
      for (int r = 0; r < R; ++r) {
        const double cap = pb.device(r).memory;
        capacity[static_cast<std::size_t>(r)] = cap;
        if (std::isfinite(cap)) {
          memory_limited = true;
          coupled = coupled || stages_held[static_cast<std::size_t>(r)] > 1;
        }
      }
    }
    for (int s = 0; s < stages; ++s) stage_capacity.push_back(capacity[static_cast<std::size_t>(rank[static_cast<std::size_t>(s)])]);
    if (memory_limited) {  // one pass over the layers per distinct set of counts
      struct seen_counts {
        double in_flight, held, stashed, most;
      };
      std::vector<seen_counts> seen;
      for (int s = 0; s < stages; ++s) {
        const auto st = static_cast<std::size_t>(s);
        auto it = std::find_if(seen.begin(), seen.end(), [&](const seen_counts& e) {
          return e.in_flight == in_flight[st] && e.held == held[st] && e.stashed == stashed[st];
        });
        if (it == seen.end()) {  // one layer keeps its input under any policy: the policy does not matter
          double most = 0;
          for (int l = 0; l < layers; ++l) most = std::max(most, memory(s, l, l + 1));
          seen.push_back({in_flight[st], held[st], stashed[st], most});
          it = seen.end() - 1;
        }
        largest_layer_memory.push_back(it->most);
      }
    }
  }

  [[nodiscard]] double time(int stage, int i, int j) const {
    const auto st = static_cast<std::size_t>(stage);
    double c = cost[static_cast<std::size_t>(j)] - cost[static_cast<std::size_t>(i)];
    const int k = keep_every[st];
    if (k != 1 && j - 1 > i) {  // R: the forward of layers [i, j-1), less those whose output is kept
      c += forward[static_cast<std::size_t>(j - 1)] - forward[static_cast<std::size_t>(i)];
      if (k >= 2) c -= strided_sum(k, true, i + k - 1, j - 2);
    }
    return c / speed[st];
  }
  [[nodiscard]] double memory(int stage, int i, int j) const {
    const auto st = static_cast<std::size_t>(stage);
    const auto a = static_cast<std::size_t>(i);
    const auto b = static_cast<std::size_t>(j);
    const double all = in_flight[st] * (acts[b] - acts[a]);
    if (stashed[st] == 0) return (params[b] - params[a]) + all;
    // What a stashed microbatch keeps: layer i's input, and every k-th after it.
    const int k = keep_every[st];
    const double kept = layer_acts[a] + (k >= 2 ? strided_sum(k, false, i + k, j - 1) : 0.0);
    return (params[b] - params[a]) + std::min(all, held[st] * (acts[b] - acts[a]) + stashed[st] * kept);
  }
  // The forwards (or activations) of layers first, first + k, ... up to last; 0 when first > last.
  [[nodiscard]] double strided_sum(int k, bool forwards, int first, int last) const {
    if (first > last) return 0.0;
    const auto& e = *std::find_if(stride.begin(), stride.end(), [&](const strided& x) { return x.k == k; });
    const std::vector<double>& v = forwards ? e.forward : e.acts;
    const int end = first + (last - first) / k * k;
    return v[static_cast<std::size_t>(end)] - (first >= k ? v[static_cast<std::size_t>(first - k)] : 0.0);
  }
  /// Whether every stage's time and memory only grow as it takes more layers at either end, as
  /// the probes need: not under every(k) (the kept layers move with the start), nor where memory
  /// limits the split and a stage stashes (a stash keeps its first layer's input).
  [[nodiscard]] bool monotone() const {
    for (std::size_t st = 0; st < keep_every.size(); ++st) {
      if (keep_every[st] > 1 || (memory_limited && stashed[st] > 0)) return false;
    }
    return true;
  }
  /// The same tables with memory ignored: the search for time alone.
  [[nodiscard]] split_tables without_memory() const {
    split_tables out = *this;
    out.memory_limited = false;
    out.coupled = false;
    return out;
  }
  /// An upper bound on any stage's time: every layer on the slowest stage.
  [[nodiscard]] double time_bound() const {
    double slowest = std::numeric_limits<double>::infinity();
    for (double v : speed) slowest = std::min(slowest, v);
    return (cost.back() + (forward.empty() ? 0.0 : forward.back())) / slowest;
  }
  /// An upper bound on any rank's memory: every layer, with the largest in-flight count.
  [[nodiscard]] double memory_bound() const {
    double k = 0;
    for (double v : in_flight) k = std::max(k, v);  // memory() takes at most all of in_flight
    return params.back() + k * acts.back();
  }
};

/// The rules of one probe: a time bound and a memory slack (extra memory every rank is granted,
/// which the search for the least shortfall raises until a split fits).
struct limits {
  double bound;
  double slack;
};

/// Does stage k fit on layers [i, j)? Coupled: within its rank's capacity, `used` already taken;
/// otherwise within its own stage capacity.
inline bool fits(const split_tables& t, int k, int i, int j, limits lim, double used = 0.0) {
  if (!(t.time(k, i, j) <= lim.bound)) return false;
  if (!t.memory_limited) return true;
  const auto sk = static_cast<std::size_t>(k);
  const double cap = t.coupled ? t.capacity[static_cast<std::size_t>(t.rank[sk])] : t.stage_capacity[sk];
  return used + t.memory(k, i, j) <= cap + lim.slack;
}

/// The furthest end j in [i+1, last] at which stage k, starting at layer i, still fits; i if none.
inline int reach(const split_tables& t, int k, int i, int last, limits lim, double used = 0.0) {
  int lo = i;
  int hi = last;
  while (lo < hi) {
    const int mid = lo + (hi - lo + 1) / 2;
    if (fits(t, k, i, mid, lim, used)) lo = mid; else hi = mid - 1;
  }
  return lo;
}

/// The last layer stage k may end at, leaving one layer for each later stage.
inline int last_end(const split_tables& t, int k) { return t.layers - (t.stages - 1 - k); }

/// True when every single layer fits on every stage: the greedy probe is then exact.
inline bool singles_fit(const split_tables& t, limits lim) {
  for (int k = 0; k < t.stages; ++k) {
    const auto sk = static_cast<std::size_t>(k);
    if (!(t.largest_layer / t.speed[sk] <= lim.bound)) return false;
    if (t.memory_limited &&
        !(t.largest_layer_memory[sk] <= t.stage_capacity[sk] + lim.slack)) {
      return false;
    }
  }
  return true;
}

/// The position j in [lo, hi] whose prefix cost C[j] is nearest `target` (the lower on a tie).
inline int nearest(const split_tables& t, int lo, int hi, double target) {
  const auto first = t.cost.begin() + lo;
  const auto last = t.cost.begin() + hi + 1;
  auto it = std::lower_bound(first, last, target);
  if (it == last || (it != first && target - *(it - 1) <= *it - target)) --it;
  return static_cast<int>(it - t.cost.begin());
}

/// Where a stage should end to take its fair share of the layers left: the level that the stages
/// left would share, per unit of speed, once each layer too large to share (larger than that level
/// on an average stage) is set aside with a stage of its own. Without that, one huge last layer
/// would make the first stages take everything else.
class fair_share {
 public:
  explicit fair_share(const split_tables& t) : t_(t) {
    by_cost_.resize(static_cast<std::size_t>(t.layers));
    for (int l = 0; l < t.layers; ++l) by_cost_[static_cast<std::size_t>(l)] = l;
    std::sort(by_cost_.begin(), by_cost_.end(), [&](int a, int b) { return layer(a) > layer(b); });
    for (double v : t.speed) speed_left_ += v;
  }

  /// The prefix cost at which stage k, starting at layer i, should end.
  [[nodiscard]] double target(int k, int i) const {
    const int stages_left = t_.stages - k;
    const double avg_speed = speed_left_ / stages_left;
    double rest = t_.cost.back() - t_.cost[static_cast<std::size_t>(i)];
    int set_aside = 0;
    double level = rest / speed_left_;
    for (int l : by_cost_) {
      if (set_aside + 1 >= stages_left || layer(l) <= level * avg_speed) break;
      if (l < i) continue;  // already placed
      rest -= layer(l);
      ++set_aside;
      level = rest / (speed_left_ - set_aside * avg_speed);
    }
    return t_.cost[static_cast<std::size_t>(i)] + level * t_.speed[static_cast<std::size_t>(k)];
  }
  /// Stage k is placed.
  void done(int k) { speed_left_ -= t_.speed[static_cast<std::size_t>(k)]; }

 private:
  [[nodiscard]] double layer(int l) const {
    return t_.cost[static_cast<std::size_t>(l) + 1] - t_.cost[static_cast<std::size_t>(l)];
  }
  const split_tables& t_;
  std::vector<int> by_cost_;
  double speed_left_ = 0;
};

/// Greedy probe: stages in order, each taking as many layers as fit. With `low_start` (the earliest
/// feasible start of every stage, from suffix_starts()) each stage instead ends nearest its fair
/// share within what keeps the rest feasible: the same bound, with the slack spread. Tracks each
/// rank's used memory, so it also serves stages that share a rank. Writes the cut points to `bounds`.
inline bool greedy(const split_tables& t, limits lim, std::vector<int>* bounds = nullptr,
                   const std::vector<int>* low_start = nullptr) {
  std::vector<double> used;
  if (t.memory_limited) used.assign(t.capacity.size(), 0.0);
  if (bounds != nullptr) bounds->assign(1, 0);
  std::optional<fair_share> fair;
  if (low_start != nullptr) fair.emplace(t);
  int i = 0;
  for (int k = 0; k < t.stages; ++k) {
    const auto r = static_cast<std::size_t>(t.rank[static_cast<std::size_t>(k)]);
    const double u = t.coupled ? used[r] : 0.0;  // uncoupled stages have capacities of their own
    int end = reach(t, k, i, last_end(t, k), lim, u);
    if (end == i) return false;
    if (k == t.stages - 1) {
      if (end != t.layers) return false;
    } else if (fair) {
      const int earliest = std::max(i + 1, (*low_start)[static_cast<std::size_t>(k + 1)]);
      if (earliest <= end) end = nearest(t, earliest, end, fair->target(k, i));
      fair->done(k);
    }
    if (t.memory_limited) used[r] += t.memory(k, i, end);
    if (bounds != nullptr) bounds->push_back(end);
    i = end;
  }
  return true;
}

/// For the greedy probe's balanced cut: the earliest layer at which each stage may start so that
/// it and the later stages can still hold the rest (filled from the last stage back). Valid where
/// singles_fit() holds and stages do not share memory.
inline std::vector<int> suffix_starts(const split_tables& t, limits lim) {
  std::vector<int> start(static_cast<std::size_t>(t.stages), 0);
  int end = t.layers;
  for (int k = t.stages - 1; k >= 1; --k) {
    int lo = k;  // leave one layer for each earlier stage
    int hi = end - 1;
    while (lo < hi) {  // the earliest start that fits
      const int mid = lo + (hi - lo) / 2;
      if (fits(t, k, mid, end, lim)) hi = mid; else lo = mid + 1;
    }
    start[static_cast<std::size_t>(k)] = lo;
    end = lo;
  }
  return start;
}

/// Exact probe for stages that do not share memory, whatever fits where: tracks, stage by stage,
/// the set of layers at which the stages so far can end, as sorted disjoint intervals. From starts
/// [a, b], stage k can end at e in [a+1, b+1] exactly when layer e-1 alone fits on it, and at e in
/// [b+2, reach(b)] (the smallest range ending at e starts at b). With `bounds`, walks back from
/// the last layer choosing each stage's start nearest its fair share of what is left before it.
inline bool exact(const split_tables& t, limits lim, std::vector<int>* bounds = nullptr) {
  using span = std::pair<int, int>;
  std::vector<std::vector<span>> history;
  std::vector<span> now{{0, 0}};
  std::vector<span> next;
  const auto add = [&](int lo, int hi) {
    if (lo > hi) return;
    if (!next.empty() && lo <= next.back().second + 1) {
      next.back().second = std::max(next.back().second, hi);
    } else {
      next.emplace_back(lo, hi);
    }
  };
  for (int k = 0; k < t.stages; ++k) {
    if (bounds != nullptr) history.push_back(now);
    const int last = last_end(t, k);
    next.clear();
    for (auto [a, b] : now) {
      b = std::min(b, last - 1);
      for (int l = a; l <= b; ++l) {
        if (fits(t, k, l, l + 1, lim)) add(l + 1, l + 1);
      }
      if (a <= b) add(b + 2, reach(t, k, b, last, lim));
    }
    if (next.empty()) return false;
    now.swap(next);
  }
  if (now.back().second != t.layers) return false;
  if (bounds == nullptr) return true;

  bounds->assign(static_cast<std::size_t>(t.stages) + 1, 0);
  int end = t.layers;
  double speed_before = 0;
  for (double v : t.speed) speed_before += v;
  for (int k = t.stages - 1; k >= 0; --k) {
    (*bounds)[static_cast<std::size_t>(k) + 1] = end;
    // Starts i with fits(k, i, end) form [lowest, end-1]; choose one the stages before can reach.
    int lo = 0;
    int hi = end - 1;
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      if (fits(t, k, mid, end, lim)) hi = mid; else lo = mid + 1;
    }
    const double share = t.speed[static_cast<std::size_t>(k)] / speed_before;
    const double target = t.cost[static_cast<std::size_t>(end)] * (1 - share);
    int best = -1;
    for (auto [a, b] : history[static_cast<std::size_t>(k)]) {
      a = std::max(a, lo);
      b = std::min(b, end - 1);
      if (a > b) continue;
      const int j = nearest(t, a, b, target);
      const auto dist = [&](int x) { return std::abs(t.cost[static_cast<std::size_t>(x)] - target); };
      if (best < 0 || dist(j) < dist(best)) best = j;
    }
    end = best;  // never -1: `end` was reached from some start of stage k
    speed_before -= t.speed[static_cast<std::size_t>(k)];
  }
  return true;
}

/// Whether some split keeps every stage within `lim`: exact unless stages share a rank's memory.
inline bool feasible(const split_tables& t, limits lim) {
  if (t.coupled || singles_fit(t, lim)) return greedy(t, lim);
  return exact(t, lim);
}

/// A split within `lim` (which must be feasible), with the slack spread fairly where the search
/// allows it.
inline std::vector<int> cut(const split_tables& t, limits lim) {
  std::vector<int> bounds;
  if (t.coupled) {
    greedy(t, lim, &bounds);
  } else if (singles_fit(t, lim)) {
    const std::vector<int> low = suffix_starts(t, lim);
    greedy(t, lim, &bounds, &low);
  } else {
    exact(t, lim, &bounds);
  }
  return bounds;
}

/// The outcome of a search.
struct split_result {
  std::vector<int> bounds;  // the cut points
  double bottleneck = 0;    // the largest stage time the search guarantees
  bool optimal = false;     // proven minimal (for a split that does not fit: the shortfall is)
  bool fits = true;         // false: no split fits in memory, and `bounds` is the least-short one
  double shortfall = 0;     // when !fits: the smallest possible largest excess over a capacity
  double unconstrained = 0;  // with memory limits: the optimal bottleneck without them
};

/// The largest stage time of a split.
inline double bottleneck_of(const split_tables& t, const std::vector<int>& b) {
  double worst = 0;
  for (int k = 0; k < t.stages; ++k) {
    worst = std::max(worst, t.time(k, b[static_cast<std::size_t>(k)], b[static_cast<std::size_t>(k) + 1]));
  }
  return worst;
}

/// The largest excess of a rank's memory over its capacity under a split (<= 0 when it fits).
inline double excess_of(const split_tables& t, const std::vector<int>& b) {
  std::vector<double> used(t.capacity.size(), 0.0);
  for (int k = 0; k < t.stages; ++k) {
    used[static_cast<std::size_t>(t.rank[static_cast<std::size_t>(k)])] +=
        t.memory(k, b[static_cast<std::size_t>(k)], b[static_cast<std::size_t>(k) + 1]);
  }
  double worst = -std::numeric_limits<double>::infinity();
  for (std::size_t r = 0; r < used.size(); ++r) worst = std::max(worst, used[r] - t.capacity[r]);
  return worst;
}

/// Minimises the largest stage time for stages that do not share memory (exact).
inline split_result min_max_split_dp(const split_tables& t);
inline split_result min_max_split_uncoupled(const split_tables& t) {
  if (!t.monotone()) return min_max_split_dp(t);
  split_result out;
  const double inf = std::numeric_limits<double>::infinity();
  if (t.memory_limited && !feasible(t, {inf, 0.0})) {
    out.fits = false;
    out.optimal = true;
    out.shortfall = smallest_feasible(0.0, t.memory_bound(), [&](double d) { return feasible(t, {inf, d}); });
    out.bounds = cut(t, {inf, out.shortfall});
    out.bottleneck = inf;
    return out;
  }
  out.bottleneck = smallest_feasible(0.0, t.time_bound(), [&](double b) { return feasible(t, {b, 0.0}); });
  out.bounds = cut(t, {out.bottleneck, 0.0});
  out.optimal = true;
  return out;
}

/// Minimises the largest stage time for stages that do not share memory by dynamic programming
/// over (stage, end): O(S * L^2) figure evaluations, exact whatever the figures do as a stage's
/// start moves (under every(k), or a stash's kept input, they need not only grow). With memory
/// limits it first finds the least largest excess; a split fits when that is <= 0.
inline split_result min_max_split_dp(const split_tables& t) {
  const double inf = std::numeric_limits<double>::infinity();
  const auto L = static_cast<std::size_t>(t.layers);
  const auto S = static_cast<std::size_t>(t.stages);
  // best[k][j]: the least worst figure over stages 0..k when stage k ends at layer j; from[k][j]:
  // where stage k then starts.
  std::vector<std::vector<double>> best(S, std::vector<double>(L + 1, inf));
  std::vector<std::vector<int>> from(S, std::vector<int>(L + 1, -1));
  const auto solve = [&](auto&& figure) {  // figure(k, i, j): a stage's figure, inf when ruled out
    for (std::size_t k = 0; k < S; ++k) {
      const int last = last_end(t, static_cast<int>(k));
      for (int j = static_cast<int>(k) + 1; j <= last; ++j) {
        double& b = best[k][static_cast<std::size_t>(j)];
        b = inf;
        for (int i = static_cast<int>(k); i < j; ++i) {
          const double before = k == 0 ? (i == 0 ? -inf : inf) : best[k - 1][static_cast<std::size_t>(i)];
          if (before == inf) continue;
          const double here = std::max(before, figure(static_cast<int>(k), i, j));
          if (here < b) {
            b = here;
            from[k][static_cast<std::size_t>(j)] = i;
          }
        }
      }
    }
    std::vector<int> bounds(S + 1, 0);
    bounds[S] = t.layers;
    for (std::size_t k = S; k-- > 0;) bounds[k] = from[k][static_cast<std::size_t>(bounds[k + 1])];
    return std::pair<double, std::vector<int>>{best[S - 1][L], std::move(bounds)};
  };
  split_result out;
  out.optimal = true;
  if (t.memory_limited) {
    auto [excess, bounds] = solve([&](int k, int i, int j) {
      return t.memory(k, i, j) - t.stage_capacity[static_cast<std::size_t>(k)];
    });
    if (excess > 0) {
      out.fits = false;
      out.shortfall = excess;
      out.bounds = std::move(bounds);
      out.bottleneck = inf;
      return out;
    }
  }
  auto [bottleneck, bounds] = solve([&](int k, int i, int j) {
    if (t.memory_limited && !(t.memory(k, i, j) <= t.stage_capacity[static_cast<std::size_t>(k)])) return inf;
    return t.time(k, i, j);
  });
  out.bottleneck = bottleneck;
  out.bounds = std::move(bounds);
  return out;
}

/// Each stage's share of its rank's memory in proportion to what the stages need under `bounds`
/// (even shares where they need nothing; no limit stays no limit).
inline std::vector<double> shares_from(const split_tables& t, const std::vector<int>* bounds) {
  std::vector<double> need(t.capacity.size(), 0.0);
  std::vector<double> held(t.capacity.size(), 0.0);
  std::vector<double> mine(static_cast<std::size_t>(t.stages), 0.0);
  for (int k = 0; k < t.stages; ++k) {
    const auto sk = static_cast<std::size_t>(k);
    const auto r = static_cast<std::size_t>(t.rank[sk]);
    held[r] += 1;
    if (bounds != nullptr) mine[sk] = t.memory(k, (*bounds)[sk], (*bounds)[sk + 1]);
    need[r] += mine[sk];
  }
  std::vector<double> share(static_cast<std::size_t>(t.stages));
  for (int k = 0; k < t.stages; ++k) {
    const auto sk = static_cast<std::size_t>(k);
    const auto r = static_cast<std::size_t>(t.rank[sk]);
    share[sk] = std::isfinite(t.capacity[r]) && need[r] > 0 ? t.capacity[r] * (mine[sk] / need[r])
                                                            : t.capacity[r] / held[r];
  }
  return share;
}

/// Ranks with several stages share their memory among them. Candidates: the split that is optimal
/// for time alone (optimal outright if it fits); the greedy probe that tracks each rank's memory;
/// and exact splits under fixed shares of each rank's memory per stage: even shares, then shares in
/// proportion to what the best candidate so far needs, refined a few rounds. Keeps the fastest that
/// fits, or, if none does, the one whose worst rank is least short.
inline split_result min_max_split_coupled(const split_tables& t) {
  const double inf = std::numeric_limits<double>::infinity();
  split_result fastest = min_max_split_uncoupled(t.without_memory());
  fastest.unconstrained = fastest.bottleneck;
  if (excess_of(t, fastest.bounds) <= 0) return fastest;  // optimal for time, and it fits

  split_result best{fastest.bounds, inf, false, false, excess_of(t, fastest.bounds)};
  const auto consider = [&](std::vector<int> bounds) {
    if (bounds.size() != static_cast<std::size_t>(t.stages) + 1 || bounds.back() != t.layers) return;
    const double excess = excess_of(t, bounds);
    if (excess <= 0) {
      const double b = bottleneck_of(t, bounds);
      if (!best.fits || b < best.bottleneck) best = {std::move(bounds), b, false, true, 0.0};
    } else if (!best.fits && excess < best.shortfall) {
      best = {std::move(bounds), inf, false, false, excess};
    }
  };
  const auto with_shares = [&](std::vector<double> share) {
    split_tables fixed = t;
    fixed.coupled = false;
    fixed.stage_capacity = std::move(share);
    consider(min_max_split_uncoupled(fixed).bounds);
  };
  std::vector<int> bounds;
  if (greedy(t, {inf, 0.0})) {
    // The greedy probe is not monotone in the bound here; bisection still ends on a bound it passed.
    const double b = smallest_feasible(0.0, t.time_bound(), [&](double x) { return greedy(t, {x, 0.0}); });
    greedy(t, {b, 0.0}, &bounds);
  } else {
    const double d = smallest_feasible(0.0, t.memory_bound(), [&](double x) { return greedy(t, {inf, x}); });
    greedy(t, {inf, d}, &bounds);
  }
  consider(bounds);
  with_shares(shares_from(t, nullptr));
  with_shares(shares_from(t, &fastest.bounds));
  for (int round = 0; round < 4; ++round) {
    const std::vector<int> from = best.bounds;
    with_shares(shares_from(t, &from));
    if (best.bounds == from) break;
  }
  best.unconstrained = fastest.bottleneck;
  return best;
}

/// Minimises the largest stage time, subject to each rank's memory when the tables carry it.
/// With memory limits, `unconstrained` also gives the optimal bottleneck without them.
inline split_result min_max_split(const split_tables& t) {
  if (t.coupled) return min_max_split_coupled(t);
  split_result out = min_max_split_uncoupled(t);
  if (t.memory_limited && out.fits) out.unconstrained = min_max_split_uncoupled(t.without_memory()).bottleneck;
  return out;
}

}  // namespace ppipe::detail
