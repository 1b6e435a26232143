#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <locale>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <catch.hpp>

#include <ppipe/ppipe.hpp>
#include <ppipe/runtime/chrome_trace.hpp>
#include <ppipe/runtime/trace_timeline.hpp>

using ppipe_test::contains;

namespace {

// A strict JSON reader (RFC 8259: no trailing commas, no raw control characters in strings, only
// the six short escapes and \uXXXX, numbers without leading zeros or a bare '.', valid UTF-8), so
// that a file it accepts is one Perfetto and Python accept too. It throws on the first error.
struct json {
  enum kind_t { null, boolean, number, string, array, object } kind = null;
  double num = 0;
  std::string str;
  std::vector<json> items;        // array elements, or object values
  std::vector<std::string> keys;  // object keys, parallel to items

  const json& operator[](const std::string& key) const {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (keys[i] == key) return items[i];
    }
    throw std::runtime_error("no key " + key);
  }
  bool has(const std::string& key) const { return std::find(keys.begin(), keys.end(), key) != keys.end(); }
};

struct json_reader {
  std::string_view text;
  std::size_t at = 0;

  [[noreturn]] void bad(const char* why) const {
    throw std::runtime_error(std::string(why) + " at offset " + std::to_string(at));
  }
  char peek() const { return at < text.size() ? text[at] : '\0'; }
  void space() {
    while (at < text.size() && (text[at] == ' ' || text[at] == '\n' || text[at] == '\r' || text[at] == '\t')) ++at;
  }
  void expect(char c) {
    if (peek() != c) bad("unexpected character");
    ++at;
  }
  bool digits() {
    const std::size_t from = at;
    while (peek() >= '0' && peek() <= '9') ++at;
    return at > from;
  }
  unsigned hex4() {
    unsigned v = 0;
    for (int i = 0; i < 4; ++i, ++at) {
      const char c = peek();
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) bad("bad \\u escape");
      v = v * 16 + static_cast<unsigned>(d);
    }
    return v;
  }
  void put_utf8(std::string& out, unsigned cp) {
    const auto b = [&](unsigned v) { out += static_cast<char>(v); };
    const int n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    const unsigned lead[] = {0, 0x00, 0xC0, 0xE0, 0xF0};
    b(lead[n] | (cp >> (6 * (n - 1))));
    for (int k = n - 2; k >= 0; --k) b(0x80 | ((cp >> (6 * k)) & 0x3F));
  }
  std::string string_body() {
    expect('"');
    std::string out;
    for (;;) {
      if (at >= text.size()) bad("unterminated string");
      const auto c = static_cast<unsigned char>(text[at]);
      if (c == '"') break;
      if (c < 0x20) bad("raw control character in string");
      if (c >= 0x80) {  // the library's own check would prove nothing here, so decode by hand
        const std::size_t n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
        if (n == 0 || at + n > text.size()) bad("invalid UTF-8");
        for (std::size_t k = 1; k < n; ++k) {
          if ((static_cast<unsigned char>(text[at + k]) & 0xC0) != 0x80) bad("invalid UTF-8");
        }
        out += text.substr(at, n);
        at += n;
        continue;
      }
      ++at;
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      const char e = peek();
      ++at;
      const std::string_view from = "\"\\/bfnrt", to = "\"\\/\b\f\n\r\t";
      if (const auto k = from.find(e); k != std::string_view::npos) {
        out += to[k];
      } else if (e == 'u') {
        unsigned cp = hex4();
        if (cp >= 0xDC00 && cp < 0xE000) bad("lone low surrogate");
        if (cp >= 0xD800 && cp < 0xDC00) {
          expect('\\');
          expect('u');
          const unsigned low = hex4();
          if (low < 0xDC00 || low >= 0xE000) bad("high surrogate without a low one");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        put_utf8(out, cp);
      } else {
        bad("unknown escape");
      }
    }
    ++at;
    return out;
  }
  json value() {
    space();
    json v;
    const char c = peek();
    if (c == '{' || c == '[') {
      ++at;
      v.kind = c == '{' ? json::object : json::array;
      const char close = c == '{' ? '}' : ']';
      space();
      if (peek() == close) {
        ++at;
        return v;
      }
      for (;;) {
        if (v.kind == json::object) {
          space();
          v.keys.push_back(string_body());
          space();
          expect(':');
        }
        v.items.push_back(value());
        space();
        if (peek() == close) break;
        expect(',');
      }
      ++at;
    } else if (c == '"') {
      v.kind = json::string;
      v.str = string_body();
    } else if (text.substr(at, 4) == "true" || text.substr(at, 5) == "false" || text.substr(at, 4) == "null") {
      v.kind = c == 'n' ? json::null : json::boolean;
      v.num = c == 't' ? 1 : 0;
      at += c == 'f' ? 5 : 4;
    } else {
      const std::size_t from = at;
      if (peek() == '-') ++at;
      if (peek() == '0') ++at;
      else if (!digits()) bad("expected a value");
      if (peek() == '.' && (++at, !digits())) bad("expected digits after '.'");
      if (peek() == 'e' || peek() == 'E') {
        ++at;
        if (peek() == '+' || peek() == '-') ++at;
        if (!digits()) bad("expected exponent digits");
      }
      v.kind = json::number;
      std::istringstream in{std::string(text.substr(from, at - from))};
      in.imbue(std::locale::classic());
      in >> v.num;
    }
    return v;
  }
};

