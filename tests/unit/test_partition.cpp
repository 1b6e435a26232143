// Partitioners on known cases, bad input, the report, the simulator integration and the profiler.
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include <catch.hpp>
#include <ppipe/ppipe.hpp>

using ppipe::device_spec;
using ppipe::layer_cost;
using ppipe::partition;
using ppipe::partition_problem;
using ppipe_test::contains;
namespace partitioners = ppipe::partitioners;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

std::vector<layer_cost> equal_layers(int n, double params = 0, double acts = 0) {
  return std::vector<layer_cost>(static_cast<std::size_t>(n), layer_cost{1.0, 2.0, params, acts});
}

device_spec gpu(double speed, double memory = inf, const char* name = "") { return {speed, memory, name}; }

partition_problem one_f_one_b(int p, std::vector<layer_cost> layers, std::vector<device_spec> devices = {},
                              int m = 8) {
  return partition_problem::for_schedule(ppipe::make_schedule("1f1b", {p, m, 1}), std::move(layers),
                                         std::move(devices));
}

}  // namespace

TEST_CASE("80 equal layers over 2 equal GPUs is 40/40, for every partitioner") {
  const partition_problem pb = one_f_one_b(2, equal_layers(80));
  for (std::string_view name : ppipe::partitioner_names) {
    CAPTURE(name);
    const ppipe::partition_report r = ppipe::plan_partition(name, pb);
    CHECK(r.split.sizes() == std::vector<int>{40, 40});
    CHECK(r.sizes() == "40/40");
    CHECK(r.bottleneck_time() == 120.0);
    CHECK(r.imbalance() == 1.0);
    CHECK(r.optimal == (name != "uniform"));
  }
}

TEST_CASE("uniform spreads the remainder over the first stages, as DeepSpeed does") {
  const auto sizes = [](int layers, int p) {
    return partitioners::uniform{}.split(one_f_one_b(p, equal_layers(layers))).sizes();
  };
  CHECK(sizes(10, 4) == std::vector<int>{3, 3, 2, 2});
  CHECK(sizes(7, 7) == std::vector<int>{1, 1, 1, 1, 1, 1, 1});
  CHECK(sizes(9, 2) == std::vector<int>{5, 4});
}

TEST_CASE("speed ratio 1:2 shares layers 1:2") {
  const partition_problem pb = one_f_one_b(2, equal_layers(90), {gpu(1.0), gpu(2.0)});
  const auto r = ppipe::plan_partition(partitioners::heterogeneous{}, pb);
  CHECK(r.split.sizes() == std::vector<int>{30, 60});
  CHECK(r.stages[0].time == r.stages[1].time);
  CHECK(r.optimal);
  // 100 layers cannot split exactly 1:2. 33/67 takes 99 and 100.5, 34/66 takes 102 and 99.
  const auto r100 = ppipe::plan_partition(partitioners::heterogeneous{},
                                          one_f_one_b(2, equal_layers(100), {gpu(1.0), gpu(2.0)}));
  CHECK(r100.split.size(0) == 33);
  CHECK(r100.bottleneck_time() == 100.5);  // 67 layers x 3 / 2 on the fast one
  // The balanced partitioner ignores speeds: 45/45, so the slow device sets the pace.
  const auto even = ppipe::plan_partition(partitioners::balanced{}, pb);
  CHECK(even.split.sizes() == std::vector<int>{45, 45});
  CHECK(even.bottleneck_time() == 135.0);
  CHECK(even.bottleneck_stage == 0);
}

TEST_CASE("an RTX 4090 beside a 3090 gets more layers") {
  const partition_problem pb = one_f_one_b(2, equal_layers(32), {gpu(1.0, inf, "RTX 4090"), gpu(0.6, inf, "RTX 3090")});
  const auto r = ppipe::plan_partition(partitioners::heterogeneous{}, pb);
  CHECK(r.split.sizes() == std::vector<int>{20, 12});
  CHECK_THAT(r.summary(), contains("RTX 4090"));
}

