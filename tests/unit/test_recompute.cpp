// Activation recomputation in the schedule IR: with_recompute() puts an R before each backward of
// the chosen stages; the validator orders R between its forward and its backward; the simulator
// charges its time and counts its microbatches as stashed from F to R and held from R to the
// backward, as in_flight_peaks()/stashed_peaks() count them; CSV and SVG carry R.

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "ppipe/ppipe.hpp"

namespace {

using ppipe::action_kind;

std::vector<bool> all_stages(const ppipe::schedule& s) {
  return std::vector<bool>(static_cast<std::size_t>(s.num_stages()), true);
}

int count(const ppipe::schedule& s, action_kind kind) {
  int n = 0;
  for (const auto& list : s.ranks) {
    for (const ppipe::action& a : list) n += a.kind == kind ? 1 : 0;
  }
  return n;
}

}  // namespace

TEST_CASE("recompute: R reads and prints as <stage>R<microbatch>", "[recompute]") {
  const ppipe::action a = ppipe::parse_action("2R7");
  CHECK(a == ppipe::action{2, 7, action_kind::recompute});
  CHECK(ppipe::to_string(a) == "2R7");
  CHECK(ppipe::is_compute(action_kind::recompute));
  CHECK(ppipe::is_backward_pass(action_kind::recompute));
  CHECK_FALSE(ppipe::is_transfer(action_kind::recompute));
}

TEST_CASE("recompute: with_recompute puts an R right before each backward of the marked stages", "[recompute]") {
  const ppipe::schedule plain = ppipe::make_schedule("1f1b", {3, 4, 1});
  std::vector<bool> middle{false, true, false};
  const ppipe::schedule r = ppipe::with_recompute(plain, middle);
  CHECK(count(r, action_kind::recompute) == 4);
  for (const auto& list : r.ranks) {
    for (std::size_t i = 0; i < list.size(); ++i) {
      if (list[i].kind != action_kind::recompute) continue;
      CHECK(list[i].stage == 1);
      REQUIRE(i + 1 < list.size());
      CHECK(list[i + 1] == ppipe::action{1, list[i].microbatch, action_kind::backward});
    }
  }
  CHECK_NOTHROW(ppipe::validate(r));
  // Idempotent: a backward that has its R gets no second one.
  CHECK(ppipe::with_recompute(r, middle).ranks == r.ranks);
  // Nothing marked, nothing changed.
  CHECK(ppipe::with_recompute(plain, {}).ranks == plain.ranks);
  CHECK(ppipe::with_recompute(plain, {false, false, false}).ranks == plain.ranks);
  // Split backwards get R before I.
  const ppipe::schedule zb = ppipe::with_recompute(ppipe::make_schedule("zb_h1", {2, 4, 1}), {true, true});
  for (const auto& list : zb.ranks) {
    for (std::size_t i = 0; i + 1 < list.size(); ++i) {
      if (list[i].kind == action_kind::recompute) CHECK(list[i + 1].kind == action_kind::backward_input);
    }
  }
  CHECK_NOTHROW(ppipe::validate(zb));
}

TEST_CASE("recompute: with_recompute refuses what it cannot do", "[recompute]") {
  const ppipe::schedule plain = ppipe::make_schedule("1f1b", {2, 4, 1});
  CHECK_THROWS_WITH(ppipe::with_recompute(plain, {true}),
                    Catch::Contains("recompute names 1 stages") && Catch::Contains("one entry per stage"));
  const ppipe::schedule infer = ppipe::make_schedule("forward_only", {2, 4, 1});
  CHECK_THROWS_WITH(ppipe::with_recompute(infer, {true, true}), Catch::Contains("keeps no activations to recompute"));
}

TEST_CASE("recompute: the validator orders R after its forward and before its backward", "[recompute]") {
  ppipe::schedule s = ppipe::make_schedule("gpipe", {1, 2, 1});
  // GPipe on one rank: 0F0 0F1 0B0 0B1.
  const auto with = [&](std::vector<ppipe::action> list) {
    ppipe::schedule t = s;
    t.ranks[0] = std::move(list);
    return t;
  };
  using A = ppipe::action;
  const A f0{0, 0, action_kind::forward}, f1{0, 1, action_kind::forward};
  const A b0{0, 0, action_kind::backward}, b1{0, 1, action_kind::backward};
  const A r0{0, 0, action_kind::recompute};
  CHECK_NOTHROW(ppipe::validate(with({f0, f1, r0, b0, b1})));
  CHECK_NOTHROW(ppipe::validate(with({f0, r0, f1, b0, b1})));  // early recompute is allowed
  CHECK_THROWS_WITH(ppipe::validate(with({r0, f0, f1, b0, b1})),
                    Catch::Contains("0R0") && Catch::Contains("runs before 0F0"));
  CHECK_THROWS_WITH(ppipe::validate(with({f0, f1, b0, r0, b1})),
                    Catch::Contains("runs after the backward of its microbatch") && Catch::Contains("put it before 0B0"));
  CHECK_THROWS_WITH(ppipe::validate(with({f0, f1, r0, r0, b0, b1})), Catch::Contains("appears twice"));
  ppipe::schedule inference = ppipe::make_schedule("forward_only", {1, 1, 1});
  inference.ranks[0].push_back({0, 0, action_kind::recompute});
  CHECK_THROWS_WITH(ppipe::validate(inference), Catch::Contains("forward-only"));
}