json parse_json(const std::string& text) {
  json_reader reader{text};
  json v = reader.value();
  reader.space();
  if (reader.at != text.size()) reader.bad("text after the value");
  return v;
}

// The trace a run would record if it took exactly the simulated times, all `offset` microseconds
// after the run started: compute at its simulated time, a send at the end of the compute before
// it, a receive from there until the next compute starts (it waited for the data).
ppipe::run_trace trace_of(const ppipe::schedule& s, const ppipe::simulation& sim, double offset) {
  ppipe::run_trace t{s.name, s.microbatches, {}};
  t.ranks.resize(s.ranks.size());
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    const auto& timed = sim.timeline[r];
    std::size_t next = 0;  // the next compute of this rank in sim.timeline
    double last_end = 0;
    for (std::size_t i = 0; i < s.ranks[r].size(); ++i) {
      const ppipe::action& a = s.ranks[r][i];
      const int step = static_cast<int>(i);
      if (ppipe::is_compute(a.kind)) {
        t.ranks[r].push_back({a, step, offset + timed[next].start, offset + timed[next].end});
        last_end = timed[next++].end;
      } else {
        const double until = ppipe::is_recv(a.kind) && next < timed.size() ? timed[next].start : last_end;
        t.ranks[r].push_back({a, step, offset + last_end, offset + until});
      }
    }
  }
  return t;
}

ppipe::trace_event event(const char* code, double start, double end, int step = 0) {
  return {ppipe::parse_action(code), step, start, end};
}

std::string chrome_json(const ppipe::run_trace& t) {
  std::ostringstream os;
  ppipe::write_chrome_trace(os, t);
  return os.str();
}

}  // namespace

TEST_CASE("a trace with the simulated times reproduces the simulation") {
  const auto s = ppipe::make_schedule("1f1b", {2, 4, 1});
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(10, 20));
  const ppipe::run_trace t = trace_of(s, sim, 1000.0);
  const ppipe::simulation back = ppipe::to_simulation(t);
  CHECK(back.makespan == sim.makespan);
  CHECK(back.busy == sim.busy);
  CHECK(back.bubble_fraction() == sim.bubble_fraction());
  CHECK(t.bubble_fraction() == Approx(sim.bubble_fraction()));
  CHECK(back.peak_stage_activations == sim.peak_stage_activations);
  CHECK(back.peak_rank_activations == sim.peak_rank_activations);
  REQUIRE(back.timeline.size() == sim.timeline.size());
  for (std::size_t r = 0; r < sim.timeline.size(); ++r) {
    REQUIRE(back.timeline[r].size() == sim.timeline[r].size());
    for (std::size_t i = 0; i < sim.timeline[r].size(); ++i) {
      CHECK(back.timeline[r][i].act == sim.timeline[r][i].act);
      CHECK(back.timeline[r][i].step == sim.timeline[r][i].step);
      CHECK(back.timeline[r][i].start == sim.timeline[r][i].start);  // shifted back by the offset
      CHECK(back.timeline[r][i].end == sim.timeline[r][i].end);
    }
  }
  // The same chart, with the trace's unit in its header.
  ppipe::timeline_options in_us;
  in_us.unit = "microseconds";
  CHECK(ppipe::render_timeline(s, t) == ppipe::render_timeline(s, sim, in_us));
  CHECK(ppipe::render_timeline(s, t) != ppipe::render_timeline(s, sim));
  in_us.width = 40;
  in_us.time_per_column = 5.0;
  CHECK(ppipe::render_timeline(s, t, {40, 5.0}) == ppipe::render_timeline(s, sim, in_us));

  const auto wider = ppipe::make_schedule("1f1b", {3, 4, 1});
  CHECK_THROWS_WITH(ppipe::render_timeline(wider, t), contains("the trace has 2 ranks but schedule \"1f1b\" has 3"));
  CHECK(ppipe::to_simulation(ppipe::run_trace{}).makespan == 0);
}

