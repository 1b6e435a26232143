#include <algorithm>
#include <cmath>
#include <limits>
#include <schedule_text.hpp>
#include <vector>

#include <catch.hpp>

#include <ppipe/ppipe.hpp>

using ppipe::cost_model;
using ppipe::simulate;
using ppipe_test::contains;

namespace {

// Integer costs keep every simulated time an exact double, so the textbook ratios can be checked
// by cross-multiplying, with no tolerance.
const std::vector<std::pair<double, double>> fb_costs = {{1, 1}, {1, 2}, {2, 3}};

}  // namespace

TEST_CASE("the textbook example: 4 stages, 16 microbatches") {
  for (const char* name : {"gpipe", "1f1b"}) {
    CAPTURE(name);
    const auto s = ppipe::make_schedule(name, {4, 16, 1});
    const auto sim = simulate(s, cost_model::uniform(1, 2));
    CHECK(sim.makespan == 19 * 3);                         // (m + p - 1)(F + B)
    CHECK(sim.total_idle() * 19 == 3 * 4 * sim.makespan);  // bubble = 3/19 of the step
    CHECK(sim.bubble_fraction() == Approx(3.0 / 19.0));
    CHECK(sim.bubble_overhead() == Approx(0.1875));  // 18.75% relative to compute
  }
}

const ppipe::transfer_model both_models[] = {ppipe::transfer_model::rendezvous,
                                             ppipe::transfer_model::buffered};

TEST_CASE("GPipe and 1F1B idle (p-1)/(m+p-1) of the step with equal stage costs") {
  for (const char* name : {"gpipe", "1f1b"}) {
    for (int p = 1; p <= 8; ++p) {
      for (int m = 1; m <= 20; ++m) {
        for (const auto& [f, b] : fb_costs) {
          for (const auto model : both_models) {
            CAPTURE(name, p, m, f, b, ppipe::to_string(model));
            const auto sim = simulate(ppipe::make_schedule(name, {p, m, 1}),
                                      cost_model::uniform(f, b), {false, model});
            CHECK(sim.makespan == (m + p - 1) * (f + b));
            CHECK(sim.total_idle() * (m + p - 1) == (p - 1) * p * sim.makespan);
            CHECK(sim.total_busy() == p * m * (f + b));
            CHECK(sim.bubble_fraction() == Approx(ppipe::ideal_bubble_fraction(p, m)));
          }
        }
      }
    }
  }
}

TEST_CASE("interleaved 1F1B idles (p-1)/(v*m) relative to compute") {
  for (int p = 2; p <= 8; ++p) {
    for (int v = 2; v <= 4; ++v) {
      for (int m = p; m <= 4 * p; m += p) {
        for (const auto& [f, b] : fb_costs) {
          for (const auto model : both_models) {
            CAPTURE(p, v, m, f, b, ppipe::to_string(model));
            const auto sim = simulate(ppipe::make_schedule("interleaved_1f1b", {p, m, v}),
                                      cost_model::uniform(f, b), {false, model});
            CHECK(sim.total_idle() * v * m == (p - 1) * sim.total_busy());
            CHECK(sim.bubble_fraction() == Approx(ppipe::ideal_bubble_fraction(p, m, v)));
          }
        }
      }
    }
  }
}

TEST_CASE("interleaving cuts the bubble by v against 1F1B") {
  const auto plain = simulate(ppipe::make_schedule("1f1b", {4, 8, 1}), cost_model::uniform(1, 2));
  // Same model split into 4x more, 4x cheaper stages.
  const auto interleaved =
      simulate(ppipe::make_schedule("interleaved_1f1b", {4, 8, 4}), cost_model::uniform(0.25, 0.5));
  CHECK(plain.total_busy() == interleaved.total_busy());
  CHECK(plain.total_idle() == 4 * interleaved.total_idle());
}