TEST_CASE("a memory cap forces layers off a device") {
  // 1F1B with p=2 holds 2 microbatches on stage 0 and 1 on stage 1. Each layer: 1 of parameters
  // and 0.5 of activations per microbatch, so stage 0 needs 2 per layer and stage 1 needs 1.5.
  const auto layers = equal_layers(80, 1.0, 0.5);
  const auto free = ppipe::plan_partition(partitioners::heterogeneous{}, one_f_one_b(2, layers));
  CHECK(free.split.sizes() == std::vector<int>{40, 40});
  CHECK(free.ranks[0].memory == 80.0);
  CHECK(free.ranks[1].memory == 60.0);
  // With 60 on rank 0, it can hold 30 layers only.
  const partition_problem capped = one_f_one_b(2, layers, {gpu(1.0, 60.0), gpu(1.0, 100.0)});
  const auto r = ppipe::plan_partition(partitioners::heterogeneous{}, capped);
  CHECK(r.split.sizes() == std::vector<int>{30, 50});
  CHECK(r.fits());
  CHECK(r.optimal);
  CHECK(r.ranks[0].memory <= 60.0);
  CHECK(r.bottleneck_stage == 1);
  // The balanced split ignores memory and the report says it does not fit.
  const auto b = ppipe::plan_partition(partitioners::balanced{}, capped);
  CHECK_FALSE(b.fits());
  CHECK_THAT(b.summary(), contains("rank 0 needs 80 but has 60"));
  // GPipe with m=8 holds 8 microbatches on each stage: 5 per layer, so 12 layers fit on rank 0.
  const auto gpipe = partition_problem::for_schedule(ppipe::make_schedule("gpipe", {2, 8, 1}), layers,
                                                     {gpu(1.0, 60.0), gpu(1.0, 400.0)});
  CHECK(ppipe::plan_partition(partitioners::heterogeneous{}, gpipe).split.sizes() == std::vector<int>{12, 68});
}

TEST_CASE("when no split fits, the error says how much memory is missing and where") {
  const auto layers = equal_layers(80, 1.0, 0.5);
  const partition_problem pb = one_f_one_b(2, layers, {gpu(1.0, 60.0, "small"), gpu(1.0, 55.0, "tiny")});
  try {
    (void)partitioners::heterogeneous{}.split(pb);
    FAIL("expected ppipe::error");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::out_of_memory);
    // Layers need 2 on rank 0 and 1.5 on rank 1 each. The split with the smallest worst excess:
    // 31/49 gives 62 (2 over) and 73.5 (18.5 over); 39/41 gives 78 (18 over) and 61.5 (6.5 over).
    // Best: x on rank 0 with 2x - 60 = 1.5(80-x) - 55, x = 36.1: 36/44 -> 12 over, 11 over.
    CHECK_THAT(e.what(), contains("no split of the 80 layers over 2 stages fits in memory"));
    CHECK_THAT(e.what(), contains("the best split, 36/44, still needs 12 more"));
    CHECK_THAT(e.what(), contains("rank 0 (small) lacks 12 (needs 72, has 60"));
    CHECK_THAT(e.what(), contains("rank 1 (tiny) lacks 11 (needs 66, has 55"));
    CHECK_THAT(e.what(), contains("2 microbatches in flight"));
    CHECK_THAT(e.what(), contains("add ranks"));
  }
}

TEST_CASE("the exact search handles a layer that fits on some stages only") {
  // Stage 1 is ten times slower: of the layers it can take within a bound of 2, only the cheap one.
  // Filling stages greedily from the front puts layers 0 and 1 on stage 0 and then fails; the
  // exact search finds 1/1/2.
  std::vector<layer_cost> layers{{0.5, 0.5, 0, 0}, {0.05, 0.05, 0, 0}, {0.5, 0.5, 0, 0}, {0.5, 0.5, 0, 0}};
  const partition_problem pb = one_f_one_b(3, layers, {gpu(1.0), gpu(0.1), gpu(1.0)});
  const auto r = ppipe::plan_partition(partitioners::heterogeneous{}, pb);
  CHECK(r.split.sizes() == std::vector<int>{1, 1, 2});
  CHECK(r.bottleneck_time() == 2.0);
  CHECK(r.optimal);
}

TEST_CASE("balanced spreads the slack of a bottleneck it cannot avoid") {
  // One heavy layer sets the bottleneck; the other stages share the rest evenly instead of
  // the first ones taking all they may.
  std::vector<layer_cost> layers(13, layer_cost{1, 0, 0, 0});
  layers[12].forward = 20;
  const auto pb = partition_problem::for_schedule(ppipe::make_schedule("forward_only", {4, 4, 1}), layers);
  const auto r = ppipe::plan_partition(partitioners::balanced{}, pb);
  CHECK(r.bottleneck_time() == 20.0);
  CHECK(r.split.sizes() == std::vector<int>{4, 4, 4, 1});
}