TEST_CASE("inference traces hold one microbatch at a time") {
  const auto s = ppipe::make_schedule("gpipe", {2, 3, 1});
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(10, 20));
  ppipe::run_trace t = trace_of(s, sim, 0.0);
  for (auto& list : t.ranks) {
    std::erase_if(list, [](const ppipe::trace_event& e) { return ppipe::is_backward_pass(e.act.kind); });
  }
  const auto back = ppipe::to_simulation(t);
  CHECK(back.peak_stage_activations == std::vector<int>{1, 1});
  CHECK(sim.peak_stage_activations == std::vector<int>{3, 3});  // training holds all three
}

TEST_CASE("measured costs are per-stage medians, so one slow call does not move them") {
  const auto s = ppipe::make_schedule("1f1b", {2, 4, 1});
  ppipe::run_trace t{"1f1b", 4, {{}, {}}};
  t.ranks[0] = {event("0F0", 0, 10), event("0F1", 10, 22), event("0F2", 22, 522),  // 500: outlier
                event("0SEND_F0", 10, 9000),                                      // transfers ignored
                event("0B0", 600, 620), event("0B1", 620, 642), event("0B2", 642, 666),
                event("0B3", 666, 9666)};
  t.ranks[1] = {event("1F0", 30, 60)};
  const ppipe::cost_model c = ppipe::measured_costs(s, t);
  REQUIRE(c.stages.size() == 2);
  CHECK(c.stages[0].forward == 12);          // median of 10, 12, 500
  CHECK(c.stages[0].backward == 23);         // even count: mean of 22 and 24
  CHECK(c.stages[0].backward_input == 0);    // never ran
  CHECK(c.stages[0].backward_weight == 0);
  CHECK(c.stages[1].forward == 30);
  CHECK(c.stages[1].backward == 0);
  CHECK(c.transfer == 0);

  t.ranks[1].push_back(event("5F0", 0, 1));
  CHECK_THROWS_WITH(ppipe::measured_costs(s, t), contains("names stage 5, outside the 2 stages"));
  CHECK_THROWS_WITH(ppipe::measured_costs(ppipe::make_schedule("1f1b", {3, 4, 1}), t), contains("has 3"));
}

TEST_CASE("the prediction from a trace is the simulation under its measured costs") {
  const auto s = ppipe::make_schedule("1f1b", {2, 4, 1});
  const ppipe::cost_model costs{{{10, 20, 10, 10}, {30, 40, 20, 20}}, 0.0};
  const auto sim = ppipe::simulate(s, costs, {true, ppipe::transfer_model::buffered});
  const ppipe::run_trace t = trace_of(s, sim, 7.0);
  const ppipe::simulation predicted = ppipe::predict_from_trace(s, t);
  CHECK(predicted.makespan == sim.makespan);
  CHECK(predicted.bubble_fraction() == sim.bubble_fraction());
  CHECK(predicted.timeline.size() == 2);
  CHECK(predicted.costs.stages[1].backward == 40);

  ppipe::run_trace forward_only = t;
  for (auto& list : forward_only.ranks) {
    std::erase_if(list, [](const ppipe::trace_event& e) { return e.act.kind == ppipe::action_kind::backward; });
  }
  CHECK_THROWS_WITH(ppipe::predict_from_trace(s, forward_only), contains("the trace has no backward of stage"));
}

TEST_CASE("the Chrome trace is strict JSON with one process per rank and a track per stream") {
  const auto s = ppipe::make_schedule("1f1b", {2, 4, 1});
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(10, 20));
  const ppipe::run_trace t = trace_of(s, sim, 0.25);
  const json doc = parse_json(chrome_json(t));
  CHECK(doc["displayTimeUnit"].str == "ms");
  CHECK(doc["otherData"]["schedule"].str == "1f1b");
  CHECK(doc["otherData"]["microbatches"].num == 4);
  CHECK(doc["otherData"]["measured_bubble"].num == Approx(t.bubble_fraction()));

  std::vector<std::string> metadata;
  std::size_t complete = 0;
  for (const json& e : doc["traceEvents"].items) {
    // Rank r is process r+1 and its tracks are threads 1000(r+1) + k (k = 0 compute, 1 transfers).
    const int pid = static_cast<int>(e["pid"].num) - 1;
    const int tid = static_cast<int>(e["tid"].num) - 1000 * (pid + 1);
    if (e["ph"].str == "M") {
      const json& args = e["args"];
      metadata.push_back(e["name"].str + " " + std::to_string(pid) + "/" + std::to_string(tid) + " " +
                         (args.has("name") ? args["name"].str : std::to_string(static_cast<int>(args["sort_index"].num))));
      continue;
    }
    REQUIRE(e["ph"].str == "X");
    const auto& ev = t.ranks.at(static_cast<std::size_t>(pid)).at(static_cast<std::size_t>(e["args"]["step"].num));
    CAPTURE(ppipe::to_string(ev.act));
    const bool compute = ppipe::is_compute(ev.act.kind);
    CHECK(e["name"].str == std::string(ppipe::code(ev.act.kind)) + std::to_string(ev.act.microbatch));
    CHECK(e["cat"].str == (compute ? "compute" : "transfer"));
    CHECK(tid == (compute ? 0 : 1));
    CHECK(e["ts"].num == ev.start);
    CHECK(e["dur"].num == ev.end - ev.start);
    CHECK(e["args"]["stage"].num == ev.act.stage);
    CHECK(e["args"]["microbatch"].num == ev.act.microbatch);
    ++complete;
  }
  CHECK(complete == s.size());
  for (const char* m : {"process_name 0/0 rank 0", "process_name 1/0 rank 1", "process_sort_index 1/0 1",
                        "thread_name 0/0 compute", "thread_name 0/1 transfers", "thread_name 1/1 transfers",
                        "thread_sort_index 1/1 1"}) {
    CHECK(std::find(metadata.begin(), metadata.end(), m) != metadata.end());
  }
  CHECK_NOTHROW(parse_json(chrome_json(ppipe::run_trace{})));
}

