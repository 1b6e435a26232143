// The balanced and heterogeneous partitioners against exhaustive search: on thousands of small
// random instances, every contiguous split is tried, and the partitioners must find the same
// optimal bottleneck, exactly (stage times are computed the one way ppipe defines them, from
// prefix sums, so the comparison needs no tolerance). Where no split fits in memory, the shortfall
// ppipe reports must be the smallest one any split has.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <catch.hpp>
#include <ppipe/partition/detail/split_search.hpp>
#include <ppipe/ppipe.hpp>

namespace {

using ppipe::partition_problem;

constexpr double inf = std::numeric_limits<double>::infinity();

// Stage times and memory as ppipe defines them: from prefix sums.
struct reference {
  const partition_problem& pb;
  bool use_devices;
  std::vector<double> C, P, A;

  reference(const partition_problem& problem, bool devices) : pb(problem), use_devices(devices) {
    C = P = A = {0.0};
    for (std::size_t i = 0; i < pb.layers.size(); ++i) {
      C.push_back(C.back() + pb.cost(i));
      P.push_back(P.back() + pb.layers[i].parameter_memory);
      A.push_back(A.back() + pb.layers[i].activation_memory);
    }
  }
  double speed(int s) const { return use_devices ? pb.device(pb.place.rank_of(s)).speed : 1.0; }
  double time(int s, int i, int j) const { return (C[std::size_t(j)] - C[std::size_t(i)]) / speed(s); }
  double memory(int s, int i, int j) const {
    return (P[std::size_t(j)] - P[std::size_t(i)]) +
           static_cast<double>(pb.in_flight[std::size_t(s)]) * (A[std::size_t(j)] - A[std::size_t(i)]);
  }
  double bottleneck(const std::vector<int>& b) const {
    double worst = 0;
    for (int s = 0; s + 1 < static_cast<int>(b.size()); ++s) {
      worst = std::max(worst, time(s, b[std::size_t(s)], b[std::size_t(s) + 1]));
    }
    return worst;
  }
  // Every rank's memory (its stages added in stage order) within capacity + slack.
  bool fits(const std::vector<int>& b, double slack) const {
    if (!use_devices) return true;
    std::vector<double> used(std::size_t(pb.num_ranks()), 0.0);
    for (int s = 0; s + 1 < static_cast<int>(b.size()); ++s) {
      const auto r = std::size_t(pb.place.rank_of(s));
      used[r] += memory(s, b[std::size_t(s)], b[std::size_t(s) + 1]);
      if (!(used[r] <= pb.device(int(r)).memory + slack)) return false;
    }
    return true;
  }
  // Calls f(bounds) for every contiguous split into non-empty stages.
  template <class F>
  void each_split(F&& f) const {
    const int L = pb.num_layers();
    const int S = pb.num_stages();
    std::vector<int> b(std::size_t(S) + 1, 0);
    b[std::size_t(S)] = L;
    const auto rec = [&](auto&& self, int s) -> void {
      if (s == S) {
        f(b);
        return;
      }
      for (int e = b[std::size_t(s) - 1] + 1; e <= L - (S - s); ++e) {
        b[std::size_t(s)] = e;
        self(self, s + 1);
      }
    };
    if (S == 1) f(b); else rec(rec, 1);
  }
  // The smallest bottleneck over splits that fit (infinity if none).
  double optimum() const {
    double best = inf;
    each_split([&](const std::vector<int>& b) {
      if (fits(b, 0.0)) best = std::min(best, bottleneck(b));
    });
    return best;
  }
  bool any_fits(double slack) const {
    bool any = false;
    each_split([&](const std::vector<int>& b) { any = any || fits(b, slack); });
    return any;
  }
};

struct instance_maker {
  std::mt19937 rng;
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

