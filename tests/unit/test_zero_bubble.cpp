// Zero-bubble schedules: ZB-H1, ZB-V and DualPipeV are complete and deadlock-free under both
// transfer models, and their simulated bubble and memory are the papers' (Qi et al. 2023; DeepSeek's
// DualPipe) over a grid of (p, m).

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "ppipe/ppipe.hpp"

namespace {

using ppipe::action_kind;

// The most stage-microbatches whose activations rank r holds at once (from a forward until its W
// or full backward), counted along the rank's order: what its memory must hold.
int rank_peak(const ppipe::schedule& s, int r) {
  int alive = 0;
  int peak = 0;
  for (const ppipe::action& a : s.ranks[static_cast<std::size_t>(r)]) {
    if (a.kind == action_kind::forward) peak = std::max(peak, ++alive);
    if (a.kind == action_kind::backward || a.kind == action_kind::backward_weight) --alive;
  }
  return peak;
}

ppipe::simulation run(const ppipe::schedule& s, double f, double i, double w, ppipe::transfer_model model) {
  ppipe::simulate_options o;
  o.transfers = model;
  return ppipe::simulate(s, ppipe::cost_model{{ppipe::stage_costs{f, i + w, i, w, f}}, 0.0}, o);
}

const ppipe::transfer_model models[] = {ppipe::transfer_model::rendezvous, ppipe::transfer_model::buffered};

}  // namespace

TEST_CASE("ZB-H1 and ZB-V pass the validator under both transfer models", "[zero_bubble]") {
  for (const int p : {1, 2, 3, 4, 5, 8}) {
    for (const int m : {1, 2, p, p + 1, 2 * p, 4 * p + 3}) {
      INFO("p=" << p << " m=" << m);
      const ppipe::schedule h1 = ppipe::make_schedule("zb_h1", {p, m, 1});
      const ppipe::schedule v = ppipe::make_schedule("zb_v", {p, m, 2});
      CHECK(h1.splits_backward());
      CHECK(v.splits_backward());
      for (const auto model : models) {
        CHECK(ppipe::check_schedule(h1, model).ok());
        CHECK(ppipe::check_schedule(v, model).ok());
      }
    }
  }
}

TEST_CASE("ZB-H1: bubble (p-1)(F+I-W) against 1F1B's (p-1)(F+I+W), at 1F1B's peak memory", "[zero_bubble]") {
  for (const int p : {2, 3, 4, 6, 8}) {
    for (const int m : {p, 2 * p, 3 * p + 1, 8 * p}) {
      INFO("p=" << p << " m=" << m);
      const ppipe::schedule h1 = ppipe::make_schedule("zb_h1", {p, m, 1});
      const ppipe::schedule one = ppipe::make_schedule("1f1b", {p, m, 1});
      for (const auto model : models) {
        // F = I = W: the paper's setting. Each rank computes m(F+I+W); the rest is its bubble.
        const double unit = 1.5;
        const double work = m * 3 * unit;
        const ppipe::simulation zb = run(h1, unit, unit, unit, model);
        const ppipe::simulation base = run(one, unit, unit, unit, model);
        CHECK(zb.makespan == Approx(work + (p - 1) * (unit + unit - unit)));
        CHECK(base.makespan == Approx(work + (p - 1) * (unit + unit + unit)));
        // A third of 1F1B's bubble.
        CHECK((zb.makespan - work) * 3 == Approx(base.makespan - work));
      }
      // Memory: at most p microbatches held on any rank, as 1F1B holds on its first stage.
      int zb_peak = 0;
      int one_peak = 0;
      for (int r = 0; r < p; ++r) {
        zb_peak = std::max(zb_peak, rank_peak(h1, r));
        one_peak = std::max(one_peak, rank_peak(one, r));
      }
      CHECK(zb_peak == one_peak);
      CHECK(one_peak == std::min(p, m));
      const auto sim = ppipe::simulate(h1, ppipe::cost_model::uniform(1, 2));
      CHECK(*std::max_element(sim.peak_stage_activations.begin(), sim.peak_stage_activations.end()) == std::min(p, m));
    }
  }
}

