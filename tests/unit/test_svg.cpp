#include <charconv>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <catch.hpp>

#include <ppipe/ppipe.hpp>
#include <ppipe/runtime/trace_svg.hpp>
#include <ppipe/schedule/svg.hpp>

#include "error_message.hpp"

using ppipe_test::contains;

namespace {

// A strict reader for the XML the renderer writes: one root element after an optional XML
// declaration; names of letters, digits, '-', '_', ':' and '.'; every attribute quoted and given
// once; '<' nowhere in text or attributes, '>' escaped in text too, and every '&' starting one of
// the five named entities or a character reference. It throws on the first error, so a picture it
// accepts is one that browsers and XML tools read.
struct xml_node {
  std::string name;
  std::vector<std::pair<std::string, std::string>> attrs;
  std::vector<xml_node> children;
  std::string text;  // the character data directly inside, entities decoded

  [[nodiscard]] std::optional<std::string> attr(std::string_view key) const {
    for (const auto& [k, v] : attrs) {
      if (k == key) return v;
    }
    return std::nullopt;
  }
  [[nodiscard]] std::string at(std::string_view key) const {
    const auto v = attr(key);
    if (!v) throw std::runtime_error("<" + name + "> has no attribute " + std::string(key));
    return *v;
  }
  [[nodiscard]] double number(std::string_view key) const {
    const std::string v = at(key);
    double out = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec != std::errc() || end != v.data() + v.size())
      throw std::runtime_error("not a number: " + v);
    return out;
  }
  [[nodiscard]] bool is(std::string_view element, std::string_view cls) const {
    return name == element && attr("class") == std::string(cls);
  }
};

class xml_reader {
 public:
  explicit xml_reader(std::string_view text) : s_(text) {}

  xml_node document() {
    if (s_.substr(0, 5) == "<?xml") {
      const std::size_t end = s_.find("?>");
      if (end == std::string_view::npos) bad("unterminated XML declaration");
      i_ = end + 2;
    }
    skip_space();
    xml_node root = element();
    skip_space();
    if (i_ != s_.size()) bad("text after the root element");
    return root;
  }