  // p ranks with v stages each (looped), L layers, random costs and memory; in-flight counts random
  // (the partitioners take any); devices with random speeds and, when `memory`, capacities around
  // what an even split needs.
  partition_problem make(int p, int v, bool devices, bool memory, bool inference = false) {
    const int S = p * v;
    const int L = pick(S, std::min(S + 6, 9));
    partition_problem pb;
    pb.place = ppipe::placement::looped(p, v);
    pb.mode = inference ? ppipe::schedule_mode::inference : ppipe::schedule_mode::training;
    double total_memory = 0;
    for (int i = 0; i < L; ++i) {
      ppipe::layer_cost c;
      // Mostly small integers (ties between splits are common), sometimes arbitrary doubles.
      const bool exact = pick(0, 1) == 0;
      c.forward = exact ? pick(1, 4) : uniform(0.05, 5);
      c.backward = exact ? pick(1, 8) : uniform(0.05, 10);
      c.parameter_memory = memory ? uniform(0, 4) : 0;
      c.activation_memory = memory ? uniform(0, 2) : 0;
      total_memory += c.parameter_memory + 2 * c.activation_memory;
      pb.layers.push_back(c);
    }
    for (int s = 0; s < S; ++s) pb.in_flight.push_back(pick(0, 4));
    if (devices) {
      for (int r = 0; r < p; ++r) {
        ppipe::device_spec d;
        d.speed = pick(0, 2) == 0 ? pick(1, 3) : uniform(0.1, 3);
        if (memory && pick(0, 4) != 0) d.memory = total_memory / p * uniform(0.4, 2.0);
        pb.devices.push_back(d);
      }
    }
    pb.check();
    return pb;
  }
};

}  // namespace

TEST_CASE("balanced finds the optimal bottleneck of every contiguous split") {
  instance_maker gen{std::mt19937(20261123)};
  int checked = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int p = gen.pick(1, 4);
    const int v = gen.pick(1, 2);
    const partition_problem pb = gen.make(p, v, false, false, trial % 5 == 0);
    const reference ref(pb, false);
    const auto choice = ppipe::partitioners::balanced{}.choose(pb);
    CAPTURE(trial, p, v, pb.num_layers(), choice.split.sizes());
    REQUIRE(choice.split.num_stages() == pb.num_stages());
    CHECK(choice.optimal);
    CHECK(ref.bottleneck(choice.split.bounds()) == ref.optimum());
    ++checked;
  }
  CHECK(checked == 3000);
}

TEST_CASE("heterogeneous finds the optimal bottleneck with speeds and memory, one stage per rank") {
  instance_maker gen{std::mt19937(7)};
  int fitted = 0;
  int short_of_memory = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    const int p = gen.pick(1, 5);
    const partition_problem pb = gen.make(p, 1, true, trial % 4 != 0);
    const reference ref(pb, true);
    const double best = ref.optimum();
    CAPTURE(trial, p, pb.num_layers());
    if (best < inf) {
      const auto choice = ppipe::partitioners::heterogeneous{}.choose(pb);
      CAPTURE(choice.split.sizes());
      CHECK(choice.optimal);
      CHECK(ref.fits(choice.split.bounds(), 0.0));
      CHECK(ref.bottleneck(choice.split.bounds()) == best);
      ++fitted;
    } else {
      CHECK_THROWS_AS(ppipe::partitioners::heterogeneous{}.choose(pb), ppipe::error);
      // The shortfall is the least extra memory with which some split fits.
      const ppipe::detail::split_tables tables(pb, true);
      const auto found = ppipe::detail::min_max_split(tables);
      CHECK_FALSE(found.fits);
      CHECK(found.optimal);
      CHECK(ref.any_fits(found.shortfall));
      CHECK_FALSE(ref.any_fits(std::nextafter(found.shortfall, 0.0)));
      CHECK(ref.fits(found.bounds, found.shortfall));
      ++short_of_memory;
    }
  }
  // Both outcomes were exercised many times.
  CHECK(fitted > 1000);
  CHECK(short_of_memory > 200);
}