TEST_CASE("ZB-V: two stages per rank in a V, the bubble only the fill, at 1F1B's peak memory", "[zero_bubble]") {
  for (const int p : {1, 2, 3, 4, 6, 8}) {
    for (const int m : {p, 2 * p, 3 * p + 1, 8 * p}) {
      INFO("p=" << p << " m=" << m);
      const ppipe::schedule v = ppipe::make_schedule("zb_v", {p, m, 2});
      // Rank r holds stages r and 2p-1-r.
      REQUIRE(v.num_stages() == 2 * p);
      for (int r = 0; r < p; ++r) {
        CHECK(v.place.rank_of(r) == r);
        CHECK(v.place.rank_of(2 * p - 1 - r) == r);
      }
      for (const auto model : models) {
        // Each stage is half of a 1F1B stage: f = i = w per stage, 1F1B's stage costs 2f, 4f.
        const double f = 0.5;
        const double work = m * 2 * 3 * f;
        const ppipe::simulation zb = run(v, f, f, f, model);
        // The fill: rank p-1 cannot start before p-1 forwards have run, so no schedule has less
        // bubble than (p-1)f per rank. ZB-V's is exactly that up to p = 4, and at most twice it.
        const double fill = (p - 1) * f;
        if (p <= 4) {
          CHECK(zb.makespan == Approx(work + fill));
        } else {
          CHECK(zb.makespan >= work + fill);
          CHECK(zb.makespan <= work + 2 * fill);
        }
        // 1F1B over the same layers (stages twice as large) idles 6(p-1)f per rank.
        const ppipe::simulation base = run(ppipe::make_schedule("1f1b", {p, m, 1}), 2 * f, 2 * f, 2 * f, model);
        CHECK(base.makespan - work == Approx(6 * fill));
      }
      // Memory: 2p half-stage microbatches per rank at most, 1F1B's p whole-stage ones.
      for (int r = 0; r < p; ++r) CHECK(rank_peak(v, r) <= 2 * std::min(p, m));
      int most = 0;
      for (int r = 0; r < p; ++r) most = std::max(most, rank_peak(v, r));
      CHECK(most == 2 * std::min(p, m));
    }
  }
}

TEST_CASE("zero-bubble generators refuse what they cannot build", "[zero_bubble]") {
  CHECK_THROWS_WITH(ppipe::make_schedule("zb_v", {4, 8, 1}), Catch::Contains("v=1") && Catch::Contains("pass v=2"));
  CHECK_THROWS_WITH(ppipe::make_schedule("zb_h1", {4, 8, 2}), Catch::Contains("v=2"));
  CHECK_THROWS_WITH(ppipe::make_schedule("zb_h1", {4, 0, 1}), Catch::Contains("m=0"));
}

