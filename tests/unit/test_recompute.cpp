// Activation recomputation in the schedule IR: with_recompute() puts an R before each backward of
// the chosen stages; the validator orders R between its forward and its backward; the simulator
// charges its time and counts its microbatches as stashed from F to R and held from R to the
// backward, as in_flight_peaks()/stashed_peaks() count them; CSV and SVG carry R. The planner
// counts a recomputing stage's time and memory by its policy, predicts the pool's bytes, and
// chooses recomputation per stage where it buys a faster split that fits.

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "ppipe/layers/layers.hpp"
#include "ppipe/partition/detail/split_search.hpp"
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
  // Stage 0 never runs R, so its recompute cost (NaN here: never measured) is not checked; stage
  // 1's is.
  const ppipe::stage_costs none{1.0, 2.0, 1.0, 1.0, std::nan("")};
  const ppipe::stage_costs some{1.0, 2.0, 1.0, 1.0, 0.5};
  CHECK_NOTHROW(ppipe::simulate(r, ppipe::cost_model{{none, some}, 0.0}));
  CHECK_THROWS_WITH(ppipe::simulate(r, ppipe::cost_model{{some, none}, 0.0}), Catch::Contains("stage 1 has recompute cost nan"));
}

TEST_CASE("recompute: R's cost is the stage's own and must be a time", "[recompute]") {
  const ppipe::schedule r = ppipe::with_recompute(ppipe::make_schedule("gpipe", {1, 2, 1}), {true});
  ppipe::stage_costs c{1.0, 2.0, 1.0, 1.0, 0.5};
  const ppipe::simulation sim = ppipe::simulate(r, ppipe::cost_model{{c}, 0.0});
  CHECK(sim.makespan == Approx(2 * (1.0 + 0.5 + 2.0)));
  c.recompute = 0.0;  // a one-layer stage's R re-runs nothing
  CHECK(ppipe::simulate(r, ppipe::cost_model{{c}, 0.0}).makespan == Approx(2 * (1.0 + 2.0)));
  c.recompute = -1.0;
  CHECK_THROWS_WITH(ppipe::simulate(r, ppipe::cost_model{{c}, 0.0}),
                    Catch::Contains("recompute cost -1") && Catch::Contains("finite time >= 0"));
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

TEST_CASE("recompute: the planner's problem counts held and stashed microbatches by policy", "[recompute][plan]") {
  const ppipe::schedule g = ppipe::make_schedule("gpipe", {2, 8, 1});
  const std::vector<ppipe::layer_cost> layers(6);
  const auto none = ppipe::partition_problem::for_schedule(g, layers);
  CHECK(none.in_flight == std::vector<int>{8, 8});
  CHECK(none.stashed.empty());
  const auto full = ppipe::partition_problem::for_schedule(g, layers, {}, {ppipe::recompute_policy::full});
  CHECK(full.in_flight == std::vector<int>{8, 8});  // held or stashed, at one moment
  CHECK(full.held == std::vector<int>{1, 1});
  CHECK(full.stashed == std::vector<int>{8, 8});
  const auto one = ppipe::partition_problem::for_schedule(
      g, layers, {}, {ppipe::recompute_policy::none, ppipe::recompute_policy::every(2)});
  CHECK(one.held == std::vector<int>{8, 1});
  CHECK(one.stashed == std::vector<int>{0, 8});
  // R actions of the schedule's own, with no policy: in full, as the runtime runs them.
  const auto own = ppipe::partition_problem::for_schedule(ppipe::with_recompute(g, {true, false}), layers);
  CHECK(own.policy(0) == ppipe::recompute_policy::full);
  CHECK(own.policy(1) == ppipe::recompute_policy::none);
  CHECK_THROWS_WITH(ppipe::partition_problem::for_schedule(g, layers, {}, std::vector<ppipe::recompute_policy>(3)),
                    Catch::Contains("3 recompute policies") && Catch::Contains("one per stage"));
  ppipe::partition_problem bad = full;
  bad.recompute[0] = ppipe::recompute_policy::none;
  CHECK_THROWS_WITH(bad.check(), Catch::Contains("stage 0 has stashed 8 with recompute policy none"));
}

TEST_CASE("recompute: the partitioners' stage figures are the problem's, for every range and policy",
          "[recompute][plan]") {
  // Layers of different costs and sizes, so that an off-by-one in the strided sums shows.
  std::vector<ppipe::layer_cost> layers;
  for (int l = 0; l < 11; ++l) {
    layers.push_back({1.0 + l % 4, 2.0 + l % 3, 0.5 * (l % 2), 1.0 + (l * 7) % 5});
  }
  const ppipe::schedule g = ppipe::make_schedule("gpipe", {2, 5, 1});
  for (const ppipe::recompute_policy policy :
       {ppipe::recompute_policy::none, ppipe::recompute_policy::every(2), ppipe::recompute_policy::every(3),
        ppipe::recompute_policy::full}) {
    const std::vector<ppipe::device_spec> devices{{1.0, 1e9, "a"}, {0.5, 1e9, "b"}};
    const auto pb = ppipe::partition_problem::for_schedule(g, layers, devices, {policy});
    const ppipe::detail::split_tables t(pb, true);
    for (int s = 0; s < 2; ++s) {
      for (int i = 0; i < 11; ++i) {
        for (int j = i + 1; j <= 11; ++j) {
          INFO(ppipe::to_string(policy) << " stage " << s << " layers [" << i << ", " << j << ")");
          double cost = 0;
          double params = 0;
          double acts = 0;
          for (int l = i; l < j; ++l) {
            cost += pb.cost(static_cast<std::size_t>(l));
            params += layers[static_cast<std::size_t>(l)].parameter_memory;
            acts += layers[static_cast<std::size_t>(l)].activation_memory;
          }
          const double speed = devices[static_cast<std::size_t>(s)].speed;
          CHECK(t.time(s, i, j) == Approx((cost + pb.recompute_time(s, i, j)) / speed));
          const double all = params + pb.in_flight[static_cast<std::size_t>(s)] * acts;
          const double split = params + pb.held_of(s) * acts + pb.stashed_of(s) * pb.stashed_memory(s, i, j);
          CHECK(t.memory(s, i, j) == Approx(policy.recomputes() ? std::min(all, split) : all));
          CHECK(t.memory(s, i, j) == Approx(pb.stage_memory(s, i, j)));
        }
      }
    }
  }
  // The problem's own figures, by hand: layers 0..4, every(2) keeps the inputs of layers 0, 2, 4
  // and re-runs the forwards of layers 0 and 2.
  const auto pb = ppipe::partition_problem::for_schedule(g, layers, {}, {ppipe::recompute_policy::every(2)});
  CHECK(pb.recompute_time(0, 0, 5) == layers[0].forward + layers[2].forward);
  CHECK(pb.stashed_memory(0, 0, 5) ==
        layers[0].activation_memory + layers[2].activation_memory + layers[4].activation_memory);
}

TEST_CASE("recompute: predict() replays R, charging its forwards and counting what a stash keeps",
          "[recompute][plan]") {
  // 12 alike layers on 2 ranks, GPipe m=8: 6 layers a stage, parameters 1 and activations 1 each.
  const std::vector<ppipe::layer_cost> layers(12, ppipe::layer_cost{1.0, 2.0, 1.0, 1.0});
  const ppipe::schedule g = ppipe::make_schedule("gpipe", {2, 8, 1});
  const ppipe::partition split({0, 6, 12});
  struct expected {
    ppipe::recompute_policy policy;
    double step;    // 8 microbatches + 1 step of fill, at 18 + the recompute per microbatch
    double memory;  // 6 parameters + the peak of held and stashed activations at one moment
  };
  for (const expected e : {expected{ppipe::recompute_policy::none, 9 * 18.0, 6 + 8 * 6.0},
                           expected{ppipe::recompute_policy::every(2), 9 * 21.0, 6 + 6 + 7 * 3.0},
                           expected{ppipe::recompute_policy::full, 9 * 23.0, 6 + 6 + 7 * 1.0}}) {
    INFO(ppipe::to_string(e.policy));
    const auto pb = ppipe::partition_problem::for_schedule(g, layers, {}, {e.policy});
    const ppipe::plan_prediction pr = ppipe::predict(g, pb, split);
    CHECK(pr.step_time() == e.step);
    CHECK(pr.rank_memory == std::vector<double>{e.memory, e.memory});
    // The report's figure adds the held and stashed peaks, which fall at different moments.
    CHECK(pr.report.ranks[0].memory >= e.memory);
  }
}

TEST_CASE("recompute: the pool's peak falls by what predict() says, byte for byte", "[recompute][plan]") {
  // The kit's MLP with layers of different widths; activation_memory is each layer's input, in
  // bytes for one microbatch of 8 rows. The prediction leaves out what both runs hold alike
  // (outputs, gradients), so the savings, not the peaks, must agree.
  const std::vector<int> widths{16, 64, 32, 64, 48, 4};
  std::vector<ppipe::layer_cost> costs;
  for (std::size_t w = 0; w + 1 < widths.size(); ++w) {
    costs.push_back({1, 2, 0, 8.0 * widths[w] * 4});                     // linear: its input
    if (w + 2 < widths.size()) costs.push_back({1, 2, 0, 8.0 * widths[w + 1] * 4});  // ReLU
  }
  const ppipe::partition split({0, 5, 9});
  const auto peaks = [&](const char* name, ppipe::recompute_policy policy) {
    auto model = ppipe::layers::sequential::mlp(widths, 11);
    REQUIRE(static_cast<std::size_t>(model.num_layers()) == costs.size());
    ppipe::pipeline_options o;
    o.ranks = 2;
    o.microbatches = 8;
    o.schedule = ppipe::make_schedule(name, {2, 8, 1});
    o.split = split;
    o.recompute = {policy};
    ppipe::pipeline<ppipe::layers::sequential> pipe(model, o, ppipe::layers::mse_loss{});
    (void)pipe.train_step(ppipe::payload{ppipe::host_tensor(ppipe::shape{64, 16})},
                          ppipe::payload{ppipe::host_tensor(ppipe::shape{64, 4})});
    return std::vector<double>{static_cast<double>(pipe.memory(0).peak_bytes),
                               static_cast<double>(pipe.memory(1).peak_bytes)};
  };
  for (const char* name : {"gpipe", "1f1b", "zb_h1"}) {
    const ppipe::schedule s = ppipe::make_schedule(name, {2, 8, 1});
    const auto predicted = [&](ppipe::recompute_policy policy) {
      return ppipe::predict(s, ppipe::partition_problem::for_schedule(s, costs, {}, {policy}), split).rank_memory;
    };
    const std::vector<double> kept = peaks(name, ppipe::recompute_policy::none);
    const std::vector<double> kept_predicted = predicted(ppipe::recompute_policy::none);
    for (const ppipe::recompute_policy policy : {ppipe::recompute_policy::every(2), ppipe::recompute_policy::full}) {
      const std::vector<double> got = peaks(name, policy);
      const std::vector<double> want = predicted(policy);
      for (std::size_t st = 0; st < 2; ++st) {
        INFO(name << ", " << ppipe::to_string(policy) << ", stage " << st);
        CHECK(kept[st] - got[st] == kept_predicted[st] - want[st]);
      }
      if (std::string(name) == "gpipe") CHECK(kept[0] - got[0] > 0);  // it saves something at all
    }
  }
}

TEST_CASE("recompute: plan_recompute recomputes where that buys a faster split within memory", "[recompute][plan]") {
  // examples/plans/mixed_gpus.txt in GiB and ms: a 1.4B GPT on an RTX 4090 and a 3090.
  const double mib = 1.0 / 1024;
  std::vector<ppipe::layer_cost> layers{{0.1, 0.3, 1.6, 8 * mib}};
  for (int b = 0; b < 24; ++b) layers.push_back({4, 8, 768 * mib, 120 * mib});
  layers.push_back({7, 14, 1.5, 40 * mib});
  const std::vector<ppipe::device_spec> devices{{1.0, 24.0, "RTX 4090"}, {0.6, 24.0, "RTX 3090"}};
  const ppipe::partitioners::heterogeneous het;

  // GPipe holds all 8 microbatches: memory pushes layers off the 4090 unless it recomputes.
  const ppipe::schedule g = ppipe::make_schedule("gpipe", {2, 8, 1});
  const ppipe::partition_report without =
      ppipe::plan_partition(het, ppipe::partition_problem::for_schedule(g, layers, devices));
  const double without_step =
      ppipe::predict(g, ppipe::partition_problem::for_schedule(g, layers, devices), without).step_time();
  const ppipe::recompute_plan with = ppipe::plan_recompute(het, g, layers, devices);
  CHECK(with.fits());
  CHECK(with.recomputes());
  CHECK(with.prediction.step_time() < without_step);
  CHECK(with.policies[1] == ppipe::recompute_policy::none);  // the slow 3090 is the bottleneck: no extra work
  for (std::size_t r = 0; r < 2; ++r) CHECK(with.prediction.rank_memory[r] <= devices[r].memory);

  // 1F1B fits its fastest split as it is: nothing to buy.
  const ppipe::recompute_plan f = ppipe::plan_recompute(het, ppipe::make_schedule("1f1b", {2, 8, 1}), layers, devices);
  CHECK_FALSE(f.recomputes());

  // One layer a stage: R re-runs nothing and costs nothing, and recomputing cannot shrink memory.
  const std::vector<ppipe::layer_cost> two{{1, 2, 1, 1}, {1, 2, 1, 1}};
  const ppipe::recompute_plan one = ppipe::plan_recompute(het, g, two, {{1.0, 100.0, "a"}, {1.0, 100.0, "b"}});
  CHECK(one.fits());
  CHECK_FALSE(one.recomputes());

  // A schedule with R of its own is refused: the policies are what plan_recompute chooses.
  CHECK_THROWS_WITH(ppipe::plan_recompute(het, ppipe::with_recompute(g, {true, false}), layers, devices),
                    Catch::Contains("has R actions of its own"));
  // Forward-only: nothing to recompute, and the split's own reason when nothing fits.
  const std::vector<ppipe::device_spec> tiny{{1.0, 1.0, "a"}, {0.6, 1.0, "b"}};
  CHECK_THROWS_WITH(ppipe::plan_recompute(het, ppipe::make_schedule("forward_only", {2, 8, 1}), layers, tiny),
                    Catch::Contains("no split of the 26 layers") && !Catch::Contains("recomputing"));

  // 8 GiB cards hold not even the parameters.
  const std::vector<ppipe::device_spec> small{{1.0, 8.0, "a"}, {0.6, 8.0, "b"}};
  try {
    (void)ppipe::plan_recompute(het, g, layers, small);
    FAIL("expected out_of_memory");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::out_of_memory);
    CHECK_THAT(e.what(), Catch::Contains("even with every stage recomputing in full"));
  }
}
