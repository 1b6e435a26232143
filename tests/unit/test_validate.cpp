#include <algorithm>
#include <string>
#include <vector>

#include <catch.hpp>
#include <ppipe/ppipe.hpp>
#include <schedule_text.hpp>

using ppipe::placement;
using ppipe::problem_kind;
using ppipe_test::contains;
using ppipe_test::from_rows;

namespace {

// A valid 1F1B schedule for p=2, m=2, written out by hand.
const std::vector<std::string> good_rows = {
    "0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1",
    "1RECV_F0 1F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1",
};

ppipe::schedule_problem problem_of(const ppipe::schedule& s) {
  const ppipe::validation_report report = ppipe::check_schedule(s);
  REQUIRE_FALSE(report.ok());
  INFO(report.message());
  return *report.problem;
}

void check_location(const ppipe::schedule_problem& p, problem_kind kind, int rank, int step, const char* act) {
  CHECK(ppipe::to_string(p.kind) == ppipe::to_string(kind));
  CHECK(p.rank == rank);
  CHECK(p.step == step);
  CHECK(ppipe::to_string(p.act) == act);
}

}  // namespace

TEST_CASE("a hand-written 1F1B schedule is valid") {
  const auto s = from_rows(placement::looped(2), 2, good_rows);
  const auto report = ppipe::check_schedule(s);
  CHECK(report.ok());
  CHECK(report.message().empty());
  CHECK_NOTHROW(ppipe::validate(s));
  CHECK(s.ranks == ppipe::make_schedule("1f1b", {2, 2, 1}).ranks);
}

TEST_CASE("a compute-only schedule gets its transfers from add_communication") {
  auto s = from_rows(placement::looped(2), 2, {"0F0 0F1 0B0 0B1", "1F0 1B0 1F1 1B1"});
  CHECK_FALSE(ppipe::check_schedule(s).ok());  // receives are missing
  s = ppipe::add_communication(std::move(s));
  CHECK(ppipe::check_schedule(s).ok());
  CHECK(s.ranks == ppipe::make_schedule("1f1b", {2, 2, 1}).ranks);
  CHECK_THROWS_WITH(ppipe::add_communication(s), contains("already has transfers"));
}

TEST_CASE("stages next to each other on one rank hand over without transfers") {
  // Stages 0 and 1 on rank 0, stage 2 on rank 1.
  const auto s = ppipe::add_communication(from_rows(placement::custom({0, 0, 1}, 2), 1,
                                                    {"0F0 1F0 1B0 0B0", "2F0 2B0"}));
  CHECK(ppipe_test::compute_order(s, 0) == "0F0 1F0 1B0 0B0");
  CHECK(s.ranks[0].size() == 6);  // 1SEND_F0 and 1RECV_B0 only
  CHECK(ppipe::check_schedule(s).ok());
  const auto wrong = ppipe::add_communication(from_rows(placement::custom({0, 0, 1}, 2), 1,
                                                        {"0F0 1F0 0B0 1B0", "2F0 2B0"}));
  const auto p = problem_of(wrong);
  check_location(p, problem_kind::order, 0, 3, "0B0");
  CHECK_THAT(p.what, contains("before 1B0 (its output gradient)") && contains("runs only at step 5"));
}

TEST_CASE("a missing action is reported with the rank that should run it") {
  auto rows = good_rows;
  rows[0] = "0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1";  // 0B1 dropped
  const auto p = problem_of(from_rows(placement::looped(2), 2, rows));
  check_location(p, problem_kind::missing, 0, -1, "0B1");
  CHECK_THAT(p.what, contains("rank 0 never runs 0B1 (backward of stage 0, microbatch 1)"));

  const auto no_forward = problem_of(from_rows(placement::looped(1), 2, {"0F0 0B0 0B1"}));
  CHECK(no_forward.kind == problem_kind::order);  // B1 before its (absent) forward
  const auto dropped_forward = problem_of(from_rows(placement::looped(1), 2, {"0F0 0B0"}));
  check_location(dropped_forward, problem_kind::missing, 0, -1, "0F1");
}

