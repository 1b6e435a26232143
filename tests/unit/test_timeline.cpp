#include <string>
#include <vector>

#include <catch.hpp>
#include <ppipe/ppipe.hpp>

using ppipe_test::contains;

TEST_CASE("the timeline draws each rank's actions at their simulated times") {
  // 1F1B, p=2, m=2, F=1, B=2. Worked by hand:
  //   rank 0: F0 [0,1] F1 [1,2] idle [2,4] B0 [4,6] idle [6,7] B1 [7,9]
  //   rank 1: idle [0,1] F0 [1,2] B0 [2,4] F1 [4,5] B1 [5,7] idle [7,9]
  // Labels are two characters, so one time unit is three columns.
  const auto s = ppipe::make_schedule("1f1b", {2, 2, 1});
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2));
  const std::string expected =
      "one column = 0.333333 time units; '.' = idle\n"
      "time 0 .. 9\n"
      "rank 0 |F0 F1 ......B0    ...B1\n"
      "rank 1 |...F0 B0    F1 B1    ......\n";
  CHECK(ppipe::render_timeline(s, sim) == expected);
}

TEST_CASE("ranks with several stages show the stage in each label") {
  const auto s = ppipe::make_schedule("interleaved_1f1b", {2, 2, 2});
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 1));
  const std::string chart = ppipe::render_timeline(s, sim);
  CHECK_THAT(chart, contains("rank 0 |0F0 0F1 2F0 2F1"));
  // m == p: every forward first, as Megatron does.
  CHECK_THAT(chart, contains("rank 1 |....1F0 1F1 3F0 3F1 3B0 3B1 1B0 1B1"));
}

TEST_CASE("long timelines wrap into blocks with their time range") {
  const auto s = ppipe::make_schedule("gpipe", {2, 12, 1});
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 1));
  const std::string chart = ppipe::render_timeline(s, sim, {40, 0.0});
  std::size_t lines = 0;
  for (char c : chart) lines += c == '\n';
  CHECK(lines > 4);
  for (std::size_t at = 0, next; (next = chart.find('\n', at)) != std::string::npos; at = next + 1) {
    CHECK(next - at <= 40);
  }
  // Blocks break on whole actions: 40 columns minus the "rank 1 |" prefix is 32, rounded down to
  // a multiple of the 4 columns one action takes.
  CHECK_THAT(chart, contains("time 0 .. 8\n") && contains("time 8 .. 16\n"));
  // A fixed scale: one column per time unit cuts labels to the action's width.
  const std::string coarse = ppipe::render_timeline(s, sim, {100, 1.0});
  CHECK_THAT(coarse, contains("rank 0 |FFFFFFFFFFFF..BBBBBBBBBBBB\n"));
}

TEST_CASE("a chart too long to read is drawn at a coarser scale, short actions as letters") {
  const auto s = ppipe::make_schedule("gpipe", {2, 200, 1});
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 1));
  const std::string chart = ppipe::render_timeline(s, sim, {200, 0.0, 100});
  CHECK_THAT(chart, contains("one column = 4.02 time units"));  // makespan 402 over 100 columns
  CHECK_THAT(chart, contains("rank 0 |FFFFFFFFFF"));
  // At one column per 100 time units every action is shorter than a column: each rank still shows
  // the letter of what it was doing, not idle dots.
  const auto small = ppipe::make_schedule("1f1b", {2, 2, 1});
  const auto small_sim = ppipe::simulate(small, ppipe::cost_model::uniform(1, 2));
  const std::string tiny = ppipe::render_timeline(small, small_sim, {100, 100.0});
  CHECK_THAT(tiny, contains("rank 0 |F\n") && contains("rank 1 |F\n"));
}

TEST_CASE("the timeline needs a recorded simulation and a usable width") {
  const auto s = ppipe::make_schedule("1f1b", {2, 2, 1});
  const auto bare = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2), {false});
  CHECK_THROWS_WITH(ppipe::render_timeline(s, bare), contains("record_timeline = true"));
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2));
  CHECK_THROWS_WITH(ppipe::render_timeline(s, sim, {5, 0.0}), contains("width 5"));
  CHECK_THROWS_WITH(ppipe::render_timeline(s, sim, {100, 1e-9}), contains("draw at most 8388608 columns"));
}

TEST_CASE("the step grid lays out actions by position, not time") {
  const auto s = ppipe::make_schedule("1f1b", {2, 1, 1});
  const std::vector<ppipe::grid_cell> marks = {{1, 1}};
  const std::string expected =
      "step    0          1          2          3\n"
      "rank 0  0F0        0SEND_F0   0RECV_B0   0B0\n"
      "rank 1  1RECV_F0  [1F0]       1B0        1SEND_B0\n";
  CHECK(ppipe::render_step_grid(s, 0, 3, marks) == expected);
  // Past a rank's end the grid shows "-".
  CHECK_THAT(ppipe::render_step_grid(s, 3, 4), contains("0B0        -"));
}

TEST_CASE("the step grid of a wide pipeline shows the marked ranks and their neighbours") {
  const auto s = ppipe::make_schedule("1f1b", {16, 16, 1});
  const std::vector<ppipe::grid_cell> marks = {{9, 2}};
  const std::string grid = ppipe::render_step_grid(s, 0, 4, marks);
  CHECK_THAT(grid, contains("rank 8 ") && contains("rank 9 ") && contains("rank 10") && contains("...\n"));
  CHECK(grid.find("rank 7 ") == std::string::npos);
  CHECK(grid.find("rank 11") == std::string::npos);
}
