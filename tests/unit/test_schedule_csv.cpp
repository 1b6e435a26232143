// Schedule files in PyTorch's CSV form: every built-in schedule round-trips in both forms, a
// hand-written PyTorch-style file loads as the generated schedule, and bad files are refused with
// their line, cell and column, or with the validator's error.
#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <catch.hpp>
#include <ppipe/ppipe.hpp>
#include <ppipe/schedule/csv.hpp>

using ppipe::action;
using ppipe::action_kind;
using ppipe_test::contains;

namespace {

std::vector<std::vector<action>> compute_of(const ppipe::schedule& s) {
  std::vector<std::vector<action>> out(s.ranks.size());
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    for (const action& a : s.ranks[r]) {
      if (ppipe::is_compute(a.kind)) out[r].push_back(a);
    }
  }
  return out;
}

// Same placement, m and mode; the same action lists too unless `compute_only`.
void check_same(const ppipe::schedule& got, const ppipe::schedule& want, bool compute_only = false) {
  if (compute_only) {
    CHECK(compute_of(got) == compute_of(want));
  } else {
    CHECK(got.ranks == want.ranks);
  }
  CHECK(got.place == want.place);
  // The style is inferred from the rank table: a generator may call a looped table custom (zb_v, p=1).
  const int p = want.num_ranks();
  const bool looped = want.num_stages() % p == 0 && want.place == ppipe::placement::looped(p, want.num_stages() / p);
  CHECK(got.place.style() == (looped ? "looped" : "custom"));
  CHECK(got.microbatches == want.microbatches);
  CHECK(got.mode == want.mode);
}

// The error from_csv throws for `text`, checked to be of kind `code`.
std::string error_of(std::string_view text, ppipe::errc code = ppipe::errc::parse_error,
                     const ppipe::csv_read_options& options = {}) {
  try {
    (void)ppipe::from_csv(text, options);
  } catch (const ppipe::error& e) {
    CHECK(ppipe::to_id(e.code()) == ppipe::to_id(code));
    return std::string(e.message());
  }
  FAIL("no ppipe::error for:\n" << text);
  return {};
}

// 1F1B for p=2, m=3 as PyTorch's pipeline_order would hold it: compute only, an empty cell where a
// rank waits, CRLF line ends, spaces around cells, and a blank line at the end.
constexpr std::string_view torch_1f1b =
    "0F0, 0F1,   , 0B0, 0F2, 0B1,    , 0B2\r\n"
    "   , 1F0, 1B0, 1F1, 1B1, 1F2, 1B2\r\n"
    "\r\n";

}  // namespace

TEST_CASE("every built-in schedule round-trips through both CSV forms") {
  int checked = 0;
  for (const std::string_view name : ppipe::schedule_names) {
    for (int p = 1; p <= 4; ++p) {
      for (int v = 1; v <= 3; ++v) {
        for (int m = 1; m <= 8; ++m) {
          ppipe::schedule s;
          try {
            s = ppipe::make_schedule(name, {p, m, v});
          } catch (const ppipe::error&) {
            continue;  // not a valid (p, m, v) for this schedule
          }
          for (const bool transfers : {false, true}) {
            CAPTURE(name, p, m, v, transfers);
            const std::string text = ppipe::to_csv(s, {transfers});
            const ppipe::schedule loaded = ppipe::from_csv(text);
            // A compute-only file gets its transfers from the fastest of from_csv's lowerings: the
            // generator's own for these four; the zero-bubble ones may be placed differently, but
            // never run slower than the generator's (below).
            const bool same_lowering = name == "gpipe" || name == "1f1b" || name == "interleaved_1f1b" ||
                                       name == "forward_only";
            check_same(loaded, s, !transfers && !same_lowering);
            for (const auto model : {ppipe::transfer_model::rendezvous, ppipe::transfer_model::buffered}) {
              ppipe::simulate_options o;
              o.record_timeline = false;
              o.transfers = model;
              // The costs from_csv compares its lowerings with.
              const ppipe::cost_model usual = ppipe::cost_model::uniform(1.0, 2.0);
              CHECK(ppipe::simulate(loaded, usual, o).makespan <= ppipe::simulate(s, usual, o).makespan);
            }
            CHECK_NOTHROW(ppipe::validate(loaded));
            CHECK(loaded.name == "csv");
            CHECK(ppipe::to_csv(loaded, {transfers}) == text);
            ++checked;
          }
        }
      }
    }
  }
  CHECK(checked > 300);
}