TEST_CASE("the Chrome trace separates overlapping transfers and shows stages when ranks hold several") {
  ppipe::run_trace t{"interleaved", 1, {{event("0F0", 0, 5), event("2F0", 5, 10, 1),
                                         event("0SEND_F0", 5, 20, 2), event("0RECV_B0", 8, 30, 3),
                                         event("2SEND_F0", 30, 29, 4)}}};  // ends before it starts
  const json doc = parse_json(chrome_json(t));
  std::vector<std::string> seen;
  for (const json& e : doc["traceEvents"].items) {
    if (e["ph"].str == "X") {
      seen.push_back(e["name"].str + "@" + std::to_string(static_cast<int>(e["tid"].num) - 1000));
      if (e["name"].str == "2SEND_F0") CHECK(e["dur"].num == 0);
    }
    if (e["ph"].str == "M" && e["name"].str == "thread_name" && e["tid"].num == 1002) {
      CHECK(e["args"]["name"].str == "transfers 2");
    }
  }
  CHECK(seen == std::vector<std::string>{"0F0@0", "2F0@0", "0SEND_F0@1", "0RECV_B0@2", "2SEND_F0@1"});

  t.ranks[0][1].end = std::numeric_limits<double>::quiet_NaN();
  std::ostringstream os;
  CHECK_THROWS_WITH(ppipe::write_chrome_trace(os, t), contains("2F0 (step 1) has start 5 and end nan"));
  CHECK(os.str().empty());
}

TEST_CASE("the Chrome trace escapes user strings and ignores the stream's locale") {
  // Quotes, backslashes, control characters, valid UTF-8 and one byte that is not UTF-8.
  const std::string name = std::string("my \"best\"\\schedule\n\t\x01\x1f end \xc3\xa9 \xff!");
  const std::string as_read = std::string("my \"best\"\\schedule\n\t\x01\x1f end \xc3\xa9 \xef\xbf\xbd!");
  ppipe::run_trace t{name, 1, {{event("0F0", 12345.5, 1234567.25)}}};

  // A locale that groups thousands with '.' and writes a decimal comma.
  struct german : std::numpunct<char> {
    char do_decimal_point() const override { return ','; }
    char do_thousands_sep() const override { return '.'; }
    std::string do_grouping() const override { return "\3"; }
  };
  std::ostringstream os;
  os.imbue(std::locale(std::locale::classic(), new german));
  os << 1234;
  REQUIRE(os.str() == "1.234");  // the locale is in force
  os.str("");
  ppipe::write_chrome_trace(os, t);
  const json doc = parse_json(os.str());
  CHECK(doc["otherData"]["schedule"].str == as_read);
  const json& f0 = doc["traceEvents"].items.back();
  CHECK(f0["ts"].num == 12345.5);
  CHECK(f0["dur"].num == 1234567.25 - 12345.5);
}

TEST_CASE("save_chrome_trace writes the file, or says which path it could not write and why") {
  const ppipe::run_trace t{"gpipe", 1, {{event("0F0", 0, 1)}, {event("1F0", 1, 2)}}};
  const auto path = std::filesystem::temp_directory_path() / ("ppipe_test_trace_" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ".json");
  ppipe::save_chrome_trace(path.string(), t);
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  in.close();
  const std::string text = contents.str();
  std::filesystem::remove(path);
  CHECK(text == chrome_json(t));
  CHECK_NOTHROW(parse_json(text));

  try {
    ppipe::save_chrome_trace("/nonexistent-dir/x.json", t);
    FAIL("no error for a directory that does not exist");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::invalid_argument);
    CHECK_THAT(e.what(), contains("\"/nonexistent-dir/x.json\": No such file or directory") &&
                             contains("give a path in a directory that exists"));
  }
}