TEST_CASE("recompute: the simulator charges R and counts held and stashed microbatches", "[recompute]") {
  for (const char* name : {"gpipe", "1f1b", "interleaved_1f1b", "zb_h1", "zb_v"}) {
    for (const int p : {1, 2, 4}) {
      for (const int m : {1, 4, 8}) {
        const int v = std::string(name) == "interleaved_1f1b" || std::string(name) == "zb_v" ? 2 : 1;
        if (std::string(name) == "interleaved_1f1b" && m % p != 0) continue;
        if (std::string(name) == "zb_v" && m < p) continue;
        INFO(name << " p=" << p << " m=" << m);
        const ppipe::schedule plain = ppipe::make_schedule(name, {p, m, v});
        const ppipe::schedule r = ppipe::with_recompute(plain, all_stages(plain));
        const ppipe::cost_model costs = ppipe::cost_model::uniform(1.0, 2.0);
        const ppipe::simulation a = ppipe::simulate(plain, costs);
        const ppipe::simulation b = ppipe::simulate(r, costs);
        // Every microbatch of every stage re-runs its forward once.
        CHECK(b.total_busy() == Approx(a.total_busy() + p * v * m * 1.0 / 1.0));
        CHECK(b.makespan >= a.makespan);
        // Without R nothing is stashed; with R on every stage, what was held is stashed instead
        // (until I, which comes before W, with a split backward).
        CHECK(a.peak_stage_stashed == std::vector<int>(static_cast<std::size_t>(p * v), 0));
        if (!plain.splits_backward()) CHECK(b.peak_stage_stashed == a.peak_stage_activations);
        for (std::size_t st = 0; st < a.peak_stage_activations.size(); ++st) {
          CHECK(b.peak_stage_stashed[st] >= 1);
          CHECK(b.peak_stage_stashed[st] <= a.peak_stage_activations[st]);
        }
        // The order alone gives the same counts.
        CHECK(ppipe::in_flight_peaks(r) == b.peak_stage_activations);
        CHECK(ppipe::stashed_peaks(r) == b.peak_stage_stashed);
        CHECK(ppipe::in_flight_peaks(plain) == a.peak_stage_activations);
        if (!plain.splits_backward()) {
          // R sits right before B, so a stage holds one microbatch in full at a time.
          CHECK(b.peak_stage_activations == std::vector<int>(static_cast<std::size_t>(p * v), 1));
        }
      }
    }
  }
}

TEST_CASE("recompute: a stage's memory counts what it holds and stashes at one moment", "[recompute]") {
  // With R right before each backward, a microbatch moves from held to stashed and back: a
  // partition problem sees as many microbatches in flight as without recomputation, never more.
  for (const char* name : {"gpipe", "1f1b", "zb_h1"}) {
    for (const int p : {1, 2, 4}) {
      INFO(name << " p=" << p);
      const ppipe::schedule plain = ppipe::make_schedule(name, {p, 2 * p, 1});
      const ppipe::schedule r = ppipe::with_recompute(plain, all_stages(plain));
      const std::vector<ppipe::layer_cost> layers(static_cast<std::size_t>(2 * p), ppipe::layer_cost{1, 2, 1, 1});
      CHECK(ppipe::partition_problem::for_schedule(r, layers).in_flight == ppipe::in_flight_peaks(plain));
      CHECK(ppipe::activation_peaks(r.ranks, r.num_stages(), r.microbatches, r.mode).total_stage ==
            ppipe::in_flight_peaks(plain));
    }
  }
}

TEST_CASE("recompute: only the stages that recompute need an R cost", "[recompute]") {
  const ppipe::schedule r = ppipe::with_recompute(ppipe::make_schedule("1f1b", {2, 4, 1}), {false, true});
  // Stage 0 never runs R, so its recompute cost (0, as a trace of a stage without R measures it)
  // is not checked; stage 1's is.
  const ppipe::stage_costs none{1.0, 2.0, 1.0, 1.0, 0.0};
  const ppipe::stage_costs some{1.0, 2.0, 1.0, 1.0, 0.5};
  CHECK_NOTHROW(ppipe::simulate(r, ppipe::cost_model{{none, some}, 0.0}));
  CHECK_THROWS_WITH(ppipe::simulate(r, ppipe::cost_model{{some, none}, 0.0}), Catch::Contains("stage 1 has recompute cost 0"));
}