 private:
  [[noreturn]] void bad(const std::string& why) const {
    throw std::runtime_error("XML error at offset " + std::to_string(i_) + ": " + why + " near \"" +
                             std::string(s_.substr(i_ > 20 ? i_ - 20 : 0, 60)) + "\"");
  }
  bool at_end() const { return i_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[i_]; }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++i_;
  }
  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\n' || peek() == '\t' || peek() == '\r')) ++i_;
  }
  std::string name() {
    const auto ok = [](char c, bool first) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
             (!first && ((c >= '0' && c <= '9') || c == '-' || c == '.'));
    };
    const std::size_t from = i_;
    while (!at_end() && ok(peek(), i_ == from)) ++i_;
    if (i_ == from) bad("expected a name");
    return std::string(s_.substr(from, i_ - from));
  }
  // Reads "&...;" and returns what it stands for.
  std::string entity() {
    const std::size_t semi = s_.find(';', i_);
    if (semi == std::string_view::npos || semi - i_ > 10) bad("'&' that starts no entity");
    const std::string_view ref = s_.substr(i_ + 1, semi - i_ - 1);
    i_ = semi + 1;
    if (ref == "amp") return "&";
    if (ref == "lt") return "<";
    if (ref == "gt") return ">";
    if (ref == "quot") return "\"";
    if (ref == "apos") return "'";
    if (ref.size() > 1 && ref[0] == '#') {
      const bool hex = ref[1] == 'x';
      unsigned code = 0;
      const std::string_view digits = ref.substr(hex ? 2 : 1);
      const auto [end, ec] =
          std::from_chars(digits.data(), digits.data() + digits.size(), code, hex ? 16 : 10);
      if (ec != std::errc() || end != digits.data() + digits.size() || code == 0)
        bad("bad character reference");
      return "#" + std::to_string(code) +
             ";";  // kept recognisable; the tests look only at ASCII text
    }
    bad("unknown entity &" + std::string(ref) + ";");
  }
  xml_node element() {
    expect('<');
    xml_node node;
    node.name = name();
    for (;;) {
      const std::size_t before = i_;
      skip_space();
      if (peek() == '/' || peek() == '>') break;
      if (i_ == before) bad("attributes must be separated by space");
      std::string key = name();
      if (node.attr(key)) bad("attribute " + key + " given twice");
      skip_space();
      expect('=');
      skip_space();
      const char quote = peek();
      if (quote != '"' && quote != '\'') bad("attribute " + key + " is not quoted");
      ++i_;
      std::string value;
      while (peek() != quote) {
        if (at_end()) bad("unterminated attribute");
        if (peek() == '<') bad("'<' in an attribute");
        if (peek() == '&') {
          value += entity();
        } else {
          value += s_[i_++];
        }
      }
      ++i_;
      node.attrs.emplace_back(std::move(key), std::move(value));
    }
    if (peek() == '/') {
      ++i_;
      expect('>');
      return node;
    }
    expect('>');
    for (;;) {
      if (at_end()) bad("<" + node.name + "> is never closed");
      if (s_.substr(i_, 2) == "</") {
        i_ += 2;
        if (name() != node.name) bad("closing tag does not match <" + node.name + ">");
        skip_space();
        expect('>');
        return node;
      }
      if (peek() == '<') {
        if (s_.substr(i_, 2) == "<!" || s_.substr(i_, 2) == "<?")
          bad("markup the renderer never writes");
        node.children.push_back(element());
      } else if (peek() == '&') {
        node.text += entity();
      } else if (peek() == '>') {
        bad("unescaped '>' in text");
      } else {
        node.text += s_[i_++];
      }
    }
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

xml_node parse(const std::string& svg) {
  return xml_reader(svg).document();
}

// Every node under `n` (itself included) for which `pred` holds, in document order, with the
// data-rank of the nearest enclosing element that has one (-1 if none).
template <class Pred>
void collect(const xml_node& n, Pred pred, std::vector<std::pair<const xml_node*, int>>& out,
             int rank = -1) {
  if (const auto r = n.attr("data-rank")) rank = std::stoi(*r);
  if (pred(n)) out.emplace_back(&n, rank);
  for (const xml_node& c : n.children) collect(c, pred, out, rank);
}
std::vector<std::pair<const xml_node*, int>> all(const xml_node& root, std::string_view element,
                                                 std::string_view cls) {
  std::vector<std::pair<const xml_node*, int>> out;
  collect(
      root, [&](const xml_node& n) { return n.is(element, cls); }, out);
  return out;
}

// What the tests read back from a picture: its boxes by action, and the time scale.
struct picture {
  xml_node root;
  std::map<std::string, std::pair<const xml_node*, int>> boxes;  // data-action -> (rect, rank)
  std::vector<std::pair<const xml_node*, int>> rows;             // the idle backgrounds
  double left = 0;                                               // x of time 0

  explicit picture(const std::string& svg) : root(parse(svg)) {
    for (const auto& [node, rank] : all(root, "rect", "box")) {
      REQUIRE(boxes.emplace(node->at("data-action"), std::pair{node, rank}).second);
    }
    rows = all(root, "rect", "idle");
    if (!rows.empty()) left = rows.front().first->number("x");
  }
  [[nodiscard]] const xml_node& box(const std::string& action) const {
    const auto it = boxes.find(action);
    if (it == boxes.end()) throw std::runtime_error("no box for " + action);
    return *it->second.first;
  }
  [[nodiscard]] std::string fill(const std::string& action) const { return box(action).at("fill"); }
  [[nodiscard]] std::vector<std::string> texts(std::string_view cls) const {
    std::vector<std::string> out;
    for (const auto& [node, rank] : all(root, "text", cls)) out.push_back(node->text);
    return out;
  }
};

ppipe::trace_event event(const char* action, int step, double start, double end) {
  return {ppipe::parse_action(action), step, start, end};
}

}  // namespace