TEST_CASE("a custom placement round-trips and is inferred as custom") {
  // V-shape: rank 0 holds stages 0 and 3, rank 1 holds 1 and 2.
  const auto place = ppipe::placement::custom({0, 1, 1, 0}, 2);
  const ppipe::schedule s = ppipe::schedules::forward_only::over(place, 3);
  for (const bool transfers : {false, true}) {
    const ppipe::schedule loaded = ppipe::from_csv(ppipe::to_csv(s, {transfers}));
    check_same(loaded, s);
    CHECK(loaded.place.style() == "custom");
    CHECK(loaded.mode == ppipe::schedule_mode::inference);
  }
}

TEST_CASE("compute-only files put each action in its time-step column, idle steps empty") {
  const ppipe::schedule s = ppipe::make_schedule("1f1b", {2, 3, 1});
  CHECK(ppipe::to_csv(s) ==
        "0F0,0F1,,0B0,0F2,0B1,,0B2\n"
        ",1F0,1B0,1F1,1B1,1F2,1B2\n");
  CHECK(ppipe::to_csv(ppipe::make_schedule("1f1b", {2, 1, 1}), {true}) ==
        "0F0,0SEND_F0,0RECV_B0,0B0\n"
        "1RECV_F0,1F0,1B0,1SEND_B0\n");

  // PyTorch's PipelineScheduleMulti runs the columns in lockstep: whatever an action needs from
  // another rank sits in an earlier column.
  for (const std::string_view name : ppipe::schedule_names) {
    for (const ppipe::schedule_params params : {ppipe::schedule_params{4, 8, 1}, {4, 8, 2}, {3, 6, 3}}) {
      ppipe::schedule g;
      try {
        g = ppipe::make_schedule(name, params);
      } catch (const ppipe::error&) {
        continue;
      }
      CAPTURE(name, params.ranks, params.microbatches, params.virtual_stages);
      const std::string text = ppipe::to_csv(g);
      // column[(stage, microbatch, kind)] from the text.
      std::vector<std::vector<std::vector<int>>> column(
          static_cast<std::size_t>(g.num_stages()),
          std::vector<std::vector<int>>(static_cast<std::size_t>(g.microbatches), std::vector<int>(4, -1)));
      std::size_t line_start = 0;
      while (line_start < text.size()) {
        const std::size_t line_end = text.find('\n', line_start);
        int col = 0;
        for (std::size_t from = line_start; from <= line_end; ++col) {
          std::size_t stop = text.find(',', from);
          if (stop == std::string::npos || stop > line_end) stop = line_end;
          if (stop > from) {
            const action a = ppipe::parse_action(std::string_view(text).substr(from, stop - from));
            column[static_cast<std::size_t>(a.stage)][static_cast<std::size_t>(a.microbatch)]
                  [static_cast<std::size_t>(a.kind)] = col;
          }
          from = stop + 1;
        }
        line_start = line_end + 1;
      }
      const auto at = [&](int st, int mb, action_kind k) {
        return column[static_cast<std::size_t>(st)][static_cast<std::size_t>(mb)][static_cast<std::size_t>(k)];
      };
      for (int st = 0; st < g.num_stages(); ++st) {
        for (int mb = 0; mb < g.microbatches; ++mb) {
          if (st > 0) CHECK(at(st, mb, action_kind::forward) > at(st - 1, mb, action_kind::forward));
          if (g.mode == ppipe::schedule_mode::training && st + 1 < g.num_stages()) {
            // B, or I where the backward is split: one of the two is -1.
            const auto grad = [&](int stage) {
              return std::max(at(stage, mb, action_kind::backward), at(stage, mb, action_kind::backward_input));
            };
            CHECK(grad(st) > grad(st + 1));
            CHECK(grad(st + 1) >= 0);
          }
        }
      }
    }
  }
}