TEST_CASE("recompute: R's cost is the stage's own and must be a time", "[recompute]") {
  const ppipe::schedule r = ppipe::with_recompute(ppipe::make_schedule("gpipe", {1, 2, 1}), {true});
  ppipe::stage_costs c{1.0, 2.0, 1.0, 1.0, 0.5};
  const ppipe::simulation sim = ppipe::simulate(r, ppipe::cost_model{{c}, 0.0});
  CHECK(sim.makespan == Approx(2 * (1.0 + 0.5 + 2.0)));
  c.recompute = 0.0;
  CHECK_THROWS_WITH(ppipe::simulate(r, ppipe::cost_model{{c}, 0.0}), Catch::Contains("recompute cost 0"));
}

TEST_CASE("recompute: CSV files and SVG pictures carry R", "[recompute]") {
  const ppipe::schedule r = ppipe::with_recompute(ppipe::make_schedule("1f1b", {2, 3, 1}), {true, true});
  ppipe::csv_options with_transfers;
  with_transfers.transfers = true;
  CHECK(ppipe::from_csv(ppipe::to_csv(r, with_transfers)).ranks == r.ranks);
  const std::string compute_only = ppipe::to_csv(r);
  CHECK(compute_only.find("0R0") != std::string::npos);
  const ppipe::schedule back = ppipe::from_csv(compute_only);
  CHECK(count(back, action_kind::recompute) == 6);
  CHECK(ppipe::simulate(back, ppipe::cost_model::uniform(1, 2)).peak_stage_stashed ==
        ppipe::simulate(r, ppipe::cost_model::uniform(1, 2)).peak_stage_stashed);
  const std::string svg = ppipe::render_svg(r, ppipe::simulate(r, ppipe::cost_model::uniform(1, 2)));
  CHECK(svg.find("R recompute") != std::string::npos);
  CHECK(svg.find("data-action=\"1R0\"") != std::string::npos);
}

TEST_CASE("recompute: a compute-only file with R runs as fast as the schedule it was written from",
          "[recompute]") {
  // Loading pairs each forward's send with the next backward's receive; an R between them must
  // not split that group (it would cost 1F1B p=2 m=12 a sixth of its step).
  struct named {
    const char* name;
    int v;
  };
  for (const named n : {named{"gpipe", 1}, named{"1f1b", 1}, named{"interleaved_1f1b", 2}, named{"zb_h1", 1}}) {
    for (const int p : {2, 4}) {
      for (const int m : {4, 12}) {
        const ppipe::schedule base = ppipe::make_schedule(n.name, {p, m, n.v});
        const ppipe::schedule r = ppipe::with_recompute(base, all_stages(base));
        const ppipe::schedule back = ppipe::from_csv(ppipe::to_csv(r));
        const ppipe::cost_model costs = ppipe::cost_model::uniform(1, 2);
        INFO(n.name << " p=" << p << " m=" << m);
        CHECK(count(back, action_kind::recompute) == count(r, action_kind::recompute));
        CHECK(ppipe::simulate(back, costs).makespan <= ppipe::simulate(r, costs).makespan);
      }
    }
  }
}

TEST_CASE("recompute: a policy keeps the stage's first layer input and every k-th after it", "[recompute]") {
  using ppipe::recompute_policy;
  CHECK(recompute_policy{} == recompute_policy::none);
  CHECK(recompute_policy::every(1) == recompute_policy::none);
  CHECK_FALSE(recompute_policy::none.recomputes());
  CHECK(recompute_policy::full.recomputes());
  CHECK(recompute_policy::every(3).recomputes());
  std::string kept;
  for (int i = 0; i < 8; ++i) kept += recompute_policy::every(3).keeps(i) ? '1' : '0';
  CHECK(kept == "10010010");
  for (int i = 0; i < 8; ++i) {
    CHECK(recompute_policy::none.keeps(i));
    CHECK(recompute_policy::full.keeps(i) == (i == 0));
  }
  CHECK(ppipe::to_string(recompute_policy::none) == "none");
  CHECK(ppipe::to_string(recompute_policy::full) == "full");
  CHECK(ppipe::to_string(recompute_policy::every(4)) == "every 4");
  CHECK_THROWS_WITH(recompute_policy::every(0), Catch::Contains("every(0)") && Catch::Contains("k must be >= 1"));
}
