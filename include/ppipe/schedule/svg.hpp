#pragma once
/// @file
/// @brief The rank-by-time picture that pipeline papers draw (GPipe, Megatron-LM, zero bubble), as
/// a standalone SVG file: one row per rank, one coloured box per compute action, idle time as gaps.

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "ppipe/io/save_file.hpp"
#include "ppipe/io/utf8.hpp"
#include "ppipe/error.hpp"
#include "ppipe/schedule/action.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/simulate.hpp"

namespace ppipe {

/// @brief How render_svg() draws.
struct svg_options {
  /// Replaces the title render_svg() writes (name, p, m, v, bubble, step time) when not empty.
  std::string title;
  /// What the times are in, for the axis; empty: "time units" for a simulation, "microseconds"
  /// for a measured run.
  std::string unit;
  /// Width of the picture in pixels (200 .. 100000); the time axis gets what the labels leave.
  double width = 960.0;
  /// Height of one rank's row in pixels (8 .. 1000).
  double row_height = 26.0;
  /// Write the microbatch number inside each box wide enough to hold it.
  bool microbatch_labels = true;
  /// Time the axis runs to at least (0: the step time). Give pictures one value, such as the
  /// longest of their step times, to draw them at one scale; the grey rows still end with the step.
  double time_span = 0.0;
};

namespace detail {

/// One box of a picture: a compute action (a full-height box) or, in a measured run, a transfer
/// (a thin strip along the bottom of its row).
struct svg_box {
  action act;
  int chunk = 0;       ///< the stage's position among its rank's stages; picks the shade
  double start = 0.0;  ///< from the picture's time origin
  double end = 0.0;
};

/// What draw_svg() draws: rows of timed boxes and the words around them.
struct svg_chart {
  std::string title;
  std::string unit;
  double step = 0.0;                       ///< the rows run 0 .. step (the step time)
  int chunks = 1;                          ///< most stages any rank holds (shades per kind)
  std::vector<std::vector<svg_box>> rows;  ///< rows[r]: rank r's boxes
};

/// Length of the UTF-8 sequence at text[i] if it is well formed and a character XML allows, else 0.
inline std::size_t xml_char_length(std::string_view text, std::size_t i) {
  const std::size_t n = utf8_length(text, i);
  // U+FFFE and U+FFFF are well-formed UTF-8 but not XML characters.
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  if (n == 3 && byte(i) == 0xEF && byte(i + 1) == 0xBF && byte(i + 2) >= 0xBE) return 0;
  return n;
}

/// Appends `text` escaped for XML text and quoted attributes. Names come from users: markup
/// characters become entities, and control characters (which XML 1.0 forbids) and bytes that are
/// not UTF-8 become U+FFFD, so that no name can make the file unreadable.
inline void xml_text(std::string& out, std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const std::size_t n = xml_char_length(text, i);
      out += n == 0 ? std::string_view("&#xFFFD;") : text.substr(i, n);
      i += n == 0 ? 1 : n;
      continue;
    }
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c < 0x20 && c != '\t' ? std::string_view("&#xFFFD;") : std::string_view(&text[i], 1);
    }
    ++i;
  }
}

/// Appends `v` in fixed notation with at most `decimals` decimals and no trailing zeros. Built with
/// std::to_chars so that no locale (thousands separators, a decimal comma) reaches the file.
inline void svg_number(std::string& out, double v, int decimals = 2) {
  std::array<char, 64> buf{};
  const auto [end, ec] =
      std::to_chars(buf.data(), buf.data() + buf.size(), v, std::chars_format::fixed, decimals);
  std::string_view s(buf.data(),
                     ec == std::errc() ? static_cast<std::size_t>(end - buf.data()) : 0);
  if (s.find('.') != std::string_view::npos) {
    while (s.back() == '0') s.remove_suffix(1);
    if (s.back() == '.') s.remove_suffix(1);
  }
  out += s.empty() || s == "-0" ? std::string_view("0") : s;
}

/// `v` with up to ten significant digits, for times read by people (0.1 * 3 reads "0.3").
inline std::string svg_time(double v) {
  std::array<char, 40> buf{};
  const auto [end, ec] =
      std::to_chars(buf.data(), buf.data() + buf.size(), v, std::chars_format::general, 10);
  return ec == std::errc() ? std::string(buf.data(), end) : std::string("?");
}