TEST_CASE("an action before what it needs is reported where it stands") {
  SECTION("backward before forward") {
    auto rows = good_rows;
    rows[1] = "1B0 1RECV_F0 1F0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1";
    const auto p = problem_of(from_rows(placement::looped(2), 2, rows));
    check_location(p, problem_kind::order, 1, 0, "1B0");
    CHECK_THAT(p.what, contains("rank 1 step 0") && contains("runs before 1F0 (its activations)") &&
                           contains("runs only at step 2"));
  }
  SECTION("forward before its receive") {
    auto rows = good_rows;
    rows[1] = "1F0 1RECV_F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1";
    check_location(problem_of(from_rows(placement::looped(2), 2, rows)), problem_kind::order, 1, 0, "1F0");
  }
  SECTION("send before the data exists") {
    auto rows = good_rows;
    rows[0] = "0SEND_F0 0F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1";
    check_location(problem_of(from_rows(placement::looped(2), 2, rows)), problem_kind::order, 0, 0, "0SEND_F0");
  }
  SECTION("weight gradient before input gradient") {
    const auto p = problem_of(from_rows(placement::looped(1), 1, {"0F0 0W0 0I0"}));
    check_location(p, problem_kind::order, 0, 1, "0W0");
  }
}

TEST_CASE("sends and receives must match, in the same order per channel") {
  SECTION("a receive whose send never happens") {
    auto rows = good_rows;
    rows[0] = "0F0 0SEND_F0 0F1 0RECV_B0 0B0 0RECV_B1 0B1";  // 0SEND_F1 dropped
    const auto p = problem_of(from_rows(placement::looped(2), 2, rows));
    check_location(p, problem_kind::unmatched_transfer, 1, 4, "1RECV_F1");
    CHECK_THAT(p.what, contains("rank 0 never sends it; add 0SEND_F1 on rank 0"));
  }
  SECTION("a send that is never received") {
    auto rows = good_rows;
    rows[1] = "1RECV_F0 1F0 1B0 1SEND_B0 1RECV_F1 1F1 1B1";  // 1SEND_B1 dropped, 0RECV_B1 kept
    rows[0] = "0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1";
    const auto p = problem_of(from_rows(placement::looped(2), 2, rows));
    check_location(p, problem_kind::unmatched_transfer, 0, 6, "0RECV_B1");
  }
  SECTION("an activation taken where a gradient was sent: one channel per pair of ranks") {
    // In interleaved 1F1B rank 0 sends rank 1 both activations (stage 0 -> 1) and gradients
    // (stage 2 -> 1). NCCL matches them by order alone, so rank 1 must receive them in the order
    // rank 0 sends them, whatever their kind.
    auto s = ppipe::make_schedule("interleaved_1f1b", {2, 4, 2});
    auto& rank1 = s.ranks[1];
    const auto at = [&](const char* text) {
      return std::find(rank1.begin(), rank1.end(), ppipe::parse_action(text));
    };
    const auto early = at("1RECV_F3");
    const auto gradient = at("1RECV_B0");
    REQUIRE(gradient < early);
    std::rotate(gradient, early, early + 1);  // 1RECV_F3 now comes right before 1RECV_B0
    const auto p = problem_of(s);
    CHECK(p.kind == problem_kind::mismatched_transfer);
    CHECK(p.rank == 1);
    CHECK(ppipe::to_string(p.act) == "1RECV_F3");
    CHECK_THAT(p.what, contains("rank 0's message #5 to rank 1 is 2SEND_B0") &&
                           contains("rank 1's receive #5 is 1RECV_F3") && contains("which expects 0SEND_F3") &&
                           contains("whatever their kind"));
  }
  SECTION("messages received in another order than sent") {
    auto rows = good_rows;
    rows[1] = "1RECV_F1 1F1 1RECV_F0 1F0 1B0 1SEND_B0 1B1 1SEND_B1";
    const auto p = problem_of(from_rows(placement::looped(2), 2, rows));
    check_location(p, problem_kind::mismatched_transfer, 1, 0, "1RECV_F1");
    CHECK_THAT(p.what, contains("rank 0's message #0 to rank 1 is 0SEND_F0 (step 1), but rank 1's "
                                "receive #0 is 1RECV_F1 (step 0), which expects 0SEND_F1"));
  }
  SECTION("a transfer between stages on the same rank") {
    const auto p = problem_of(
        from_rows(placement::custom({0, 0, 1}, 2), 1, {"0F0 0SEND_F0 1F0 1SEND_F0 1RECV_B0 1B0 0B0", "2RECV_F0 2F0 2B0 2SEND_B0"}));
    check_location(p, problem_kind::needless_transfer, 0, 1, "0SEND_F0");
  }
  SECTION("a send past the last stage") {
    const auto p = problem_of(from_rows(placement::looped(1), 1, {"0F0 0SEND_F0 0B0"}));
    check_location(p, problem_kind::needless_transfer, 0, 1, "0SEND_F0");
    CHECK_THAT(p.what, contains("no next stage"));
  }
}