TEST_CASE("the reader used here rejects what is not well-formed") {
  CHECK_NOTHROW(parse("<?xml version=\"1.0\"?>\n<a x=\"1\" y='2'><b/>t &amp; &#65; &#x41;</a>\n"));
  for (const char* broken :
       {"<a>", "<a></b>", "<a x=1/>", "<a x=\"1\" x=\"2\"/>", "<a>&</a>", "<a>&bogus;</a>",
        "<a>x > y</a>", "<a x=\"<\"/>", "<a/><b/>", "<a x=\"1\"y=\"2\"/>"}) {
    INFO(broken);
    CHECK_THROWS(parse(broken));
  }
}

TEST_CASE(
    "a 1F1B picture has a row per rank and one box per compute action at its simulated time") {
  const auto s = ppipe::make_schedule("1f1b", {4, 8, 1});
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2));
  const std::string svg = ppipe::render_svg(s, sim);
  const picture pic(svg);

  CHECK(pic.root.name == "svg");
  CHECK(pic.root.attr("xmlns") == std::string("http://www.w3.org/2000/svg"));
  CHECK(pic.root.attr("version") == std::string("1.1"));
  CHECK(pic.root.attr("viewBox"));
  CHECK(pic.texts("rank-label") ==
        std::vector<std::string>{"rank 0", "rank 1", "rank 2", "rank 3"});
  REQUIRE(pic.rows.size() == 4);

  // One box per compute action, on its rank's row, and nothing else.
  std::size_t computes = 0;
  for (const auto& row : sim.timeline) computes += row.size();
  CHECK(computes == 4 * 8 * 2);
  REQUIRE(pic.boxes.size() == computes);

  // x and width are proportional to the simulated start and duration; the rows span the step.
  const double row_width = pic.rows.front().first->number("width");
  const double scale = row_width / sim.makespan;
  CHECK(scale > 10);  // 33 time units over most of 960 pixels
  for (std::size_t r = 0; r < 4; ++r) {
    CHECK(pic.rows[r].first->number("x") == Approx(pic.left));
    CHECK(pic.rows[r].first->number("width") == Approx(row_width));
    double covered = 0;
    for (const ppipe::timed_action& t : sim.timeline[r]) {
      INFO(ppipe::to_string(t.act));
      const auto& [rect, rank] = pic.boxes.at(ppipe::to_string(t.act));
      CHECK(rank == static_cast<int>(r));
      CHECK(rect->number("x") == Approx(pic.left + t.start * scale).margin(0.01));
      CHECK(rect->number("width") == Approx((t.end - t.start) * scale).margin(0.01));
      covered += rect->number("width");
    }
    // The bubble shows: every rank idles in warm-up or cool-down, 3 of the 33 time units here.
    CHECK(covered == Approx(sim.busy[r] * scale).margin(0.1));
    CHECK(covered < row_width - 3 * scale + 0.1);
  }

  // F and B have their own colours, the same for every box of a kind.
  for (const auto& [name, entry] : pic.boxes) {
    const ppipe::action a = ppipe::parse_action(name);
    CHECK(entry.first->at("fill") ==
          pic.fill(a.kind == ppipe::action_kind::forward ? "0F0" : "0B0"));
  }
  CHECK(pic.fill("0F0") != pic.fill("0B0"));

  // Each box wide enough for its microbatch number shows it; at this size all are.
  const auto labels = all(pic.root, "text", "mb");
  CHECK(labels.size() == computes);
  for (const auto& [node, rank] : labels) {
    CHECK(node->text == std::to_string(ppipe::parse_action(node->at("data-action")).microbatch));
  }

  // Title, legend and axis.
  CHECK(pic.texts("title") ==
        std::vector<std::string>{"1f1b: p=4, m=8, v=1, bubble 27.3% of the step (33 time units)"});
  CHECK_THAT(svg, contains(">F forward</text>") && contains(">B backward</text>") &&
                      contains(">idle</text>"));
  CHECK(pic.texts("unit") == std::vector<std::string>{"time (time units)"});
  const auto ticks = all(pic.root, "g", "ticks");
  REQUIRE(ticks.size() == 1);
  CHECK(ticks.front().first->children.size() >= 4);
  CHECK(ticks.front().first->children.front().text == "0");
}