/// `fraction` as a percentage with one decimal, e.g. "27.3%".
inline std::string svg_percent(double fraction) {
  std::string out;
  svg_number(out, std::isfinite(fraction) ? fraction * 100 : 0.0, 1);
  if (out.find('.') == std::string::npos) out += ".0";
  return out + "%";
}

struct svg_rgb {
  int r, g, b;
};

/// A dark and a light shade of one hue per compute kind (F, B, I, W, R; Tableau's pairs): F blue,
/// B orange, I red, W green, R purple. A rank's first stage gets the dark shade, its last the
/// light one.
inline constexpr std::array<std::array<svg_rgb, 2>, 5> svg_palette{{
    {{{0x4c, 0x78, 0xa8}, {0x9e, 0xca, 0xe9}}},
    {{{0xf5, 0x85, 0x18}, {0xff, 0xbf, 0x79}}},
    {{{0xe4, 0x57, 0x56}, {0xff, 0x9d, 0x98}}},
    {{{0x54, 0xa2, 0x4b}, {0x88, 0xd2, 0x7a}}},
    {{{0xb2, 0x79, 0xa2}, {0xd6, 0xa5, 0xc9}}},
}};
inline constexpr std::string_view svg_idle_colour = "#ececec";
inline constexpr svg_rgb svg_transfer_rgb{0x79, 0x70, 0x6e};  // grey

inline svg_rgb svg_shade(action_kind kind, int chunk, int chunks) {
  const auto& pair = svg_palette[static_cast<std::size_t>(kind) % svg_palette.size()];
  const double t =
      chunks > 1 ? std::clamp(static_cast<double>(chunk) / (chunks - 1), 0.0, 1.0) : 0.0;
  const auto mix = [t](int a, int b) { return static_cast<int>(std::lround(a + (b - a) * t)); };
  return {mix(pair[0].r, pair[1].r), mix(pair[0].g, pair[1].g), mix(pair[0].b, pair[1].b)};
}

inline std::string svg_hex(svg_rgb c) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out = "#";
  for (const int v : {c.r, c.g, c.b}) {
    out += digits[(v >> 4) & 0xF];
    out += digits[v & 0xF];
  }
  return out;
}

/// Dark text on light boxes, white text on dark ones.
inline std::string_view svg_text_colour(svg_rgb c) {
  return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b > 150 ? "#222" : "#fff";
}

/// A tick step of 1, 2 or 5 times a power of ten that puts a tick about every 80 pixels.
inline double svg_tick_step(double span, double pixels) {
  const double target = span / std::max(pixels / 80.0, 1.0);
  const double power = std::pow(10.0, std::floor(std::log10(target)));
  for (const double k : {1.0, 2.0, 5.0}) {
    if (k * power >= target) return k * power;
  }
  return 10 * power;
}

/// Appends SVG markup: numbers through svg_number(), text through xml_text().
struct svg_writer {
  std::string out;

  svg_writer& raw(std::string_view s) {
    out += s;
    return *this;
  }
  svg_writer& text(std::string_view s) {
    xml_text(out, s);
    return *this;
  }
  svg_writer& attr(std::string_view name, double v) {
    out.append(" ").append(name).append("=\"");
    svg_number(out, v);
    return raw("\"");
  }
  svg_writer& attr(std::string_view name, std::string_view v) {
    out.append(" ").append(name).append("=\"");
    return text(v).raw("\"");
  }
};

/// Where everything goes, worked out once from the chart and the options.
struct svg_layout {
  static constexpr double pad = 12.0;
  static constexpr double gap = 4.0;     // between rows
  static constexpr double char_w = 6.8;  // a generous average width of a 12px sans-serif character
  static constexpr double swatch = 12.0;
  double width = 0, row_h = 0;
  double left = 0, plot_w = 0;           // the plot area, right of the rank labels
  double step = 0, span = 0, scale = 0;  // rows run 0 .. step, the axis 0 .. span; pixels per time
  double top = 0, axis_y = 0, height = 0;

  [[nodiscard]] double x(double t) const { return left + t * scale; }
  [[nodiscard]] double row_y(std::size_t r) const {
    return top + static_cast<double>(r) * (row_h + gap);
  }
};

/// One legend entry: a compute kind with a swatch per shade, or idle, transfers, or a note.
struct svg_legend_entry {
  enum class what { kind, idle, transfer, note } is;
  action_kind kind = action_kind::forward;
  std::string label;
  double x = 0, y = 0;
};