TEST_CASE("a circular wait is reported as a deadlock with every rank in the cycle") {
  // Rank 0 waits for the gradient of microbatch 0 before sending microbatch 1's activations;
  // rank 1 waits for microbatch 1's activations before sending that gradient.
  const auto s = from_rows(placement::looped(2), 2,
                           {"0F0 0SEND_F0 0RECV_B0 0B0 0F1 0SEND_F1 0RECV_B1 0B1",
                            "1RECV_F0 1F0 1RECV_F1 1F1 1B0 1SEND_B0 1B1 1SEND_B1"});
  const auto report = ppipe::check_schedule(s);
  REQUIRE_FALSE(report.ok());
  const auto& p = *report.problem;
  check_location(p, problem_kind::deadlock, 0, 2, "0RECV_B0");
  REQUIRE(p.cycle.size() == 2);
  CHECK(p.cycle[0].waiter.rank == 0);
  CHECK(p.cycle[0].peer.rank == 1);
  CHECK(p.cycle[0].peer.step == 5);
  CHECK(ppipe::to_string(p.cycle[0].awaited) == "1SEND_B0");
  CHECK(p.cycle[1].waiter.rank == 1);
  CHECK(p.cycle[1].waiter.step == 2);
  CHECK(ppipe::to_string(p.cycle[1].waiting) == "1RECV_F1");
  CHECK(p.cycle[1].peer.step == 5);
  CHECK_THAT(p.what, contains("rank 1 waits at step 2 in 1RECV_F1 for 0SEND_F1, which rank 0 posts only at step 5"));
  // The grid marks the waiting receives and the sends they wait for.
  CHECK_THAT(report.grid, contains("[0RECV_B0]") && contains("[1RECV_F1]") && contains("[1SEND_B0]"));
  try {
    ppipe::validate(s);
    FAIL("no error");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::deadlock);
    CHECK_THAT(e.what(), contains("[ppipe.deadlock] schedule \"hand-written\"") && contains("step"));
  }
}

TEST_CASE("a deadlock inside a larger pipeline names only the ranks in the cycle") {
  // 1F1B on 4 ranks, except that rank 1 runs the backwards of microbatches 0 and 1 before the
  // forward of 2. Rank 2 runs B1 only after F2, whose input rank 1 sends after its own B1: ranks
  // 1 and 2 wait for each other. Ranks 0 and 3 are stuck too, but only waiting on the cycle.
  const auto s = ppipe::add_communication(from_rows(placement::looped(4), 4,
                                                    {"0F0 0F1 0F2 0F3 0B0 0B1 0B2 0B3",
                                                     "1F0 1F1 1B0 1B1 1F2 1B2 1F3 1B3",
                                                     "2F0 2F1 2B0 2F2 2B1 2F3 2B2 2B3",
                                                     "3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3"}));
  // Buffered: rank 1 waits for gradient 1 before it sends activation 2, which rank 2 needs first.
  const auto buffered = ppipe::check_schedule(s, ppipe::transfer_model::buffered);
  REQUIRE_FALSE(buffered.ok());
  const auto& p = *buffered.problem;
  check_location(p, problem_kind::deadlock, 1, 9, "1RECV_B1");
  REQUIRE(p.cycle.size() == 2);
  CHECK(p.cycle[0].waiter.rank == 1);
  CHECK(p.cycle[0].peer.rank == 2);
  CHECK(ppipe::to_string(p.cycle[0].awaited) == "2SEND_B1");
  CHECK(p.cycle[1].waiter.rank == 2);
  CHECK(ppipe::to_string(p.cycle[1].waiting) == "2RECV_F2");
  CHECK(p.cycle[1].peer.rank == 1);
  CHECK_THAT(p.what, contains("2 ranks wait for each other forever under the buffered transfer model"));
  // Rendezvous: sends wait too, so the cycle closes earlier: rank 0's send of activation 2 waits
  // for rank 1 to post its receive, and rank 1's send of gradient 0 for rank 0 to post its own.
  const auto rendezvous = problem_of(s);
  check_location(rendezvous, problem_kind::deadlock, 0, 5, "0SEND_F2");
  REQUIRE(rendezvous.cycle.size() == 2);
  CHECK(ppipe::to_string(rendezvous.cycle[0].awaited) == "1RECV_F2");
  CHECK(rendezvous.cycle[1].waiter.rank == 1);
  CHECK(ppipe::to_string(rendezvous.cycle[1].waiting) == "1SEND_B0");
  CHECK(ppipe::to_string(rendezvous.cycle[1].awaited) == "0RECV_B0");
  CHECK_THAT(rendezvous.what, contains("under the rendezvous transfer model"));
}