TEST_CASE("a rank that never waits fills its row") {
  const auto s = ppipe::make_schedule("gpipe", {1, 4, 1});
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2));
  const picture pic(ppipe::render_svg(s, sim, {"", "ms", 600, 20, true}));
  double covered = 0;
  for (const auto& [name, entry] : pic.boxes) covered += entry.first->number("width");
  CHECK(pic.boxes.size() == 8);
  CHECK(covered == Approx(pic.rows.at(0).first->number("width")).margin(0.05));
  CHECK(pic.texts("unit") == std::vector<std::string>{"time (ms)"});
  CHECK(pic.root.number("width") == 600);

  // Drawn to a longer time axis, the same step takes half the width: pictures share a scale.
  ppipe::svg_options longer;
  longer.time_span = 2 * sim.makespan;
  const picture wide(ppipe::render_svg(s, sim, longer));
  const picture own(ppipe::render_svg(s, sim));
  CHECK(wide.rows.at(0).first->number("width") ==
        Approx(own.rows.at(0).first->number("width") / 2).margin(0.01));
  CHECK(wide.box("0B3").number("width") == Approx(own.box("0B3").number("width") / 2).margin(0.01));
  longer.time_span = sim.makespan / 2;  // never cuts the step short
  CHECK(picture(ppipe::render_svg(s, sim, longer)).rows.at(0).first->number("width") ==
        Approx(own.rows.at(0).first->number("width")));
}

TEST_CASE("interleaved 1F1B: a rank's second stage is a lighter shade of the same kind") {
  const auto s = ppipe::make_schedule("interleaved_1f1b", {4, 8, 2});
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(0.5, 1));
  const picture pic(ppipe::render_svg(s, sim));
  CHECK(pic.boxes.size() == 8 * 8 * 2);
  CHECK(pic.fill("0F0") == pic.fill("3F7"));  // chunk 0 of ranks 0 and 3
  CHECK(pic.fill("4F0") == pic.fill("7F7"));  // chunk 1
  CHECK(pic.fill("0F0") != pic.fill("4F0"));
  CHECK(pic.fill("0B0") != pic.fill("4B0"));
  CHECK(pic.fill("0F0") != pic.fill("0B0"));
  CHECK(pic.fill("4F0") != pic.fill("4B0"));
  CHECK_THAT(pic.texts("title").at(0), contains("interleaved_1f1b: p=4, m=8, v=2, bubble"));
  CHECK_THAT(ppipe::render_svg(s, sim), contains("dark to light: a rank&apos;s stages"));
}

TEST_CASE("a split backward draws I and W in colours of their own") {
  const auto s = ppipe::make_schedule("zb_h1", {3, 6, 1});  // I and W, not B
  REQUIRE(s.splits_backward());
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2));
  const picture pic(ppipe::render_svg(s, sim));
  CHECK(pic.boxes.size() == 3 * 6 * 3);
  const std::string f = pic.fill("0F0");
  const std::string i = pic.fill("0I0");
  const std::string w = pic.fill("0W0");
  const auto plain = ppipe::make_schedule("1f1b", {3, 6, 1});
  const std::string b =
      picture(ppipe::render_svg(plain, ppipe::simulate(plain, ppipe::cost_model::uniform(1, 2))))
          .fill("0B0");
  CHECK((f != i && f != w && i != w && b != f && b != i && b != w));
  CHECK(pic.box("2I5").number("width") == Approx(pic.box("2F5").number("width")));  // B/2 = F here
  CHECK_THAT(ppipe::render_svg(s, sim),
             contains(">I input gradient</text>") && contains(">W weight gradient</text>"));
}