/// The legend for what `chart` shows, laid out in lines from y = `y` within `width` pixels.
/// Returns its entries; `y` ends at the baseline of the last line.
inline std::vector<svg_legend_entry> svg_legend(const svg_chart& chart, double width, double& y) {
  using what = svg_legend_entry::what;
  std::array<bool, action_kind_count> present{};
  for (const auto& row : chart.rows) {
    for (const svg_box& b : row) present[static_cast<std::size_t>(b.act.kind)] = true;
  }
  static constexpr std::array<std::string_view, 5> labels{"F forward", "B backward", "I input gradient",
                                                          "W weight gradient", "R recompute"};
  std::vector<svg_legend_entry> out;
  for (std::size_t k = 0; k < labels.size(); ++k) {
    if (present[k])
      out.push_back({what::kind, static_cast<action_kind>(k), std::string(labels[k])});
  }
  out.push_back({what::idle, {}, "idle"});
  if (std::any_of(present.begin() + labels.size(), present.end(), [](bool b) { return b; })) {
    out.push_back({what::transfer, {}, "transfer"});
  }
  if (chart.chunks > 1) {
    out.push_back({what::note, {}, "shades, dark to light: a rank's stages, first to last"});
  }
  using L = svg_layout;
  double x = L::pad;
  for (svg_legend_entry& e : out) {
    const int swatches = e.is == what::kind ? chart.chunks : e.is == what::note ? 0 : 1;
    const double w =
        swatches * (L::swatch + 2) + 18 + L::char_w * static_cast<double>(e.label.size());
    if (x > L::pad && x + w > width - L::pad) {  // wrap
      x = L::pad;
      y += 18;
    }
    e.x = x;
    e.y = y;
    x += w;
  }
  return out;
}

inline void draw_legend(svg_writer& w, const std::vector<svg_legend_entry>& legend, int chunks) {
  using L = svg_layout;
  w.raw("<g class=\"legend\">\n");
  for (const svg_legend_entry& e : legend) {
    double x = e.x;
    const auto swatch = [&](const std::string& fill, double h) {
      w.raw("<rect").attr("x", x).attr("y", e.y - h).attr("width", L::swatch).attr("height", h);
      w.attr("fill", fill).raw("/>");
      x += L::swatch + 2;
    };
    if (e.is == svg_legend_entry::what::kind) {
      for (int c = 0; c < chunks; ++c) swatch(svg_hex(svg_shade(e.kind, c, chunks)), L::swatch);
    } else if (e.is == svg_legend_entry::what::idle) {
      swatch(std::string(svg_idle_colour), L::swatch);
    } else if (e.is == svg_legend_entry::what::transfer) {
      swatch(svg_hex(svg_transfer_rgb), 3);
    }
    w.raw("<text").attr("x", x + 2).attr("y", e.y - 2).raw(">").text(e.label).raw("</text>\n");
  }
  w.raw("</g>\n");
}