TEST_CASE("heterogeneous with several stages per rank: time-optimal, and within memory") {
  instance_maker gen{std::mt19937(99)};
  int optimal = 0;
  int fitted = 0;
  int missed = 0;  // a split fits, but the search did not find one
  for (int trial = 0; trial < 3000; ++trial) {
    const int p = gen.pick(1, 3);
    const partition_problem pb = gen.make(p, 2, true, trial % 3 != 0);
    const reference ref(pb, true);
    const double best = ref.optimum();
    CAPTURE(trial, p, pb.num_layers());
    ppipe::partition_choice choice;
    try {
      choice = ppipe::partitioners::heterogeneous{}.choose(pb);
    } catch (const ppipe::error& e) {
      // Ranks share memory between their stages; the search for those is not exhaustive (the
      // message says so), so it may miss a split that fits; it must rarely do so.
      CHECK(e.code() == ppipe::errc::out_of_memory);
      CHECK_THAT(e.what(), ppipe_test::contains("not exhaustive"));
      missed += best < inf ? 1 : 0;
      continue;
    }
    CAPTURE(choice.split.sizes());
    ++fitted;
    REQUIRE(best < inf);  // it found a split that fits, so the optimum exists
    CHECK(ref.fits(choice.split.bounds(), 0.0));
    CHECK(ref.bottleneck(choice.split.bounds()) >= best);
    if (choice.optimal) {
      CHECK(ref.bottleneck(choice.split.bounds()) == best);
      ++optimal;
    }
  }
  CHECK(fitted > 1000);
  CHECK(optimal > 1500);
  CHECK(missed * 20 < fitted);  // under 5% (36 next to 2304 found, with this seed, when written)
}

TEST_CASE("heterogeneous with recomputing stages, one stage per rank: still exact") {
  // Under every(k) and with stashes on limited ranks a stage's figures need not grow as it starts
  // earlier, so the search takes its dynamic programme; against every split, with the figures the
  // tables define (checked against the problem's own in test_recompute).
  instance_maker gen{std::mt19937(20261208)};
  int fitted = 0;
  int short_of_memory = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int p = gen.pick(1, 4);
    partition_problem pb = gen.make(p, 1, true, true);
    for (int s = 0; s < p; ++s) {
      const int kind = gen.pick(0, 4);
      const ppipe::recompute_policy policy = kind == 0   ? ppipe::recompute_policy::none
                                             : kind == 1 ? ppipe::recompute_policy::full
                                                         : ppipe::recompute_policy::every(kind);
      pb.recompute.push_back(policy);
      pb.held.push_back(gen.pick(0, 2));
      pb.stashed.push_back(policy.recomputes() ? gen.pick(0, 4) : 0);
      pb.in_flight[std::size_t(s)] = pb.held.back() + gen.pick(0, pb.stashed.back());
    }
    pb.check();
    const ppipe::detail::split_tables t(pb, true);
    double best = inf;
    double least_short = inf;
    std::vector<int> b(std::size_t(p) + 1, 0);
    b.back() = pb.num_layers();
    const auto rec = [&](auto&& self, int s) -> void {
      if (s == p) {
        double worst = 0;
        double excess = -inf;
        for (int k = 0; k < p; ++k) {
          worst = std::max(worst, t.time(k, b[std::size_t(k)], b[std::size_t(k) + 1]));
          excess = std::max(excess, t.memory(k, b[std::size_t(k)], b[std::size_t(k) + 1]) - pb.device(k).memory);
        }
        least_short = std::min(least_short, excess);
        if (excess <= 0) best = std::min(best, worst);
        return;
      }
      for (int e = b[std::size_t(s) - 1] + 1; e <= pb.num_layers() - (p - s); ++e) {
        b[std::size_t(s)] = e;
        self(self, s + 1);
      }
    };
    rec(rec, 1);
    CAPTURE(trial, p, pb.num_layers());
    const auto found = ppipe::detail::min_max_split(t);
    CHECK(found.optimal);
    if (best < inf) {
      REQUIRE(found.fits);
      CHECK(found.bottleneck == best);
      CHECK(ppipe::detail::excess_of(t, found.bounds) <= 0);
      CHECK(ppipe::detail::bottleneck_of(t, found.bounds) == best);
      ++fitted;
    } else {
      CHECK_FALSE(found.fits);
      // The bisection (where the figures allow it) ends on the least d with memory <= capacity + d,
      // which can differ from memory - capacity in the last bit.
      CHECK(found.shortfall == Approx(least_short).epsilon(1e-12));
      CHECK_THROWS_AS(ppipe::partitioners::heterogeneous{}.choose(pb), ppipe::error);
      ++short_of_memory;
    }
  }
  CHECK(fitted > 1000);
  CHECK(short_of_memory > 100);
}
