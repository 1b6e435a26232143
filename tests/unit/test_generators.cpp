#include <string>
#include <vector>

#include <catch.hpp>
#include <ppipe/ppipe.hpp>
#include <schedule_text.hpp>

using ppipe::action_kind;
using ppipe::schedule_params;
using ppipe_test::compute_order;
using ppipe_test::contains;

namespace {

// Counts of each kind over the whole schedule.
std::vector<int> kind_counts(const ppipe::schedule& s) {
  std::vector<int> counts(ppipe::action_kind_count, 0);
  for (const auto& list : s.ranks) {
    for (const ppipe::action& a : list) ++counts[static_cast<std::size_t>(a.kind)];
  }
  return counts;
}

// The (p, m, v) combinations every generator is checked over.
struct grid_point {
  int p, m, v;
};
std::vector<grid_point> grid(bool any_v, bool m_multiple_of_p) {
  std::vector<grid_point> out;
  for (int p = 1; p <= 8; ++p) {
    for (int v = 1; v <= (any_v ? 4 : 1); ++v) {
      for (int m = 1; m <= 3 * p + 2; ++m) {
        if (m_multiple_of_p && v > 1 && m % p != 0) continue;
        out.push_back({p, m, v});
      }
    }
  }
  return out;
}

void check_generated(const ppipe::schedule& s, const grid_point& g, bool training) {
  CAPTURE(s.name, g.p, g.m, g.v);
  for (const auto model : {ppipe::transfer_model::rendezvous, ppipe::transfer_model::buffered}) {
    const ppipe::validation_report report = ppipe::check_schedule(s, model);
    CAPTURE(ppipe::to_string(model));
    INFO(report.message());
    REQUIRE(report.ok());
  }
  CHECK(s.num_ranks() == g.p);
  CHECK(s.num_stages() == g.p * g.v);
  CHECK(s.microbatches == g.m);
  const auto counts = kind_counts(s);
  const int slots = g.p * g.v * g.m;
  // Looped placement with p > 1 puts neighbouring stages on different ranks, so every stage
  // boundary carries one message per microbatch each way.
  const int crossings = g.p > 1 ? (g.p * g.v - 1) * g.m : 0;
  CHECK(counts[static_cast<int>(action_kind::forward)] == slots);
  CHECK(counts[static_cast<int>(action_kind::backward)] == (training ? slots : 0));
  CHECK(counts[static_cast<int>(action_kind::send_activation)] == crossings);
  CHECK(counts[static_cast<int>(action_kind::recv_activation)] == crossings);
  CHECK(counts[static_cast<int>(action_kind::send_gradient)] == (training ? crossings : 0));
  CHECK(counts[static_cast<int>(action_kind::recv_gradient)] == (training ? crossings : 0));
  CHECK(s.mode == (training ? ppipe::schedule_mode::training : ppipe::schedule_mode::inference));
}

}  // namespace

TEST_CASE("every built-in schedule validates over a grid of (p, m, v)") {
  for (const grid_point& g : grid(false, false)) {
    check_generated(ppipe::schedules::gpipe::generate({g.p, g.m, 1}), g, true);
    check_generated(ppipe::schedules::one_f_one_b::generate({g.p, g.m, 1}), g, true);
  }
  for (const grid_point& g : grid(true, true)) {
    check_generated(ppipe::schedules::interleaved_1f1b::generate({g.p, g.m, g.v}), g, true);
  }
  for (const grid_point& g : grid(true, false)) {
    check_generated(ppipe::schedules::forward_only::generate({g.p, g.m, g.v}), g, false);
  }
}

TEST_CASE("GPipe runs every forward, then every backward") {
  const auto s = ppipe::schedules::gpipe::generate({3, 4, 1});
  CHECK(compute_order(s, 0) == "0F0 0F1 0F2 0F3 0B0 0B1 0B2 0B3");
  CHECK(compute_order(s, 2) == "2F0 2F1 2F2 2F3 2B0 2B1 2B2 2B3");
  // Transfers sit next to the compute that produces or consumes them.
  CHECK(ppipe::to_string(s.ranks[1][0]) == "1RECV_F0");
  CHECK(ppipe::to_string(s.ranks[1][2]) == "1SEND_F0");
}

TEST_CASE("1F1B warms up with p-r-1 forwards, alternates, then drains") {
  const auto s = ppipe::schedules::one_f_one_b::generate({4, 6, 1});
  CHECK(compute_order(s, 0) == "0F0 0F1 0F2 0F3 0B0 0F4 0B1 0F5 0B2 0B3 0B4 0B5");
  CHECK(compute_order(s, 1) == "1F0 1F1 1F2 1B0 1F3 1B1 1F4 1B2 1F5 1B3 1B4 1B5");
  CHECK(compute_order(s, 3) == "3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3 3F4 3B4 3F5 3B5");
  // With fewer microbatches than ranks the warm-up is cut to m.
  const auto short_run = ppipe::schedules::one_f_one_b::generate({4, 2, 1});
  CHECK(compute_order(short_run, 0) == "0F0 0F1 0B0 0B1");
}