TEST_CASE("interleaved schedules split over p*v stages in the looped placement") {
  const auto s = ppipe::make_schedule("interleaved_1f1b", {4, 8, 2});
  const partition_problem pb = partition_problem::for_schedule(s, equal_layers(32));
  CHECK(pb.num_stages() == 8);
  const auto r = ppipe::plan_partition(partitioners::balanced{}, pb);
  CHECK(r.split.sizes() == std::vector<int>(8, 4));
  CHECK(r.stages[5].rank == 1);          // stage 5 lives on rank 5 % 4
  CHECK(r.ranks[1].time == 2 * 4 * 3.0);  // two stages of 4 layers
  // A rank's memory limit is shared by its two stages.
  std::vector<device_spec> devices(4, gpu(1.0, inf));
  auto heavy = equal_layers(32, 1.0, 0.25);
  devices[0].memory = 12.0;  // rank 0 holds stages 0 and 4
  const auto capped = partition_problem::for_schedule(s, heavy, devices);
  const auto c = ppipe::plan_partition(partitioners::heterogeneous{}, capped);
  CHECK(c.fits());
  CHECK(c.ranks[0].memory <= 12.0);
  CHECK(c.split.size(0) + c.split.size(4) < 8);
}

TEST_CASE("in-flight counts come from the schedule and match the simulator") {
  for (const char* name : {"gpipe", "1f1b", "interleaved_1f1b", "forward_only"}) {
    CAPTURE(name);
    const auto s = ppipe::make_schedule(name, {4, 8, std::string_view(name) == "interleaved_1f1b" ? 2 : 1});
    const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2));
    CHECK(ppipe::in_flight_peaks(s) == sim.peak_stage_activations);
  }
  CHECK(ppipe::in_flight_peaks(ppipe::make_schedule("1f1b", {4, 8, 1})) == std::vector<int>{4, 3, 2, 1});
  CHECK(ppipe::in_flight_peaks(ppipe::make_schedule("gpipe", {3, 5, 1})) == std::vector<int>{5, 5, 5});
}

TEST_CASE("predict: the simulated step of a partition, and each rank's peak memory") {
  const auto s = ppipe::make_schedule("1f1b", {2, 8, 1});
  const auto layers = equal_layers(90, 1.0, 0.5);
  const partition_problem pb = partition_problem::for_schedule(s, layers, {gpu(1.0), gpu(2.0)});
  const auto good = ppipe::plan_partition(partitioners::heterogeneous{}, pb);
  const auto bad = ppipe::plan_partition(partitioners::uniform{}, pb);
  const ppipe::plan_prediction fast = ppipe::predict(s, pb, good.split);
  const ppipe::plan_prediction slow = ppipe::predict(s, pb, bad.split);
  // Balanced stages of time 90: (m + p - 1) x 90 per step. 45/45 has stage times 135 (F 45,
  // B 90) and 67.5 (F 22.5, B 45): stage 0 computes 8 x 135 and waits once, after its warm-up
  // forwards (90), for stage 1's first forward and backward (ready at 45 + 67.5): 22.5.
  CHECK(fast.step_time() == 9 * 90.0);
  CHECK(slow.step_time() == 8 * 135.0 + 22.5);
  CHECK(slow.step_time() / fast.step_time() == Approx(1.361).epsilon(0.001));
  CHECK(fast.bubble() == Approx(1.0 / 9.0));
  // Peak memory: parameters plus 2 (stage 0) or 1 (stage 1) microbatches of activations.
  CHECK(fast.rank_memory == std::vector<double>{30 + 2 * 15.0, 60 + 1 * 30.0});
  CHECK(fast.rank_memory[0] == fast.report.ranks[0].memory);
  CHECK(fast.fits());
  // The simulator's costs are the partition's: stage times divided by speed.
  const ppipe::cost_model costs = ppipe::stage_cost_model(pb, good.split);
  CHECK(costs.stages[0].forward == 30.0);
  CHECK(costs.stages[1].forward == 30.0);
  CHECK(costs.stages[1].backward == 60.0);
  // A problem built for another schedule is refused.
  CHECK_THROWS_WITH(ppipe::predict(ppipe::make_schedule("1f1b", {3, 8, 1}), pb, good.split),
                    contains("was not built for schedule \"1f1b\" (3 stages on 3 ranks)"));
}