TEST_CASE("a hand-written PyTorch-style compute-only file loads as the generated 1F1B") {
  const ppipe::schedule loaded = ppipe::from_csv(torch_1f1b);
  const ppipe::schedule want = ppipe::make_schedule("1f1b", {2, 3, 1});
  check_same(loaded, want);
  CHECK(loaded.place.style() == "looped");
  CHECK(loaded.mode == ppipe::schedule_mode::training);
  CHECK(loaded.microbatches == 3);
  CHECK(loaded.has_transfers());
  CHECK_NOTHROW(ppipe::validate(loaded));

  ppipe::csv_read_options named;
  named.name = "from_torch";
  CHECK(ppipe::from_csv(torch_1f1b, named).name == "from_torch");
  // Quoted cells (what a spreadsheet may write), LF endings, no final newline.
  CHECK(ppipe::from_csv("\"0F0\",\"0F1\",,\"0B0\",0F2,0B1,,0B2\n,1F0,1B0,1F1,1B1,1F2,1B2").ranks == want.ranks);
  // A UTF-8 byte-order mark is skipped.
  CHECK(ppipe::from_csv("\xEF\xBB\xBF" + std::string(torch_1f1b)).ranks == want.ranks);
}

TEST_CASE("schedule files are written and read back from disk") {
  const ppipe::schedule s = ppipe::make_schedule("interleaved_1f1b", {2, 4, 2});
  const std::string path = "ppipe_test_schedule.csv";
  ppipe::save_csv(path, s, {true});
  check_same(ppipe::load_csv(path), s);
  std::remove(path.c_str());

  try {
    (void)ppipe::load_csv("no/such/schedule.csv");
    FAIL("no error for a missing file");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::invalid_argument);
    CHECK_THAT(std::string(e.message()), contains("cannot open schedule file \"no/such/schedule.csv\""));
  }
  CHECK_THROWS_WITH(ppipe::save_csv("no/such/dir/s.csv", s), contains("cannot write schedule file"));

  const std::string bad = "ppipe_test_bad_schedule.csv";
  {
    std::FILE* f = std::fopen(bad.c_str(), "wb");
    REQUIRE(f != nullptr);
    std::fputs("0F0\n1Q0\n", f);
    std::fclose(f);
  }
  CHECK_THROWS_WITH(ppipe::load_csv(bad), contains(bad + ": line 2, cell 1: cannot read action \"1Q0\""));
  // A file far larger than any schedule is refused once past the limit, not read to its end.
  const std::string huge = "ppipe_test_huge_schedule.csv";
  {
    std::FILE* f = std::fopen(huge.c_str(), "wb");
    REQUIRE(f != nullptr);
    const std::string mib(std::size_t{1} << 20, ',');
    for (std::size_t n = 0; n <= (ppipe::max_csv_bytes >> 20); ++n) std::fwrite(mib.data(), 1, mib.size(), f);
    std::fclose(f);
  }
  CHECK_THROWS_WITH(ppipe::load_csv(huge), contains("has more than 64 MiB; is it a schedule?"));
  std::remove(huge.c_str());
  std::remove(bad.c_str());
}

TEST_CASE("unreadable files name the line, the cell and the column") {
  CHECK_THAT(error_of("0F0,0X1\n"),
             contains("line 1, cell 2: cannot read action \"0X1\" at column 6: unknown kind; write "
                      "<stage><kind><microbatch>"));
  CHECK_THAT(error_of("0F0\n1F0,  1F0x\n"),
             contains("line 2, cell 2: cannot read action \"1F0x\" at column 10: unexpected text after the microbatch"));
  CHECK_THAT(error_of("-1F0\n"), contains("line 1, cell 1: cannot read action \"-1F0\" at column 1: expected a "
                                          "non-negative number"));
  CHECK_THAT(error_of("0F0,0F99999999999\n"), contains("line 1, cell 2: cannot read action \"0F99999999999\" at "
                                                       "column 7: number too large"));
  CHECK_THAT(error_of("0F0,0F\n"), contains("line 1, cell 2: cannot read action \"0F\" at column 7"));
  CHECK_THAT(error_of("0F0;0F1\n"), contains("line 1, cell 1: cannot read action \"0F0;0F1\" at column 4"));
  CHECK_THAT(error_of("0F0,1UNSHARD\n"),
             contains("line 1, cell 2 (column 5): \"1UNSHARD\" is a PyTorch action"));
  CHECK_THAT(error_of("0F0,(0F1;1B0)OVERLAP_F_B\n"), contains("line 1, cell 2 (column 5)"));
  CHECK_THAT(error_of("0F0," + std::string(100, '7') + "\n"),
             contains("line 1, cell 2 (column 5): the cell \"777777777777777777777777...\" is 100 characters"));
}