TEST_CASE("structural problems are caught before anything runs") {
  SECTION("wrong rank") {
    const auto p = problem_of(from_rows(placement::looped(2), 1, {"1F0", "0F0"}, ppipe::schedule_mode::inference));
    check_location(p, problem_kind::wrong_rank, 0, 0, "1F0");
    CHECK_THAT(p.what, contains("belongs on rank 1"));
  }
  SECTION("an action kind that does not exist") {
    auto s = from_rows(placement::looped(1), 1, {"0F0 0B0"});
    s.ranks[0][1].kind = static_cast<ppipe::action_kind>(9);
    const auto p = problem_of(s);
    CHECK(p.kind == problem_kind::out_of_range);
    CHECK(p.step == 1);
    CHECK_THAT(p.what, contains("kind 9, which does not exist"));
  }
  SECTION("out of range") {
    check_location(problem_of(from_rows(placement::looped(1), 1, {"0F0 5B0"})), problem_kind::out_of_range, 0, 1, "5B0");
    check_location(problem_of(from_rows(placement::looped(1), 1, {"0F0 0B3"})), problem_kind::out_of_range, 0, 1, "0B3");
  }
  SECTION("duplicates and mixed backward forms") {
    check_location(problem_of(from_rows(placement::looped(1), 1, {"0F0 0F0 0B0"})), problem_kind::duplicate, 0, 1, "0F0");
    const auto mixed = problem_of(from_rows(placement::looped(1), 1, {"0F0 0I0 0B0"}));
    check_location(mixed, problem_kind::duplicate, 0, 2, "0B0");
    CHECK_THAT(mixed.what, contains("either B or I and W"));
    const auto half = problem_of(from_rows(placement::looped(1), 1, {"0F0 0I0"}));
    check_location(half, problem_kind::missing, 0, -1, "0W0");
  }
  SECTION("backward in an inference schedule") {
    const auto p = problem_of(from_rows(placement::looped(1), 1, {"0F0 0B0"}, ppipe::schedule_mode::inference));
    check_location(p, problem_kind::wrong_mode, 0, 1, "0B0");
  }
  SECTION("lists that do not match the placement") {
    const auto p = problem_of(from_rows(placement::looped(2), 1, {"0F0 0B0"}));
    CHECK(p.kind == problem_kind::inconsistent);
    CHECK(p.rank == -1);
    CHECK_THAT(p.what, contains("1 action lists but its placement has 2 ranks"));
    auto none = from_rows(placement::looped(1), 1, {"0F0 0B0"});
    none.microbatches = 0;
    CHECK(problem_of(none).kind == problem_kind::inconsistent);
    CHECK(problem_of(ppipe::schedule{}).kind == problem_kind::inconsistent);
  }
  SECTION("invalid schedules throw invalid_schedule") {
    try {
      ppipe::validate(from_rows(placement::looped(1), 1, {"0F0"}));
      FAIL("no error");
    } catch (const ppipe::error& e) {
      CHECK(e.code() == ppipe::errc::invalid_schedule);
      CHECK_THAT(e.what(), contains("rank 0 never runs 0B0"));
    }
  }
}

TEST_CASE("the grid shows the steps around the problem and marks it") {
  auto rows = good_rows;
  rows[1] = "1B0 1RECV_F0 1F0 1SEND_B0 1RECV_F1 1F1 1B1 1SEND_B1";
  const auto report = ppipe::check_schedule(from_rows(placement::looped(2), 2, rows));
  CHECK_THAT(report.grid, contains("step") && contains("rank 0") && contains("rank 1"));
  CHECK_THAT(report.grid, contains("[1B0]"));
  CHECK_THAT(report.message(), contains("rank 1 step 0") && contains("[1B0]"));
}