TEST_CASE("predict: exact peak memory of a rank with several stages is at most the report's sum") {
  const auto s = ppipe::make_schedule("interleaved_1f1b", {2, 4, 2});
  const auto pb = partition_problem::for_schedule(s, equal_layers(16, 0.0, 1.0));
  const auto r = ppipe::plan_partition(partitioners::balanced{}, pb);
  const auto pred = ppipe::predict(s, pb, r.split);
  for (int rank = 0; rank < 2; ++rank) {
    CAPTURE(rank);
    CHECK(pred.rank_memory[static_cast<std::size_t>(rank)] <= r.ranks[static_cast<std::size_t>(rank)].memory);
    CHECK(pred.rank_memory[static_cast<std::size_t>(rank)] > 0);
  }
}

TEST_CASE("bad input gets a ppipe::error naming the value and the fix") {
  const auto s = ppipe::make_schedule("1f1b", {4, 8, 1});
  const auto err = [&](std::vector<layer_cost> layers, std::vector<device_spec> devices = {}) -> std::string {
    try {
      (void)partitioners::heterogeneous{}.split(partition_problem::for_schedule(s, std::move(layers), std::move(devices)));
    } catch (const ppipe::error& e) {
      CHECK(e.code() == ppipe::errc::invalid_argument);
      return e.what();
    }
    return "no error";
  };
  const double nan = std::nan("");
  CHECK_THAT(err({}), contains("the model has no layers"));
  CHECK_THAT(err(equal_layers(3)), contains("the model has 3 layers but the schedule has 4 stages"));
  CHECK_THAT(err(equal_layers(3)), contains("use at most 3 stages"));
  auto layers = equal_layers(8);
  layers[5].forward = 0;
  CHECK_THAT(err(layers), contains("layer 5 has forward cost 0; every layer cost must be a finite time > 0"));
  layers[5].forward = -1;
  CHECK_THAT(err(layers), contains("layer 5 has forward cost -1"));
  layers[5].forward = nan;
  CHECK_THAT(err(layers), contains("layer 5 has forward cost nan"));
  layers[5] = layer_cost{1, inf, 0, 0};
  CHECK_THAT(err(layers), contains("layer 5 has backward cost inf"));
  layers[5] = layer_cost{1, 2, -3, 0};
  CHECK_THAT(err(layers), contains("layer 5 has parameter_memory -3; memory must be finite and >= 0"));
  layers[5] = layer_cost{1, 2, 0, nan};
  CHECK_THAT(err(layers), contains("layer 5 has activation_memory nan"));
  const std::vector<device_spec> four(4, gpu(1.0));
  auto zero = four;
  zero[2].speed = 0;
  CHECK_THAT(err(equal_layers(8), zero), contains("rank 2 has speed 0; a speed is a finite factor > 0"));
  auto named = four;
  named[1] = gpu(nan, inf, "RTX 3090");
  CHECK_THAT(err(equal_layers(8), named), contains("rank 1 (RTX 3090) has speed nan"));
  auto no_memory = four;
  no_memory[3].memory = 0;
  CHECK_THAT(err(equal_layers(8), no_memory), contains("rank 3 has memory capacity 0; give a capacity > 0"));
  CHECK_THAT(err(equal_layers(8), {gpu(1.0), gpu(1.0)}), contains("2 devices were given for 4 ranks"));
  // The backward does not count for inference, so it may be left at 0 there.
  auto forward_only = equal_layers(8);
  for (auto& l : forward_only) l.backward = 0;
  CHECK_NOTHROW(partition_problem::for_schedule(ppipe::make_schedule("forward_only", {4, 4, 1}), forward_only));
  CHECK_THAT(err(forward_only), contains("layer 0 has backward cost 0"));
}