TEST_CASE("interleaved 1F1B follows Megatron's chunk order") {
  // p=2, v=2, m=4: rank 0 holds stages 0 and 2, rank 1 stages 1 and 3. Forwards go in groups of
  // p microbatches per chunk; backwards walk the chunks in reverse. Rank 0 warms up with
  // 2(p-1) + (v-1)p = 4 forwards, rank 1 with 2.
  const auto s = ppipe::schedules::interleaved_1f1b::generate({2, 4, 2});
  CHECK(s.place.style() == "looped");
  CHECK(compute_order(s, 0) == "0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3");
  CHECK(compute_order(s, 1) == "1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3");
  // The last rank hands chunk 0's output to rank 0's chunk 1 across the ring.
  bool wraps = false;
  for (const ppipe::action& a : s.ranks[1]) wraps |= ppipe::to_string(a) == "1SEND_F0";
  CHECK(wraps);
}

TEST_CASE("interleaved 1F1B with v=1 is plain 1F1B") {
  const auto plain = ppipe::schedules::one_f_one_b::generate({4, 7, 1});
  const auto interleaved = ppipe::schedules::interleaved_1f1b::generate({4, 7, 1});
  CHECK(interleaved.name == "interleaved_1f1b");
  CHECK(interleaved.ranks == plain.ranks);
}

TEST_CASE("forward-only keeps groups of p requests moving round the ranks") {
  const auto s = ppipe::schedules::forward_only::generate({2, 3, 2});
  CHECK(compute_order(s, 0) == "0F0 0F1 2F0 2F1 0F2 2F2");
  CHECK(compute_order(s, 1) == "1F0 1F1 3F0 3F1 1F2 3F2");
}

TEST_CASE("schedules are generated by tag or by name") {
  STATIC_REQUIRE(ppipe::schedule_policy<ppipe::schedules::gpipe>);
  STATIC_REQUIRE(ppipe::schedule_policy<ppipe::schedules::interleaved_1f1b>);
  STATIC_REQUIRE_FALSE(ppipe::schedule_policy<int>);
  const auto by_tag = ppipe::make_schedule(ppipe::schedules::one_f_one_b{}, {4, 8, 1});
  const auto by_name = ppipe::make_schedule("1f1b", {4, 8, 1});
  CHECK(by_tag.ranks == by_name.ranks);
  CHECK(ppipe::make_schedule("interleaved", {2, 4, 2}).name == "interleaved_1f1b");
  for (std::string_view name : ppipe::schedule_names) {
    CHECK(ppipe::make_schedule(name, {2, 4, name == "zb_v" || name == "dualpipe_v" ? 2 : 1}).name == name);
  }
  CHECK_THROWS_WITH(ppipe::make_schedule("zb", {2, 4, 1}),
                    contains("unknown schedule \"zb\"") &&
                        contains("gpipe, 1f1b, interleaved_1f1b, zb_h1, zb_v, dualpipe_v, forward_only"));
}

TEST_CASE("invalid (p, m, v) are refused with the values that work") {
  const auto code_of = [](auto&& make) {
    try {
      make();
    } catch (const ppipe::error& e) {
      return e.code();
    }
    return ppipe::errc{};
  };
  CHECK(code_of([] { ppipe::schedules::gpipe::generate({4, 0, 1}); }) == ppipe::errc::invalid_argument);
  CHECK_THROWS_WITH(ppipe::schedules::gpipe::generate({4, 0, 1}), contains("m=0") && contains("m >= 1"));
  CHECK_THROWS_WITH(ppipe::schedules::one_f_one_b::generate({0, 4, 1}), contains("p=0"));
  CHECK_THROWS_WITH(ppipe::schedules::one_f_one_b::generate({4, 4, 2}),
                    contains("v=2") && contains("interleaved_1f1b for v > 1"));
  CHECK_THROWS_WITH(ppipe::schedules::interleaved_1f1b::generate({4, 4, 0}), contains("v=0"));
  CHECK_THROWS_WITH(ppipe::schedules::interleaved_1f1b::generate({4, 6, 2}),
                    contains("multiple of p") && contains("m=6") && contains("use m=4 or m=8"));
  CHECK_THROWS_WITH(ppipe::schedules::interleaved_1f1b::generate({4, 3, 2}),
                    contains("use m=4,") && !contains("m=0"));
  CHECK_THROWS_WITH(ppipe::schedules::forward_only::generate({1 << 20, 1 << 10, 1}),
                    contains("more than ppipe supports"));
}