TEST_CASE("a measured run is drawn from its events, from the earliest one on") {
  ppipe::run_trace t;
  t.schedule_name = "1f1b";
  t.microbatches = 2;
  // Microseconds since some clock's start: the picture starts at the earliest event, 1000.
  t.ranks = {
      {event("0F0", 0, 1000, 1010), event("0SEND_F0", 1, 1010, 1011), event("0F1", 2, 1011, 1021),
       event("0SEND_F1", 3, 1021, 1022), event("0RECV_B0", 4, 1022, 1045),
       event("0B0", 5, 1045, 1065), event("0RECV_B1", 6, 1065, 1070), event("0B1", 7, 1070, 1090)},
      {event("1RECV_F0", 0, 1000, 1011), event("1F0", 1, 1011, 1021), event("1B0", 2, 1021, 1041),
       event("1SEND_B0", 3, 1041, 1042), event("1RECV_F1", 4, 1042, 1042.5),
       event("1F1", 5, 1042.5, 1052.5), event("1B1", 6, 1052.5, 1072.5),
       event("1SEND_B1", 7, 1072.5, 1073)}};
  const std::string svg = ppipe::render_svg(t);
  const picture pic(svg);
  CHECK(pic.texts("rank-label") == std::vector<std::string>{"rank 0", "rank 1"});
  REQUIRE(pic.boxes.size() == 8);
  const auto transfers = all(pic.root, "rect", "transfer");
  CHECK(transfers.size() == 8);
  const double scale = pic.rows.at(0).first->number("width") / 90.0;  // makespan 1000 .. 1090
  for (std::size_t r = 0; r < t.ranks.size(); ++r) {
    for (const ppipe::trace_event& e : t.ranks[r]) {
      if (!ppipe::is_compute(e.act.kind)) continue;
      const auto& [rect, rank] = pic.boxes.at(ppipe::to_string(e.act));
      CHECK(rank == static_cast<int>(r));
      CHECK(rect->number("x") == Approx(pic.left + (e.start - 1000) * scale).margin(0.01));
      CHECK(rect->number("width") == Approx((e.end - e.start) * scale).margin(0.01));
    }
  }
  bool waits = false;
  for (const auto& [node, rank] : transfers) {
    waits = waits || (node->at("data-action") == "0RECV_B0" &&
                      node->number("width") == Approx(23 * scale).margin(0.01));
  }
  CHECK(waits);
  CHECK(pic.fill("0F0") != pic.fill("0B0"));
  CHECK(pic.texts("title").at(0) == "1f1b (measured): p=2, m=2, v=1, bubble " +
                                        ppipe::detail::svg_percent(t.bubble_fraction()) +
                                        " of the step (90 microseconds)");
  CHECK(pic.texts("unit") == std::vector<std::string>{"time (microseconds)"});
  CHECK_THAT(svg, contains(">transfer</text>"));

  // A rank that ran two stages shades them apart, as a schedule's placement would.
  ppipe::run_trace two;
  two.schedule_name = "mine";
  two.ranks = {{event("0F0", 0, 0, 1), event("2F0", 1, 1, 2)}, {event("1F0", 0, 1, 2)}};
  const picture shaded(ppipe::render_svg(two));
  CHECK(shaded.fill("0F0") != shaded.fill("2F0"));
  CHECK(shaded.fill("0F0") == shaded.fill("1F0"));

  // An empty trace still draws its rows.
  ppipe::run_trace idle;
  idle.ranks.resize(3);
  const picture empty(ppipe::render_svg(idle));
  CHECK(empty.rows.size() == 3);
  CHECK(empty.boxes.empty());
}