/// The rank labels, the idle background of each row (the boxes cover it) and the time axis, with
/// a faint line at every tick.
inline void draw_frame(svg_writer& w, const svg_chart& chart, const svg_layout& l) {
  w.raw("<g class=\"rows\">\n");
  for (std::size_t r = 0; r < chart.rows.size(); ++r) {
    w.raw("<text class=\"rank-label\" text-anchor=\"end\"").attr("x", l.left - 8);
    w.attr("y", l.row_y(r) + l.row_h / 2 + 4).raw(">rank ").raw(std::to_string(r)).raw("</text>");
    w.raw("<rect class=\"idle\"").attr("data-rank", std::to_string(r)).attr("x", l.left);
    w.attr("y", l.row_y(r)).attr("width", l.step * l.scale).attr("height", l.row_h);
    w.attr("fill", svg_idle_colour).raw("/>\n");
  }
  w.raw("</g>\n");
  const double tick = svg_tick_step(l.span, l.plot_w);
  const auto ticks = static_cast<long long>(std::floor(l.span / tick + 1e-9));
  w.raw("<g class=\"axis\" stroke=\"#bbb\" stroke-width=\"0.5\">\n");
  for (long long i = 0; i <= ticks; ++i) {
    const double x = l.x(static_cast<double>(i) * tick);
    w.raw("<line").attr("x1", x).attr("y1", l.top - 2).attr("x2", x).attr("y2", l.axis_y + 4);
    w.raw("/>");
  }
  w.raw("\n<line stroke=\"#444\"").attr("x1", l.left).attr("y1", l.axis_y);
  w.attr("x2", l.x(l.span)).attr("y2", l.axis_y).raw("/>\n</g>\n");
  w.raw("<g class=\"ticks\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">\n");
  for (long long i = 0; i <= ticks; ++i) {
    w.raw("<text").attr("x", l.x(static_cast<double>(i) * tick)).attr("y", l.axis_y + 16);
    w.raw(">").text(svg_time(static_cast<double>(i) * tick)).raw("</text>");
  }
  w.raw("\n<text class=\"unit\"").attr("x", l.left + l.plot_w / 2).attr("y", l.axis_y + 34);
  w.raw(">time (").text(chart.unit).raw(")</text>\n</g>\n");
}

/// Each rank's boxes, with a tooltip, and the microbatch number where it fits. A thin white outline
/// separates neighbours of one colour.
inline void draw_boxes(svg_writer& w, const svg_chart& chart, const svg_layout& l, bool labels) {
  const double font = std::min(11.0, l.row_h - 4);
  for (std::size_t r = 0; r < chart.rows.size(); ++r) {
    w.raw("<g class=\"rank\"").attr("data-rank", std::to_string(r));
    w.raw(" stroke=\"#fff\" stroke-width=\"0.75\" text-anchor=\"middle\"").attr("font-size", font);
    w.raw(">\n");
    for (const svg_box& b : chart.rows[r]) {
      const bool compute = is_compute(b.act.kind);
      const double x = l.x(b.start);
      const double width = std::max(b.end - b.start, 0.0) * l.scale;
      const std::string name = to_string(b.act);
      const svg_rgb fill =
          compute ? svg_shade(b.act.kind, b.chunk, chart.chunks) : svg_transfer_rgb;
      w.raw(compute ? "<rect class=\"box\"" : "<rect class=\"transfer\" stroke=\"none\"");
      w.attr("data-action", name).attr("x", x);
      w.attr("y", compute ? l.row_y(r) : l.row_y(r) + l.row_h - 3).attr("width", width);
      w.attr("height", compute ? l.row_h : 3);
      w.attr("fill", svg_hex(fill)).raw("><title>rank ").raw(std::to_string(r)).raw(": ");
      w.text(describe(b.act)).raw(", ").text(svg_time(b.start)).raw(" .. ").text(svg_time(b.end));
      w.raw(" ").text(chart.unit).raw("</title></rect>\n");
      const std::string mb = std::to_string(b.act.microbatch);
      if (compute && labels && width >= static_cast<double>(mb.size()) * font * 0.62 + 3) {
        w.raw("<text class=\"mb\" stroke=\"none\"").attr("data-action", name);
        w.attr("x", x + width / 2).attr("y", l.row_y(r) + l.row_h / 2 + font * 0.36);
        w.attr("fill", svg_text_colour(fill)).raw(">").raw(mb).raw("</text>\n");
      }
    }
    w.raw("</g>\n");
  }
}

/// Draws `chart`: the one drawing routine behind every render_svg().
inline std::string draw_svg(const svg_chart& chart, const svg_options& options) {
  if (!(options.width >= 200 && options.width <= 100000)) {
    fail(errc::invalid_argument, "SVG width ", options.width,
         " pixels is outside 200 .. 100000; pass a width in that range");
  }
  if (!(options.row_height >= 8 && options.row_height <= 1000)) {
    fail(errc::invalid_argument, "SVG row height ", options.row_height,
         " pixels is outside 8 .. 1000; pass a row_height in that range");
  }
  if (!(options.time_span >= 0 && std::isfinite(options.time_span))) {
    fail(errc::invalid_argument, "SVG time_span ", options.time_span,
         " is not a time; pass 0 for the step time, or a finite time > 0");
  }
  svg_layout l;
  l.width = options.width;
  l.row_h = options.row_height;
  const std::size_t p = chart.rows.size();
  const std::string widest_label = detail::concat("rank ", p > 0 ? p - 1 : 0);
  l.left = l.pad + 8 + l.char_w * static_cast<double>(widest_label.size());
  l.plot_w = l.width - l.left - l.pad;
  l.step = chart.step > 0 && std::isfinite(chart.step) ? chart.step : 0.0;
  l.span = std::max(l.step, options.time_span) > 0 ? std::max(l.step, options.time_span) : 1.0;
  l.scale = l.plot_w / l.span;
  double legend_y = l.pad + 34;
  const std::vector<svg_legend_entry> legend = svg_legend(chart, l.width, legend_y);
  l.top = legend_y + 14;
  l.axis_y = l.row_y(p) - l.gap + 6;
  l.height = l.axis_y + 44;

  svg_writer w;
  w.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  w.raw("<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\"");
  w.attr("width", l.width).attr("height", l.height).raw(" viewBox=\"0 0 ");
  svg_number(w.out, l.width);
  w.raw(" ");
  svg_number(w.out, l.height);
  w.raw("\" font-family=\"sans-serif\" font-size=\"12\">\n<title>").text(chart.title);
  w.raw("</title>\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n");
  w.raw("<text class=\"title\"").attr("x", l.pad).attr("y", l.pad + 14);
  w.raw(" font-size=\"15\" font-weight=\"bold\">").text(chart.title).raw("</text>\n");
  draw_legend(w, legend, chart.chunks);
  draw_frame(w, chart, l);
  draw_boxes(w, chart, l, options.microbatch_labels);
  w.raw("</svg>\n");
  return std::move(w.out);
}

}  // namespace detail