TEST_CASE("transfers at unit-time boundaries keep any runnable compute order deadlock-free", "[zero_bubble]") {
  // Random compute-only schedules: random placements (stages may share a rank, in any order) and
  // rank orders taken from a random global order in which every action comes after its inputs.
  std::uint64_t state = 12345;
  const auto next = [&](std::uint64_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % n;
  };
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int p = 1 + static_cast<int>(next(4));
    const int stages = p + static_cast<int>(next(4));
    const int m = 1 + static_cast<int>(next(5));
    const bool split = next(2) == 1;
    std::vector<int> rank_of(static_cast<std::size_t>(stages));
    for (int s = 0; s < stages; ++s) rank_of[static_cast<std::size_t>(s)] = s < p ? s : static_cast<int>(next(static_cast<std::uint64_t>(p)));
    ppipe::schedule s{"random", ppipe::placement::custom(rank_of, p), m, ppipe::schedule_mode::training, {}};
    s.ranks.resize(static_cast<std::size_t>(p));
    // done[kind][stage][mb]: 0 F, 1 B or I, 2 W
    std::vector<std::vector<std::vector<char>>> done(
        3, std::vector<std::vector<char>>(static_cast<std::size_t>(stages), std::vector<char>(static_cast<std::size_t>(m), 0)));
    const auto is_done = [&](int k, int st, int mb) { return done[static_cast<std::size_t>(k)][static_cast<std::size_t>(st)][static_cast<std::size_t>(mb)] != 0; };
    const int total = stages * m * (split ? 3 : 2);
    for (int placed = 0; placed < total; ++placed) {
      std::vector<ppipe::action> ready;
      for (int st = 0; st < stages; ++st) {
        for (int mb = 0; mb < m; ++mb) {
          if (!is_done(0, st, mb) && (st == 0 || is_done(0, st - 1, mb))) ready.push_back({st, mb, action_kind::forward});
          if (is_done(0, st, mb) && !is_done(1, st, mb) && (st == stages - 1 || is_done(1, st + 1, mb))) {
            ready.push_back({st, mb, split ? action_kind::backward_input : action_kind::backward});
          }
          if (split && is_done(1, st, mb) && !is_done(2, st, mb)) ready.push_back({st, mb, action_kind::backward_weight});
        }
      }
      const ppipe::action a = ready[next(ready.size())];
      const int k = a.kind == action_kind::forward ? 0 : a.kind == action_kind::backward_weight ? 2 : 1;
      done[static_cast<std::size_t>(k)][static_cast<std::size_t>(a.stage)][static_cast<std::size_t>(a.microbatch)] = 1;
      s.ranks[static_cast<std::size_t>(rank_of[static_cast<std::size_t>(a.stage)])].push_back(a);
    }
    const ppipe::schedule lowered = ppipe::detail::lower_by_time(s, ppipe::detail::unit_start_times(s));
    INFO("trial " << trial << " p=" << p << " stages=" << stages << " m=" << m);
    CHECK(ppipe::check_schedule(lowered, ppipe::transfer_model::rendezvous).ok());
    ++checked;
  }
  CHECK(checked == 300);
  // Start times that do not fit the schedule are refused.
  const ppipe::schedule one{"one", ppipe::placement::looped(1), 1, ppipe::schedule_mode::training,
                            {{{0, 0, action_kind::forward}, {0, 0, action_kind::backward}}}};
  CHECK_THROWS_WITH(ppipe::detail::lower_by_time(one, {{1, 0}}), Catch::Contains("strictly rising"));
  CHECK_THROWS_WITH(ppipe::detail::lower_by_time(one, {{0}}), Catch::Contains("2 actions and 1 start times"));
}

TEST_CASE("DualPipeV: deadlock-free for p 1..8 and m >= 2p, paired F&B, 2p+1 microbatches held",
          "[zero_bubble][dualpipe_v]") {
  for (int p = 1; p <= 8; ++p) {
    for (const int m : {2 * p, 2 * p + 1, 3 * p, 4 * p + 3}) {
      INFO("p=" << p << " m=" << m);
      const ppipe::schedule s = ppipe::make_schedule("dualpipe_v", {p, m, 2});
      for (const ppipe::transfer_model model : models) CHECK(ppipe::check_schedule(s, model).ok());
      // Every stage-microbatch runs F, and B or I and W; a pair's B follows its F directly.
      int pairs = 0;
      for (int r = 0; r < p; ++r) {
        const auto& list = s.ranks[static_cast<std::size_t>(r)];
        for (std::size_t k = 0; k < list.size(); ++k) {
          if (!list[k].paired) continue;
          ++pairs;
          REQUIRE(k + 1 < list.size());
          CHECK(list[k + 1].kind == action_kind::backward);
          CHECK(list[k + 1].stage != list[k].stage);
        }
        CHECK(rank_peak(s, r) <= 2 * p + 1);
      }
      // The steady state: two pairs a step for m - 2p + r + 1 steps on rank r, less the V's turn,
      // and one a step for p - r - 1 more.
      int want = 0;
      for (int r = 0; r < p; ++r) want += 2 * (m - 2 * p + r + 1) - (r == p - 1 ? 1 : 0) + (p - r - 1);
      CHECK(pairs == want);
      // The held peak: 2p + 1 on some rank once p > 1.
      const ppipe::simulation sim = run(s, 1, 1, 1, ppipe::transfer_model::rendezvous);
      if (p > 1) CHECK(*std::max_element(sim.peak_rank_activations.begin(), sim.peak_rank_activations.end()) == 2 * p + 1);
    }
  }
}