TEST_CASE("partitions: construction and lookups, with errors for bad cut points") {
  const partition p = partition::from_sizes({3, 1, 4});
  CHECK(p.bounds() == std::vector<int>{0, 3, 4, 8});
  CHECK(p.num_layers() == 8);
  CHECK(p.num_stages() == 3);
  CHECK(p.first(2) == 4);
  CHECK(p.end(2) == 8);
  CHECK(p.stage_of(0) == 0);
  CHECK(p.stage_of(3) == 1);
  CHECK(p.stage_of(7) == 2);
  CHECK_THROWS_WITH(p.stage_of(8), contains("layer 8 is outside 0..7"));
  CHECK_THROWS_WITH(p.size(3), contains("stage 3 is outside 0..2"));
  CHECK_THROWS_WITH(partition::from_sizes({2, 0, 1}), contains("stage 1 is given 0 layers"));
  CHECK_THROWS_WITH(partition(std::vector<int>{1, 4}), contains("stage 0 must start at layer 0"));
  CHECK_THROWS_WITH(partition(std::vector<int>{0, 4, 4}), contains("stage 1 would hold layers [4, 4), which is empty"));
  const auto pb = one_f_one_b(2, equal_layers(8));
  CHECK_THROWS_WITH(ppipe::evaluate(pb, p), contains("the partition has 3 stages over 8 layers, but the problem has 2 stages"));
}

namespace {

// A clock the test moves by hand: each layer call advances it by that layer's "duration".
struct fake_clock {
  using rep = long long;
  using period = std::micro;
  using duration = std::chrono::duration<rep, period>;
  using time_point = std::chrono::time_point<fake_clock>;
  static constexpr bool is_steady = true;
  static inline long long now_us = 0;
  static time_point now() noexcept { return time_point(duration(now_us)); }
};

}  // namespace

TEST_CASE("profile_layers: warm-up runs are not timed, and the median ignores outliers") {
  std::vector<int> calls(3, 0);
  const auto forward = [&](int i) {
    const int call = calls[static_cast<std::size_t>(i)]++;
    long long us = 100 * (i + 1);
    if (call == 0) us = 1'000'000;  // the first (warm-up) call is slow: lazy initialisation
    if (call == 4) us = 50'000;     // one timed outlier
    fake_clock::now_us += us;
  };
  const auto backward = [&](int i) { fake_clock::now_us += 200 * (i + 1); };
  const auto costs = ppipe::profile_layers<fake_clock>(3, forward, backward, {1, 5});
  REQUIRE(costs.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(calls[static_cast<std::size_t>(i)] == 6);  // 1 warm-up + 5 timed
    CHECK(costs[static_cast<std::size_t>(i)].forward == Approx(100e-6 * (i + 1)));
    CHECK(costs[static_cast<std::size_t>(i)].backward == Approx(200e-6 * (i + 1)));
  }
  // Even repeats: the mean of the middle two.
  int n = 0;
  const double t = ppipe::median_seconds<fake_clock>([&] { fake_clock::now_us += (++n % 2 == 0) ? 300 : 100; }, {0, 4});
  CHECK(t == Approx(200e-6));
  // A layer too fast for the clock still gets a cost > 0.
  const auto instant = ppipe::profile_forward<fake_clock>(2, [](int) {});
  CHECK(instant[0].forward == Approx(1e-6));
  CHECK(instant[0].backward == 0.0);
  CHECK_THROWS_WITH(ppipe::profile_layers(0, [](int) {}, [](int) {}), contains("at least one layer (layers=0)"));
  CHECK_THROWS_WITH(ppipe::median_seconds([] {}, {-1, 5}), contains("warmup=-1 repeats=5"));
  CHECK_THROWS_WITH(ppipe::median_seconds([] {}, {0, 0}), contains("repeats >= 1"));
}

TEST_CASE("profiled costs feed the balanced partitioner") {
  // Real timing on the host: layer i spins for a time proportional to its weight. Only the
  // partition's shape is checked, with a wide margin, never a time.
  const std::vector<int> weight{1, 1, 1, 1, 8, 8};
  volatile double sink = 0;
  const auto spin = [&](int i) {
    for (int k = 0; k < weight[static_cast<std::size_t>(i)] * 20000; ++k) sink = sink + std::sqrt(double(k));
  };
  const auto costs = ppipe::profile_layers(6, spin, spin, {1, 5});
  const auto pb = partition_problem::for_schedule(ppipe::make_schedule("1f1b", {2, 4, 1}), costs);
  CHECK(ppipe::partitioners::balanced{}.split(pb).sizes() == std::vector<int>{5, 1});
}