/// @brief Draws a simulation (recorded with `record_timeline`) as the papers draw schedules: one
/// row per rank, time to the right, one box per compute action from its start to its end, coloured
/// by kind (F blue, B orange, I red, W green; a rank's later stages in lighter shades) with the
/// microbatch number inside when it fits, and idle time as grey gaps. The title gives the name, p,
/// m, v, the bubble and the step time; a legend and a time axis frame it. Each box is a
/// `<rect class="box" data-action="2F5">` whose tooltip describes the action. Throws ppipe::error
/// (invalid_argument) if the simulation has no timeline for these ranks or a time is not finite.
/// @param s the schedule that was simulated; gives the title's name, p and m and each box's shade
/// @param sim its simulation, run with record_timeline = true
/// @param options size, title, unit, labels and time span of the picture
/// @return a complete SVG document, ready for save_svg()
inline std::string render_svg(const schedule& s, const simulation& sim,
                              const svg_options& options = {}) {
  if (sim.timeline.size() != s.ranks.size()) {
    detail::fail(errc::invalid_argument, "the simulation has ", sim.timeline.size(),
                 " timeline rows for schedule \"", s.name, "\" of ", s.ranks.size(),
                 " ranks; simulate this schedule with record_timeline = true");
  }
  if (!std::isfinite(sim.makespan) || sim.makespan < 0) {
    detail::fail(errc::invalid_argument, "the simulation's step time ", sim.makespan,
                 " cannot be drawn; simulate with finite, non-negative costs");
  }
  detail::svg_chart chart;
  chart.unit = options.unit.empty() ? "time units" : options.unit;
  chart.step = sim.makespan;
  chart.rows.resize(s.ranks.size());
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    for (const timed_action& t : sim.timeline[r]) {
      if (!std::isfinite(t.start) || !std::isfinite(t.end)) {
        detail::fail(errc::invalid_argument, "rank ", r, "'s ", to_string(t.act), " runs from ",
                     t.start, " to ", t.end, "; simulate with finite costs to draw it");
      }
      const int chunk = s.place.chunk_of(t.act.stage);
      chart.chunks = std::max(chart.chunks, chunk + 1);
      chart.step = std::max(chart.step, t.end);
      chart.rows[r].push_back({t.act, chunk, t.start, t.end});
    }
  }
  chart.title = !options.title.empty()
                    ? options.title
                    : detail::concat(s.name, ": p=", s.ranks.size(), ", m=", s.microbatches,
                                     ", v=", chart.chunks, ", bubble ",
                                     detail::svg_percent(sim.bubble_fraction()), " of the step (",
                                     detail::svg_time(sim.makespan), " ", chart.unit, ")");
  return detail::draw_svg(chart, options);
}

/// @brief Writes `svg` (from render_svg()) to the file `path`. Throws ppipe::error
/// (invalid_argument) naming the path and the reason if the file cannot be written.
/// @param path the file to create, or to overwrite if it exists
/// @param svg the document to write, byte for byte
inline void save_svg(const std::string& path, std::string_view svg) {
  detail::save_file(path, "the SVG file",
                    [&](std::ostream& os) { os.write(svg.data(), static_cast<std::streamsize>(svg.size())); });
}

}  // namespace ppipe