TEST_CASE("files whose shape is wrong name where") {
  CHECK_THAT(error_of(""), contains("the file has no rows"));
  CHECK_THAT(error_of(" \r\n\t\n\n"), contains("the file has no rows"));
  CHECK_THAT(error_of("0F0,0B0\n\n1F0,1B0\n"), contains("line 2 is empty, but line 3 has actions"));
  CHECK_THAT(error_of("0F0,0B0\n , ,\n"), contains("line 2 (rank 1) has only empty cells"));

  ppipe::csv_read_options small;
  small.max_ranks = 2;
  small.max_columns = 3;
  CHECK_THAT(error_of("0F0\n1F0\n2F0\n", ppipe::errc::parse_error, small),
             contains("line 3: the file has more than 2 rows"));
  CHECK_THAT(error_of("0F0,,0F1,0F2\n", ppipe::errc::parse_error, small),
             contains("line 1, cell 4 (column 10): the row has more than 3 cells"));
}

TEST_CASE("stages and microbatches must make a placement and a bounded schedule") {
  // A stage on two ranks: the second place is named, and the first.
  CHECK_THAT(error_of("0F0,1F0\n1B0,0B0\n"),
             contains("line 2, cell 1 (column 1): 1B0 puts stage 1 on rank 1, but line 1, cell 2 (column 5) "
                      "(1F0) put it on rank 0; a stage lives on one rank"));
  // A gap in the stage numbers.
  CHECK_THAT(error_of("0F0,0F1\n2F0,2F1\n"), contains("stage 1 appears in no cell, but line 2, cell 1 (column 1) "
                                                      "names stage 2"));
  // Numbers that would make the tables huge are refused before anything is allocated for them.
  CHECK_THAT(error_of("0F0\n2000000000F0\n"),
             contains("line 2, cell 1 (column 1): stage 2000000000 implies 2000000001 stages, but the file has 2 "
                      "actions"));
  CHECK_THAT(error_of("0F0,0F2147483647\n"),
             contains("line 1, cell 2 (column 5): microbatch 2147483647 implies m=2147483648"));
  CHECK_THAT(error_of(" 0F0 , 0B0 , 0F1000000\n"),
             contains("line 1, cell 3 (column 14): microbatch 1000000 implies m=1000001, and 1 stages x 1000001 "
                      "microbatches need a forward each, but the file has only 3 actions"));
}

TEST_CASE("files that parse but do not run are refused by the validator") {
  // Incomplete: rank 0 never runs the backward of microbatch 1.
  const std::string missing = error_of("0F0,0F1,0B0\n,1F0,1B0,1F1,1B1\n", ppipe::errc::invalid_schedule);
  CHECK_THAT(missing, contains("0B1"));
  CHECK_THAT(missing, contains("schedule \"csv\""));
  // Out of order on its own rank: a backward before its forward.
  CHECK_THAT(error_of("0B0,0F0\n1F0,1B0\n", ppipe::errc::invalid_schedule), contains("0B0"));
  // Deadlock: each rank first waits for what the other sends only later.
  const std::string deadlock =
      error_of("0RECV_B0,0F0,0SEND_F0,0B0\n1RECV_F0,1F0,1B0,1SEND_B0\n", ppipe::errc::deadlock);
  CHECK_THAT(deadlock, contains("0RECV_B0"));
  CHECK_THAT(deadlock, contains("1RECV_F0"));
  // A file with transfers is taken as written: a missing receive is an error, not filled in.
  CHECK_THAT(error_of("0F0,0SEND_F0\n1F0\n", ppipe::errc::invalid_schedule), contains("1RECV_F0"));
  // A backward in what would otherwise be a forward-only file makes it a training schedule, so the
  // forward-only rank's missing backwards are reported.
  CHECK_THAT(error_of("0F0\n1F0,1B0\n", ppipe::errc::invalid_schedule), contains("0B0"));
}

TEST_CASE("forward-only files load as inference schedules") {
  const ppipe::schedule loaded = ppipe::from_csv("0F0,0F1\n,1F0,1F1\n");
  CHECK(loaded.mode == ppipe::schedule_mode::inference);
  check_same(loaded, ppipe::make_schedule("forward_only", {2, 2, 1}));
}