TEST_CASE("DualPipeV: the bubble is (p-1) max(2F, F+B, 3B/2), half 1F1B's when B = 2F", "[zero_bubble][dualpipe_v]") {
  // Per stage F and B, I = W = B/2; F&B charged back to back. A rank's work is 2m(F+B).
  for (const double f : {1.0, 2.0}) {
    for (const double b : {1.0, 2.0, 3.0, 4.0}) {
      for (int p = 2; p <= 6; ++p) {
        for (const int m : {2 * p, 3 * p + 1}) {
          INFO("F=" << f << " B=" << b << " p=" << p << " m=" << m);
          const ppipe::schedule s = ppipe::make_schedule("dualpipe_v", {p, m, 2});
          for (const ppipe::transfer_model model : models) {
            const double step = run(s, f, b / 2, b / 2, model).makespan;
            CHECK(step == Approx(2 * m * (f + b) + (p - 1) * std::max({2 * f, f + b, 1.5 * b})));
          }
        }
      }
    }
  }
  // 1F1B on the same ranks, each stage twice the layers: (p-1)(2F+2B).
  const ppipe::simulation one = run(ppipe::make_schedule("1f1b", {4, 8, 1}), 2, 2, 2, ppipe::transfer_model::rendezvous);
  const ppipe::simulation dual = run(ppipe::make_schedule("dualpipe_v", {4, 8, 2}), 1, 1, 1, ppipe::transfer_model::rendezvous);
  CHECK(one.makespan - 8 * (2 + 4) == 2 * (dual.makespan - 2 * 8 * (1 + 2)));
}

TEST_CASE("DualPipeV refuses what it cannot build; pairs are checked and written as F+", "[zero_bubble][dualpipe_v]") {
  CHECK_THROWS_WITH(ppipe::make_schedule("dualpipe_v", {4, 8, 1}), Catch::Contains("v=1") && Catch::Contains("pass v=2"));
  CHECK_THROWS_WITH(ppipe::make_schedule("dualpipe_v", {4, 7, 2}),
                    Catch::Contains("m >= 2p") && Catch::Contains("m=7 with p=4") && Catch::Contains("zb_v"));
  // The text form.
  const ppipe::action a = ppipe::parse_action("2F5+");
  CHECK(a.paired);
  CHECK(a.kind == action_kind::forward);
  CHECK(ppipe::to_string(a) == "2F5+");
  CHECK(a == ppipe::action{2, 5, action_kind::forward});  // the same action, run as a pair
  CHECK_THROWS_WITH(ppipe::parse_action("2B5+"), Catch::Contains("only a forward pairs"));
  // The validator: something between a pair's F and B, or a pair without its B.
  ppipe::schedule s = ppipe::make_schedule("dualpipe_v", {2, 4, 2});
  auto& list = s.ranks[0];
  const auto pair = std::find_if(list.begin(), list.end(), [](const ppipe::action& x) { return x.paired; });
  REQUIRE(pair != list.end());
  ppipe::schedule split = s;
  auto& split_list = split.ranks[0];
  const auto at = split_list.begin() + (pair - list.begin());
  std::rotate(at + 1, at + 2, split_list.end());  // the pair's B moves to the end
  const ppipe::validation_report r = ppipe::check_schedule(split);
  REQUIRE_FALSE(r.ok());
  CHECK(r.problem->kind == ppipe::problem_kind::unpaired);
  CHECK_THAT(r.problem->what, Catch::Contains("is paired with the action right after it") &&
                                  Catch::Contains("put the full backward (B) it pairs with right after it"));
  // Recomputation puts the R of a pair's B before its forward, keeping the pair whole.
  const ppipe::schedule rs = ppipe::with_recompute(s, {true, true, true, true});
  CHECK(ppipe::check_schedule(rs).ok());
  CHECK(ppipe::detail::fingerprint(s) != ppipe::detail::fingerprint([&] {
          ppipe::schedule unpaired = s;
          for (auto& l : unpaired.ranks) for (auto& x : l) x.paired = false;
          return unpaired;
        }()));
}