TEST_CASE("peak activations: GPipe holds m, 1F1B min(p-s, m), interleaved its warm-up + 1") {
  for (int p = 1; p <= 8; ++p) {
    for (int m = 1; m <= 3 * p; ++m) {
      CAPTURE(p, m);
      const auto gpipe =
          simulate(ppipe::make_schedule("gpipe", {p, m, 1}), cost_model::uniform(1, 2));
      const auto one = simulate(ppipe::make_schedule("1f1b", {p, m, 1}), cost_model::uniform(1, 2));
      for (int s = 0; s < p; ++s) {
        CHECK(gpipe.peak_stage_activations[static_cast<std::size_t>(s)] == m);
        CHECK(one.peak_stage_activations[static_cast<std::size_t>(s)] == std::min(p - s, m));
        CHECK(one.peak_rank_activations[static_cast<std::size_t>(s)] == std::min(p - s, m));
      }
    }
  }
  for (int p = 2; p <= 6; ++p) {
    for (int v = 2; v <= 3; ++v) {
      for (int m = p; m <= 3 * p; m += p) {
        CAPTURE(p, v, m);
        const auto sim = simulate(ppipe::make_schedule("interleaved_1f1b", {p, m, v}),
                                  cost_model::uniform(1, 2));
        for (int r = 0; r < p; ++r) {
          // Megatron's warm-up; with m == p every forward runs first.
          const int warmup = m == p ? m * v : 2 * (p - r - 1) + (v - 1) * p;
          CHECK(sim.peak_rank_activations[static_cast<std::size_t>(r)] ==
                std::min(m * v, warmup + 1));
        }
      }
    }
  }
}

TEST_CASE("forward-only fills the ring in p-1 steps; a partial last group leaves gaps") {
  // m = q*p + r microbatches. Full groups flow back to back: m*v + p - 1 steps when r == 0. A
  // partial group of r < p microbatches comes back to rank 0 only p steps after it left, so each
  // of its v-1 chunk changes idles p - r steps: q*p*v + r*v + (v-1)(p-r) + p - 1.
  for (int p = 1; p <= 6; ++p) {
    for (int v = 1; v <= 3; ++v) {
      for (int m = 1; m <= 3 * p + 1; ++m) {
        CAPTURE(p, v, m);
        const int q = m / p;
        const int r = m % p;
        const int steps = r == 0 ? m * v + p - 1 : q * p * v + r * v + (v - 1) * (p - r) + p - 1;
        for (const auto model :
             {ppipe::transfer_model::rendezvous, ppipe::transfer_model::buffered}) {
          const auto sim = simulate(ppipe::make_schedule("forward_only", {p, m, v}),
                                    cost_model::uniform(2, 1), {false, model});
          CHECK(sim.makespan == 2 * steps);
          CHECK(sim.total_busy() == 2 * p * m * v);
        }
      }
    }
  }
}

TEST_CASE("inference frees activations after the forward and needs no backward costs") {
  const auto s = ppipe::make_schedule("forward_only", {3, 6, 2});
  cost_model forward_only_costs{{{1, 0, 0, 0}}, 0.0};
  const auto sim = simulate(s, forward_only_costs);
  for (int peak : sim.peak_stage_activations) CHECK(peak == 1);
  CHECK_THROWS_WITH(simulate(ppipe::make_schedule("1f1b", {3, 6, 1}), forward_only_costs),
                    contains("backward cost 0"));
}

TEST_CASE("transfers add their latency on the critical path, not on the sender") {
  // One microbatch through p ranks is a chain: p forwards, p backwards, 2(p-1) messages.
  for (int p = 1; p <= 6; ++p) {
    const auto sim =
        simulate(ppipe::make_schedule("1f1b", {p, 1, 1}), cost_model::uniform(1, 2, 0.5));
    CHECK(sim.makespan == p * 3 + 2 * (p - 1) * 0.5);
    CHECK(sim.total_busy() == p * 3);
  }
}

TEST_CASE("the slowest stage sets the pace") {
  // Worked by hand: 1F1B, p=2, m=2; stage 1 costs twice stage 0.
  //   rank 0: F0 [0,1] F1 [1,2]                 B0 [7,9]         B1 [13,15]
  //   rank 1:          F0 [1,3] B0 [3,7] F1 [7,9] B1 [9,13]
  cost_model costs{{{1, 2, 1, 1}, {2, 4, 2, 2}}, 0.0};
  const auto s = ppipe::make_schedule("1f1b", {2, 2, 1});
  const auto sim = simulate(s, costs);
  CHECK(sim.makespan == 15);
  CHECK(sim.busy == std::vector<double>{6, 12});
  CHECK(sim.idle(0) == 9);
  CHECK(sim.idle(1) == 3);
  CHECK(sim.speedup() == Approx(18.0 / 15.0));
  const auto& rank0 = sim.timeline[0];
  REQUIRE(rank0.size() == 4);
  CHECK(ppipe::to_string(rank0[2].act) == "0B0");
  CHECK(rank0[2].start == 7);
  CHECK(rank0[3].start == 13);
  CHECK(rank0[3].end == 15);
}