TEST_CASE("names are escaped, so no name breaks the picture") {
  auto s = ppipe::make_schedule("gpipe", {2, 2, 1});
  s.name = "mine <v2> & \"best\" 'one'";
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2));
  const std::string svg = ppipe::render_svg(s, sim);
  const picture pic(svg);
  CHECK_THAT(pic.texts("title").at(0), contains("mine <v2> & \"best\" 'one': p=2"));
  CHECK(svg.find("<v2>") == std::string::npos);
  CHECK_THAT(svg, contains("mine &lt;v2&gt; &amp; &quot;best&quot; &apos;one&apos;"));

  // A chosen title, with a control character and a byte that is not UTF-8: both become U+FFFD.
  const std::string odd = ppipe::render_svg(s, sim, {"a\x01z\xff & \xc3\xa9", "s<", 960, 26, true});
  CHECK_NOTHROW(parse(odd));
  CHECK_THAT(odd,
             contains(">a&#xFFFD;z&#xFFFD; &amp; \xc3\xa9</text>") && contains("time (s&lt;)"));
  CHECK(odd.find('\x01') == std::string::npos);
  CHECK(odd.find('\xff') == std::string::npos);

  ppipe::run_trace t;
  t.schedule_name = "a<b&c";
  t.ranks = {{event("0F0", 0, 0, 1)}};
  CHECK_THAT(ppipe::render_svg(t), contains("a&lt;b&amp;c (measured)"));
  CHECK_NOTHROW(parse(ppipe::render_svg(t)));
}

TEST_CASE("what cannot be drawn or saved says how to fix it") {
  const auto s = ppipe::make_schedule("1f1b", {2, 2, 1});
  const auto no_timeline = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2), {false});
  CHECK_THAT(support::message_of([&] { (void)ppipe::render_svg(s, no_timeline); }),
             contains("0 timeline rows for schedule \"1f1b\" of 2 ranks; simulate this schedule "
                      "with record_timeline = true"));
  const auto sim = ppipe::simulate(s, ppipe::cost_model::uniform(1, 2));
  CHECK_THAT(support::message_of([&] {
               (void)ppipe::render_svg(s, sim, {"", "", 50, 26, true});
             }),
             contains("SVG width 50 pixels is outside 200 .. 100000"));
  CHECK_THAT(support::message_of([&] {
               (void)ppipe::render_svg(s, sim, {"", "", 960, 0, true});
             }),
             contains("SVG row height 0 pixels is outside 8 .. 1000"));
  CHECK_THAT(
      support::message_of([&] {
        (void)ppipe::render_svg(s, sim, {"", "", 960, 26, true, -1});
      }),
      contains("SVG time_span -1 is not a time; pass 0 for the step time, or a finite time > 0"));
  ppipe::run_trace t;
  t.ranks = {{event("0F0", 3, 0, std::nan(""))}};
  CHECK_THAT(
      support::message_of([&] { (void)ppipe::render_svg(t); }),
      contains("rank 0's event 0F0 (step 3) has start 0 and end nan; a trace needs finite times"));

  const std::string missing =
      (std::filesystem::temp_directory_path() / "ppipe-no-such-dir" / "x.svg").string();
  CHECK_THAT(support::message_of([&] { ppipe::save_svg(missing, "<svg/>"); }),
             contains("cannot open the SVG file \"" + missing + "\": ") &&
                 contains("give a path in a directory that exists"));

  const std::string path = (std::filesystem::temp_directory_path() / "ppipe-test-svg.svg").string();
  const std::string svg = ppipe::render_svg(s, sim);
  ppipe::save_svg(path, svg);
  std::ifstream in(path, std::ios::binary);
  std::stringstream back;
  back << in.rdbuf();
  CHECK(back.str() == svg);
  std::filesystem::remove(path);
}