TEST_CASE("split backward halves are timed and free activations at W") {
  const auto s =
      ppipe_test::from_rows(ppipe::placement::looped(2), 1,
                            {"0F0 0SEND_F0 0RECV_B0 0I0 0W0", "1RECV_F0 1F0 1I0 1SEND_B0 1W0"});
  const auto sim = simulate(s, cost_model{{{1, 9, 2, 3}}, 0.0});
  // Rank 0's F; rank 1's F and I; rank 0's I while rank 1 runs its W; rank 0's W.
  CHECK(sim.makespan == 1 + 1 + 2 + 2 + 3);
  CHECK(sim.busy == std::vector<double>{6, 6});
  // Activations stay until W: with F1 between I0 and W0 two microbatches are held at once (one,
  // had I freed them).
  const auto held =
      ppipe_test::from_rows(ppipe::placement::looped(1), 2, {"0F0 0I0 0F1 0W0 0I1 0W1"});
  CHECK(simulate(held, cost_model::uniform(1, 2)).peak_stage_activations == std::vector<int>{2});
}

TEST_CASE("under rendezvous a sender waits for its receiver; buffered sends do not") {
  // GPipe, p=2, m=3, stage 1's forward twice stage 0's. Buffered: rank 0 runs its forwards back
  // to back. Rendezvous: each send waits until rank 1 posts the receive, after its previous
  // forward.
  cost_model costs{{{1, 2, 1, 1}, {2, 2, 1, 1}}, 0.0};
  const auto s = ppipe::make_schedule("gpipe", {2, 3, 1});
  const auto buffered = simulate(s, costs, {true, ppipe::transfer_model::buffered});
  const auto rendezvous = simulate(s, costs, {true, ppipe::transfer_model::rendezvous});
  CHECK(buffered.timeline[0][2].start == 2);    // 0F2
  CHECK(rendezvous.timeline[0][2].start == 3);  // 0F2 waits for rank 1 to post 1RECV_F1 at 3
  CHECK(rendezvous.timeline[1][2].start == buffered.timeline[1][2].start);  // rank 1 paces both
}

TEST_CASE("the timeline can be skipped for large plans") {
  const auto s = ppipe::make_schedule("1f1b", {4, 8, 1});
  const auto with = simulate(s, cost_model::uniform(1, 2));
  const auto without = simulate(s, cost_model::uniform(1, 2), {false});
  CHECK(without.timeline.empty());
  CHECK(with.timeline.size() == 4);
  CHECK(with.timeline[0].size() == 16);
  CHECK(without.makespan == with.makespan);
  CHECK(without.peak_stage_activations == with.peak_stage_activations);
}

TEST_CASE("bad costs and invalid schedules are refused") {
  const auto s = ppipe::make_schedule("1f1b", {2, 2, 1});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(simulate(s, cost_model::uniform(0, 2)),
                    contains("forward cost 0") && contains("> 0"));
  CHECK_THROWS_WITH(simulate(s, cost_model::uniform(1, -2)), contains("backward cost -2"));
  CHECK_THROWS_WITH(simulate(s, cost_model::uniform(1, nan)), contains("backward cost nan"));
  CHECK_THROWS_WITH(simulate(s, cost_model::uniform(1, 2, -1)), contains("transfer cost -1"));
  CHECK_THROWS_WITH(simulate(s, cost_model{{{}, {}, {}}, 0.0}),
                    contains("3 stage entries for a schedule of 2 stages"));
  auto broken = s;
  broken.ranks[1].pop_back();
  CHECK_THROWS_AS(simulate(broken, cost_model::uniform(1, 2)), ppipe::error);
  const auto deadlocked = ppipe_test::from_rows(
      ppipe::placement::looped(2), 1, {"0RECV_B0 0F0 0SEND_F0 0B0", "1RECV_F0 1F0 1B0 1SEND_B0"});
  try {
    (void)simulate(deadlocked, cost_model::uniform(1, 2));
    FAIL("no error");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::deadlock);
  }
}
