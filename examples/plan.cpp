// ppipe-plan: plan a pipeline before running it. Generates a schedule, proves it valid and
// deadlock-free, simulates it under the costs you give, and prints the timeline, the bubble, the
// activations each stage holds at its peak, and warnings when the plan is poor. Given a model's
// layers (and the devices), it also splits the model over the ranks for each schedule and predicts
// the step time and each rank's peak memory.
//
//   ppipe-plan                                 all schedules, p=4, m=8, v=2
//   ppipe-plan --svg docs/gallery              ... and a picture of each
//   ppipe-plan --schedule-file mine.csv        a schedule of your own, checked and timed
//   ppipe-plan --schedule 1f1b -p 8 -m 4       one schedule, too few microbatches
//   ppipe-plan -p 4 -m 16 --forward 1,1,2,1    per-stage costs: stage 2 is the slow one
//   ppipe-plan --model examples/plans/mixed_gpus.txt -m 8    a split over an RTX 4090 and a 3090
//   ppipe-plan --layers 90 --devices 1,2       90 alike layers on a device and one twice as fast
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ppipe/ppipe.hpp>
#include <ppipe/schedule/svg.hpp>

#include "support/cli.hpp"

namespace {

struct options {
  std::string schedule = "all";
  int ranks = 4;
  bool ranks_given = false;  // -p was given (else --devices or the model file may set it)
  int microbatches = 8;
  bool microbatches_given = false;
  std::optional<int> virtual_stages;
  std::vector<double> forward{1.0};
  std::vector<double> backward{2.0};
  bool stage_costs_given = false;  // --forward, --backward or --activation-mib
  double transfer = 0.0;
  ppipe::transfer_model transfers = ppipe::transfer_model::rendezvous;
  std::optional<double> activation_mib;
  int width = 100;
  std::optional<bool> timeline;  // default: on without a model, off with one
  std::optional<std::string> model_file;
  std::optional<int> layers;
  std::optional<std::string> devices;
  std::optional<std::string> partitioner;
  std::optional<std::string> svg;  // a picture of each plan: a file (one schedule) or a directory (all)
  std::optional<std::string> schedule_file;  // a schedule of one's own, in PyTorch's CSV form
};

constexpr int max_layers = 1 << 20;  // far more than any model; keeps a typo from eating the RAM

constexpr const char* footer =
    R"(With all schedules, GPipe, 1F1B and ZB-H1 run one stage per rank whatever -v says.

Splitting a model over the ranks (instead of --forward, --backward and --activation-mib):
  --model or --layers gives the layers, --devices the devices, --partitioner the way to split.
  Each schedule then prints its split, the predicted step time and each rank's peak memory (in
  GiB) against its capacity, and a table compares the schedules.

Model file: one item per line; # starts a comment.
  layer NAME FORWARD BACKWARD [PARAMS ACTIVATIONS] [x COUNT]
      One layer, or COUNT alike ones. FORWARD and BACKWARD: its times for one microbatch on the
      reference device (any unit). PARAMS: the memory it keeps whatever the microbatches (weights,
      gradients, optimizer state); ACTIVATIONS: the memory one microbatch keeps from its forward
      to its backward. Memory sizes end in B, KiB, MiB, GiB or TiB (350MiB, 1.5GiB); default 0.
  device NAME SPEED [MEMORY]
      The next rank's device: its speed relative to the reference device, and its memory
      (default: no limit). Put a NAME with spaces in quotes: "RTX 4090".

Exit status: 0 when something was planned, 2 when the input allows no plan (or is wrong), 1 when
the run failed (e.g. a picture could not be written).
)";

// Positive times separated by commas: "1", "1,1,2,1".
std::vector<double> to_list(const std::string& text) {
  std::vector<double> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    out.push_back(examples::cli::read_number<double>(item).value_or(0));
  return out;
}

// A validator for --forward and --backward.
CLI::Validator times_list() {
  return CLI::Validator(
      [](std::string& text) {
        const examples::cli::range<double> positive{0.0, std::numeric_limits<double>::max(), true};
        std::stringstream in(text);
        std::size_t n = 0;
        for (std::string item; std::getline(in, item, ','); ++n) {
          double value = 0;
          if (std::string why = examples::cli::number_problem(item, positive, value);
              !why.empty()) {
            return "time " + std::to_string(n + 1) + " of the list: " + why;
          }
        }
        return n == 0 ? std::string("give at least one time") : std::string();
      },
      "each > 0");
}

options parse(CLI::App& app, int argc, char** argv) {
  namespace cli = examples::cli;
  options o;
  std::vector<std::string> names(std::begin(ppipe::schedule_names),
                                 std::end(ppipe::schedule_names));
  names.insert(names.begin() + 3, "interleaved");
  names.push_back("all");
  cli::add_schedule(app, o.schedule, names, "the schedule (all compares every training schedule)");
  const CLI::Option* ranks =
      cli::add_ranks(app, o.ranks, "pipeline ranks (default 4, or one per device given)");
  const CLI::Option* microbatches = cli::add_microbatches(app, o.microbatches);
  int virtual_stages = 2;
  const CLI::Option* virtual_option =
      cli::add_virtual(
          app, virtual_stages,
          "stages per rank for interleaved_1f1b and forward_only (default 2 with all or "
          "interleaved_1f1b, else 1); zb_v and dualpipe_v always have 2")
          ->default_str("");
  std::string forward = "1";
  std::string backward = "2";
  const CLI::Option* forward_option =
      app.add_option("--forward", forward,
                     "forward time of one rank's share of the model, split evenly over its stages; "
                     "or a list with the time of every stage")
          ->capture_default_str()
          ->type_name("T[,T..]")
          ->check(times_list());
  const CLI::Option* backward_option =
      app.add_option("--backward", backward, "the same for the backward")
          ->capture_default_str()
          ->type_name("T[,T..]")
          ->check(times_list());
  cli::add_number(app, "--transfer", o.transfer, cli::range<double>{0.0},
                  "time for one activation or gradient message to arrive");
  std::string transfers = "rendezvous";
  app.add_option("--transfers", transfers,
                 "rendezvous (sends wait for their receive, as NCCL's do) or buffered (sends never "
                 "wait, as MPI_Isend's and the host backend's)")
      ->capture_default_str()
      ->check(cli::one_of({"rendezvous", "buffered"}, "a transfer model"));
  double activation_mib = 0;
  const CLI::Option* activation_option = cli::add_number(
      app, "--activation-mib", activation_mib, cli::range<double>{0.0},
      "MiB of activations one rank's share of the model keeps per microbatch (prints the peak "
      "memory of each rank)");
  cli::add_number(app, "--width", o.width, cli::range<int>{20, cli::most},
                  "characters per timeline line");
  app.add_flag_callback(
      "--no-timeline", [&o] { o.timeline = false; }, "print the figures only");
  app.add_flag_callback(
      "--timeline", [&o] { o.timeline = true; },
      "draw the timeline (the default, except with a model)");
  std::string svg;
  const CLI::Option* svg_option =
      app.add_option("--svg", svg,
                     "also draw each plan as an SVG picture: PATH is the file with one schedule, a "
                     "folder (which must exist) with all, one NAME.svg per schedule")
          ->type_name("PATH");
  std::string schedule_file;
  const CLI::Option* schedule_file_option =
      app.add_option("--schedule-file", schedule_file,
                     "plan the schedule in this file instead: PyTorch's CSV form (one row per "
                     "rank, one cell per step such as 0F1, 2I0, 1W3; empty cells idle), validated "
                     "first")
          ->type_name("FILE");
  std::string model_file;
  const CLI::Option* model_option =
      app.add_option("--model", model_file,
                     "the model's layers, and optionally the devices, from a text file (below)")
          ->type_name("FILE");
  int layers = 1;
  const CLI::Option* layers_option =
      cli::add_number(app, "--layers", layers, cli::range<int>{1, max_layers},
                      "this many alike layers instead (forward 1, backward 2, no memory)")
          ->default_str("");
  std::string devices;
  const CLI::Option* devices_option =
      app.add_option("--devices", devices,
                     "one SPEED[:MEMORY] per rank, e.g. 1.0:24GiB,0.6:24GiB; replaces the file's "
                     "devices, and sets the number of ranks")
          ->type_name("SPEC");
  std::string partitioner;
  std::vector<std::string> partitioners(std::begin(ppipe::partitioner_names),
                                        std::end(ppipe::partitioner_names));
  const CLI::Option* partitioner_option =
      app.add_option("--partitioner", partitioner,
                     "uniform, balanced or heterogeneous (default: heterogeneous when a device has "
                     "a speed other than 1 or a memory limit, else balanced)")
          ->type_name("NAME")
          ->check(cli::one_of(partitioners, "a partitioner"));
  app.footer(footer);
  app.parse(argc, argv);

  if (o.schedule == "interleaved") o.schedule = "interleaved_1f1b";
  o.ranks_given = ranks->count() > 0;
  o.microbatches_given = microbatches->count() > 0;
  if (virtual_option->count() > 0) o.virtual_stages = virtual_stages;
  o.forward = to_list(forward);
  o.backward = to_list(backward);
  o.stage_costs_given =
      forward_option->count() + backward_option->count() + activation_option->count() > 0;
  o.transfers =
      transfers == "buffered" ? ppipe::transfer_model::buffered : ppipe::transfer_model::rendezvous;
  if (activation_option->count() > 0) o.activation_mib = activation_mib;
  if (svg_option->count() > 0) o.svg = svg;
  if (schedule_file_option->count() > 0) o.schedule_file = schedule_file;
  if (model_option->count() > 0) o.model_file = model_file;
  if (layers_option->count() > 0) o.layers = layers;
  if (devices_option->count() > 0) o.devices = devices;
  if (partitioner_option->count() > 0) o.partitioner = partitioner;

  if (o.model_file && o.layers) cli::refuse("give --model or --layers, not both");
  const bool model = o.model_file || o.layers;
  if (model && o.stage_costs_given) {
    cli::refuse(
        "--forward, --backward and --activation-mib describe a model without layers; with --model "
        "or --layers, the layers' own costs apply");
  }
  if (!model && (o.devices || o.partitioner)) {
    cli::refuse(
        "--devices and --partitioner plan a model split; give the model with --model FILE or "
        "--layers N");
  }
  if (model && o.svg) {
    cli::refuse(
        "--svg draws the plans of --forward and --backward costs or of --schedule-file; with "
        "--model or --layers there is no picture yet");
  }
  if (o.schedule_file &&
      (model || o.schedule != "all" || o.ranks_given || o.microbatches_given || o.virtual_stages)) {
    cli::refuse(
        "--schedule-file plans the file's schedule (its ranks, stages and microbatches) with "
        "--forward and --backward costs; leave out --schedule, -p, -m, -v, --model and --layers");
  }
  return o;
}

// A file's text, refused past max_file_bytes: far more than any model or schedule file, and a
// wrong path (a binary, /dev/zero) must not fill the memory. `what` names the file in messages.
constexpr std::size_t max_file_bytes = std::size_t{64} << 20;

std::string read_text(const std::string& path, std::string_view what, std::string_view fix) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ppipe::detail::fail(ppipe::errc::parse_error, "cannot open the ", what, " \"",
                        examples::shown(path, 4096), "\"; ", fix);
  }
  std::string text;
  std::string chunk(std::size_t{1} << 16, '\0');
  while (in.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || in.gcount() > 0) {
    text.append(chunk.data(), static_cast<std::size_t>(in.gcount()));
    if (text.size() > max_file_bytes) {
      ppipe::detail::fail(ppipe::errc::parse_error, "the ", what, " \"",
                          examples::shown(path, 4096), "\" is larger than ",
                          examples::human_bytes(max_file_bytes), ", far more than any ", what,
                          " needs; ", fix);
    }
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Plans without a model: every stage costs what --forward and --backward say.

// Per-stage costs. A single value is one rank's share of the model (1/p of it), split evenly over
// the rank's stages, so that schedules with more, smaller stages are compared on the same model.
// A list names every stage of the schedule.
ppipe::cost_model costs_for(const options& o, int stages, int ranks) {
  const double share = static_cast<double>(ranks) / stages;
  const auto at = [&](const std::vector<double>& list, const char* flag, int s) {
    if (list.size() != 1 && list.size() != static_cast<std::size_t>(stages)) {
      ppipe::detail::fail(ppipe::errc::invalid_argument, flag, " lists ", list.size(),
                          " costs but the pipeline has ", stages, " stages; give one value or ", stages);
    }
    return list.size() == 1 ? list.front() * share : list[static_cast<std::size_t>(s)];
  };
  ppipe::cost_model costs{{}, o.transfer};
  for (int s = 0; s < stages; ++s) {
    const double f = at(o.forward, "--forward", s);
    const double b = at(o.backward, "--backward", s);
    costs.stages.push_back({f, b, b / 2, b / 2});
  }
  return costs;
}

std::string percent(double x) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << x * 100 << "%";
  return os.str();
}

// The schedule `name`, checked valid and deadlock-free. Comparing all schedules runs GPipe and
// 1F1B with one stage per rank whatever -v says: it is meant for the interleaved schedule.
ppipe::schedule make(const options& o, const std::string& name, bool compare) {
  if (o.schedule_file) {
    ppipe::csv_read_options read;
    read.name = name;
    read.model = o.transfers;
    const std::string text =
        read_text(*o.schedule_file, "schedule file", "give --schedule-file the path of a CSV file");
    try {
      return ppipe::from_csv(text, read);  // validated
    } catch (const ppipe::error& e) {
      throw ppipe::error(e.code(), ppipe::detail::concat(examples::shown(*o.schedule_file, 4096),
                                                         ": ", e.message()));
    }
  }
  int v = o.virtual_stages.value_or(name == "interleaved_1f1b" ? 2 : 1);
  if (compare && (name == "gpipe" || name == "1f1b" || name == "zb_h1")) v = 1;
  if (name == "zb_v" || name == "dualpipe_v") v = compare ? 2 : o.virtual_stages.value_or(2);  // a V: two stages per rank
  // A schedule holds a few actions per stage and microbatch, each with its simulated times.
  constexpr std::uint64_t per_stage_microbatch = 6 * 32;
  examples::check_memory(examples::product(o.ranks, o.microbatches, v, per_stage_microbatch),
                         ppipe::detail::concat("planning ", name, " with p=", o.ranks,
                                               ", m=", o.microbatches, " and v=", v),
                         "give fewer ranks, microbatches or stages per rank");
  ppipe::schedule s = ppipe::make_schedule(name, {o.ranks, o.microbatches, v});
  ppipe::validate(s, o.transfers);
  return s;
}

std::size_t count_transfers(const ppipe::schedule& s) {
  std::size_t n = 0;
  for (const auto& list : s.ranks) {
    for (const ppipe::action& a : list) n += ppipe::is_transfer(a.kind) ? 1 : 0;
  }
  return n;
}

void print_header(const options& o, const ppipe::schedule& s) {
  std::cout << "== " << s.name << ": p=" << s.num_ranks() << " ranks, m=" << s.microbatches
            << " microbatches, " << s.num_stages() << " stages (" << s.num_stages() / s.num_ranks()
            << " per rank) ==\n"
            << "valid and deadlock-free (" << ppipe::to_string(o.transfers) << " transfers): " << s.size()
            << " actions, " << count_transfers(s) << " of them transfers\n";
}

void print_timeline(const options& o, const ppipe::schedule& s, const ppipe::simulation& sim) {
  try {
    std::cout << ppipe::render_timeline(s, sim, {o.width, 0.0, 1 << 12});
  } catch (const ppipe::error& e) {
    std::cout << "(timeline not drawn: " << e.message() << ")\n";
  }
}

// A picture that could not be written: it ends the run, where a plan's own error only skips it.
struct not_written : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Refuses an --svg that cannot be written before anything is planned: a folder that exists for
// all schedules, else a file in one.
void check_svg(const options& o) {
  if (!o.svg) return;
  const bool all = o.schedule == "all" && !o.schedule_file;
  if (all && !std::filesystem::is_directory(*o.svg)) {
    ppipe::detail::fail(
        ppipe::errc::invalid_argument, "--svg \"", examples::shown(*o.svg, 4096),
        "\" is not a folder that exists: with all schedules it names the folder for their pictures "
        "(NAME.svg each); create it, or give --schedule NAME for one picture");
  }
  examples::cli::check_writable(all ? *o.svg + "/gpipe.svg" : *o.svg, "--svg",
                                "give a path this process may write");
}

struct row {
  std::string name;
  double makespan;
  double bubble;
  double peak;  // most activations any rank holds, in microbatches of a rank's share of the model
  double speedup;
  std::size_t transfers;
};

row plan(const options& o, const std::string& name, bool compare) {
  const ppipe::schedule s = make(o, name, compare);
  const bool timeline = o.timeline.value_or(true);
  const ppipe::simulation sim =
      ppipe::simulate(s, costs_for(o, s.num_stages(), s.num_ranks()), {timeline || o.svg, o.transfers});
  const int p = s.num_ranks();
  const int v = s.num_stages() / p;

  print_header(o, s);
  if (timeline) print_timeline(o, s, sim);
  std::cout << "rank  busy      idle      idle     peak activations: microbatches of the rank's share"
               " (and of each stage)\n";
  for (int r = 0; r < p; ++r) {
    std::ostringstream stages;
    for (int stage : s.place.stages_on(r)) {
      stages << (stages.tellp() > 0 ? " " : "") << "s" << stage << "="
             << sim.peak_stage_activations[static_cast<std::size_t>(stage)];
    }
    // In units of one rank's share of the model: a rank with v stages holds 1/v of it per stage.
    const double peak = sim.peak_rank_activations[static_cast<std::size_t>(r)] / static_cast<double>(v);
    std::cout << std::left << std::setw(6) << r << std::setw(10) << sim.busy[static_cast<std::size_t>(r)]
              << std::setw(10) << sim.idle(r) << std::setw(9) << percent(sim.idle(r) / sim.makespan)
              << std::setw(6) << peak << "(" << stages.str() << ")";
    if (o.activation_mib) std::cout << " = " << peak * *o.activation_mib << " MiB";
    std::cout << std::right << "\n";
  }
  // The textbook bubble is GPipe's and (interleaved) 1F1B's; a zero-bubble or hand-made order has its own.
  const bool textbook = s.name == "gpipe" || s.name == "1f1b" || s.name == "interleaved_1f1b";
  std::cout << "step time " << sim.makespan << "; bubble " << percent(sim.bubble_fraction()) << " of the step";
  if (textbook) std::cout << " (textbook (p-1)/(v*m+p-1) = " << percent(ppipe::ideal_bubble_fraction(p, s.microbatches, v)) << ")";
  std::cout << ", " << percent(sim.bubble_overhead()) << " relative to compute\n"
            << "speedup over one device running every stage: " << std::setprecision(3) << sim.speedup()
            << "x\n";
  for (const std::string& warning : ppipe::advise(s, sim)) std::cout << "warning: " << warning << "\n";
  if (o.svg) {
    const std::string path = compare ? *o.svg + "/" + s.name + ".svg" : *o.svg;
    try {
      ppipe::save_svg(path, ppipe::render_svg(s, sim));
    } catch (const ppipe::error& e) {
      throw not_written(e.what());  // a failed run, not a plan that is "not possible"
    }
    std::cout << "picture: " << path << "\n";
  }
  std::cout << "\n";
  int peak = 0;
  for (int x : sim.peak_rank_activations) peak = std::max(peak, x);
  return {s.name, sim.makespan, sim.bubble_fraction(), peak / static_cast<double>(v), sim.speedup(),
          count_transfers(s)};
}

// ---------------------------------------------------------------------------------------------
// Reading a model: its layers from a file or --layers, its devices from the file or --devices.
// Memory is handed to ppipe in GiB (ppipe takes any one unit), so its messages read in GiB too.

// Alike layers from one line of the model, for naming what each stage holds.
struct layer_group {
  std::string name;
  int first = 0;
  int count = 1;
};

struct model {
  std::string source;  // the file, or "--layers N"
  std::vector<ppipe::layer_cost> layers;
  std::vector<layer_group> groups;
  std::vector<ppipe::device_spec> devices;  // one per rank, or none: alike devices without a limit
};

// The whole of `text` as a finite number, or nothing.
std::optional<double> number_in(const std::string& text) {
  return examples::cli::read_number<double>(text);
}

// "350MiB" or "1.5GiB" in GiB, or a parse_error that `where` begins. A bare 0 needs no unit.
double memory_in(std::string_view where, const std::string& text) {
  constexpr std::pair<std::string_view, double> units[] = {
      {"B", 1.0 / (1 << 30)}, {"KiB", 1.0 / (1 << 20)}, {"MiB", 1.0 / (1 << 10)}, {"GiB", 1.0},
      {"TiB", 1024.0}};
  const std::size_t unit = text.find_first_of("BKMGT");
  const std::optional<double> value = number_in(text.substr(0, unit));
  if (value && unit == std::string::npos && *value == 0) return 0.0;
  for (const auto& [name, gib] : units) {
    if (value && unit != std::string::npos && text.substr(unit) == name) return *value * gib;
  }
  ppipe::detail::fail(
      ppipe::errc::parse_error, where, "\"", examples::shown(text),
      "\" is not a memory size; write e.g. 350MiB or 1.5GiB (units B, KiB, MiB, GiB, TiB)");
}

model read_model_file(const std::string& path) {
  std::istringstream in(read_text(
      path, "model file", "give --model the path of a text file (its format is in --help)"));
  constexpr std::string_view layer_syntax = "layer NAME FORWARD BACKWARD [PARAMS ACTIVATIONS] [x COUNT]";
  constexpr std::string_view device_syntax = "device NAME SPEED [MEMORY]";
  model out;
  out.source = examples::shown(path, 4096);
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    line.erase(std::min(line.find('#'), line.size()));
    std::istringstream text(line);
    std::vector<std::string> w;
    for (std::string word; text >> std::quoted(word);) w.push_back(word);
    if (w.empty()) continue;
    const std::string where = ppipe::detail::concat(out.source, ":", line_number, ": ");
    const auto expected = [&](std::string_view syntax, std::string_view or_syntax = "") {
      line.erase(line.find_last_not_of(" \t\r") + 1);
      ppipe::detail::fail(
          ppipe::errc::parse_error, where, "expected ", syntax, or_syntax.empty() ? "" : " or ",
          or_syntax, ", not \"",
          examples::shown(std::string_view(line).substr(line.find_first_not_of(" \t"))), "\"");
    };
    const auto number = [&](const std::string& token, std::string_view syntax) {
      const std::optional<double> value = number_in(token);
      if (!value) {
        ppipe::detail::fail(ppipe::errc::parse_error, where, "\"", examples::shown(token),
                            "\" is not a number; expected ", syntax);
      }
      return *value;
    };
    std::size_t n = w.size();
    if (w[0] == "layer") {
      double count = 1;
      if (n >= 3 && w[n - 2] == "x") {
        count = number(w[n - 1], layer_syntax);
        if (count < 1 || count > max_layers || count != std::floor(count)) {
          ppipe::detail::fail(ppipe::errc::parse_error, where, "\"", examples::shown(w[n - 1]),
                              "\" is not a layer count; write x COUNT with a whole number from 1 "
                              "to ",
                              max_layers);
        }
        n -= 2;
      }
      if (n != 4 && n != 6) expected(layer_syntax);
      const ppipe::layer_cost cost{number(w[2], layer_syntax), number(w[3], layer_syntax),
                                   n == 6 ? memory_in(where, w[4]) : 0.0,
                                   n == 6 ? memory_in(where, w[5]) : 0.0};
      if (static_cast<double>(out.layers.size()) + count > max_layers) {
        ppipe::detail::fail(ppipe::errc::parse_error, where, "the model has more than ", max_layers,
                            " layers, more than ppipe-plan plans");
      }
      out.groups.push_back(
          {examples::shown(w[1]), static_cast<int>(out.layers.size()), static_cast<int>(count)});
      out.layers.insert(out.layers.end(), static_cast<std::size_t>(count), cost);
    } else if (w[0] == "device") {
      if (n != 3 && n != 4) expected(device_syntax);
      ppipe::device_spec d;
      d.name = examples::shown(w[1]);
      d.speed = number(w[2], device_syntax);
      if (n == 4) d.memory = memory_in(where, w[3]);
      out.devices.push_back(d);
    } else {
      expected(layer_syntax, device_syntax);
    }
  }
  if (out.layers.empty()) {
    ppipe::detail::fail(ppipe::errc::parse_error, out.source,
                        ": the model has no layers; give one line per layer, or per run of alike "
                        "layers: ",
                        layer_syntax);
  }
  return out;
}

// --devices 1.0:24GiB,0.6:24GiB
std::vector<ppipe::device_spec> read_devices(const std::string& spec) {
  std::vector<ppipe::device_spec> out;
  std::stringstream in(spec);
  for (std::string item; std::getline(in, item, ',');) {
    const std::size_t colon = item.find(':');
    ppipe::device_spec d;
    const std::optional<double> speed = number_in(item.substr(0, colon));
    if (!speed) {
      ppipe::detail::fail(
          ppipe::errc::parse_error, "--devices: \"", examples::shown(item.substr(0, colon)),
          "\" is not a speed; give one SPEED[:MEMORY] per rank, e.g. 1.0:24GiB,0.6:24GiB");
    }
    d.speed = *speed;
    if (colon != std::string::npos) d.memory = memory_in("--devices: ", item.substr(colon + 1));
    out.push_back(d);
  }
  if (out.empty()) {
    ppipe::detail::fail(ppipe::errc::parse_error,
                        "--devices needs one SPEED[:MEMORY] per rank, e.g. 1.0:24GiB,0.6:24GiB");
  }
  return out;
}

// The model the options give, with the devices settled; sets o.ranks to the number of devices.
model read_model(options& o) {
  model out;
  if (o.model_file) {
    out = read_model_file(*o.model_file);
  } else {
    out.source = ppipe::detail::concat("--layers ", *o.layers);
    out.layers.assign(static_cast<std::size_t>(*o.layers), ppipe::layer_cost{});
    out.groups.push_back({"layer", 0, *o.layers});
  }
  if (o.devices) out.devices = read_devices(*o.devices);
  if (!out.devices.empty()) {
    const int n = static_cast<int>(out.devices.size());
    if (o.ranks_given && o.ranks != n) {
      ppipe::detail::fail(ppipe::errc::invalid_argument, "-p ", o.ranks, " asks for ", o.ranks, " ranks but ",
                          n, " devices are given (one per rank); drop -p or give ", o.ranks, " devices");
    }
    o.ranks = n;
  }
  // A negative time or a zero speed is the model's fault, not one schedule's: let ppipe check the
  // numbers once, on one stage per rank, before any schedule is tried.
  const auto mode =
      o.schedule == "forward_only" ? ppipe::schedule_mode::inference : ppipe::schedule_mode::training;
  ppipe::partition_problem{out.layers, ppipe::placement::looped(o.ranks), mode,
                           std::vector<int>(static_cast<std::size_t>(o.ranks), 1), out.devices}
      .check();
  return out;
}

bool has_memory_limit(const model& m) {
  return std::any_of(m.devices.begin(), m.devices.end(),
                     [](const ppipe::device_spec& d) { return std::isfinite(d.memory); });
}

// Whether to print memory at all: a model with neither memory figures nor limits has none to show.
bool has_memory(const model& m) {
  return has_memory_limit(m) || std::any_of(m.layers.begin(), m.layers.end(), [](const ppipe::layer_cost& l) {
           return l.parameter_memory > 0 || l.activation_memory > 0;
         });
}

// ---------------------------------------------------------------------------------------------
// Splitting the model for each schedule, and printing the plans.

std::string fixed(double x, int digits = 2) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << x;
  return os.str();
}

// What layers [first, end) are, by name: "embed, block[0..12]".
std::string describe(const model& m, int first, int end) {
  std::ostringstream os;
  for (const layer_group& g : m.groups) {
    const int lo = std::max(first, g.first);
    const int hi = std::min(end, g.first + g.count);
    if (lo >= hi) continue;
    os << (os.tellp() > 0 ? ", " : "") << g.name;
    if (g.count > 1) {
      os << "[" << lo - g.first << (hi - lo > 1 ? ".." + std::to_string(hi - 1 - g.first) : "") << "]";
    }
  }
  return os.str();
}

struct split_plan {
  ppipe::schedule s;
  ppipe::partition_report report;  // the partitioner's split, with its name and whether optimal
  ppipe::plan_prediction predicted;
  std::optional<ppipe::plan_prediction> uniform;    // for comparison, when the split differs
  std::optional<ppipe::plan_prediction> unlimited;  // the faster split memory ruled out, if any
  // Recomputation chosen per stage where memory limits a training split: the plan above when no
  // split fits without it (recompute_needed), otherwise the alternative to compare with.
  std::optional<ppipe::recompute_plan> recompute;
  bool recompute_needed = false;
};

// Whether recomputation can be a choice: a training schedule, a partitioner that minds memory, and
// a device with a limit.
bool recompute_applies(const model& m, const std::string& partitioner, const ppipe::schedule& s) {
  return s.mode == ppipe::schedule_mode::training && partitioner == ppipe::partitioners::heterogeneous::name &&
         has_memory_limit(m);
}

split_plan plan_split(const options& o, const model& m, const std::string& partitioner,
                      const std::string& name, bool compare) {
  split_plan out{make(o, name, compare), {}, {}, {}, {}, {}, false};
  const auto problem = ppipe::partition_problem::for_schedule(out.s, m.layers, m.devices);
  const ppipe::prediction_options how{o.transfer, o.transfers, o.timeline.value_or(false)};
  const bool can_recompute = recompute_applies(m, partitioner, out.s);
  if (can_recompute) {
    try {
      out.recompute = ppipe::plan_recompute(ppipe::partitioners::heterogeneous{}, out.s, m.layers, m.devices, how);
    } catch (const ppipe::error&) {
      // Nothing fits even so, or it cannot be planned: the plan without it says why below.
    }
  }
  try {
    out.report = ppipe::plan_partition(partitioner, problem);
  } catch (const ppipe::error& e) {
    if (e.code() != ppipe::errc::out_of_memory || !out.recompute) throw;
    // No split fits as it is; with recomputation one does.
    out.recompute_needed = true;
    out.report = out.recompute->report;
    out.predicted = out.recompute->prediction;
    const ppipe::partition uniform = ppipe::partitioners::uniform{}.split(out.recompute->problem);
    if (!(uniform == out.report.split)) {
      out.uniform = ppipe::predict(out.s, out.recompute->problem, uniform, {o.transfer, o.transfers});
    }
    return out;
  }
  out.predicted = ppipe::predict(out.s, problem, out.report, how);
  const ppipe::partition uniform = ppipe::partitioners::uniform{}.split(problem);
  if (!(uniform == out.report.split)) {
    out.uniform = ppipe::predict(out.s, problem, uniform, {o.transfer, o.transfers});
  }
  // The split memory left no room for, if there is one, shows why the chosen one is what it is.
  if (partitioner == ppipe::partitioners::heterogeneous::name && has_memory_limit(m)) {
    std::vector<ppipe::device_spec> devices = m.devices;
    for (ppipe::device_spec& d : devices) d.memory = std::numeric_limits<double>::infinity();
    const auto free = ppipe::partition_problem::for_schedule(out.s, m.layers, devices);
    const ppipe::partition fast = ppipe::plan_partition(partitioner, free).split;
    if (!(fast == out.report.split)) {
      out.unlimited = ppipe::predict(out.s, problem, fast, {o.transfer, o.transfers});
    }
  }
  return out;
}

// "rank 0 (RTX 4090) needs 27.53 GiB of its 24.00" for the first rank over its memory, or "".
std::string first_over(const ppipe::plan_prediction& p) {
  for (std::size_t r = 0; r < p.rank_memory.size(); ++r) {
    if (p.rank_memory[r] > p.report.ranks[r].capacity) {
      return ppipe::detail::concat(p.report.ranks[r].name, " needs ", fixed(p.rank_memory[r]), " GiB of its ",
                                   fixed(p.report.ranks[r].capacity));
    }
  }
  return "";
}

// The stages that recompute, "stage 0 every 2, stage 3 full", or "none".
std::string policies(const std::vector<ppipe::recompute_policy>& p) {
  std::ostringstream os;
  for (std::size_t s = 0; s < p.size(); ++s) {
    if (p[s].recomputes()) os << (os.tellp() > 0 ? ", " : "") << "stage " << s << " " << ppipe::to_string(p[s]);
  }
  return os.tellp() > 0 ? os.str() : "none";
}

// "20.41, 17.00 GiB".
std::string peaks(const ppipe::plan_prediction& p) {
  std::ostringstream os;
  for (std::size_t r = 0; r < p.rank_memory.size(); ++r) os << (r > 0 ? ", " : "") << fixed(p.rank_memory[r]);
  return os.str() + " GiB";
}

// What recomputation does for this schedule: needed, faster, or of no help.
void print_recompute(const split_plan& plan) {
  if (!plan.recompute) return;
  const ppipe::recompute_plan& rc = *plan.recompute;
  if (plan.recompute_needed) {
    std::cout << "recompute: no split fits without it; with " << policies(rc.policies) << ", peak memory "
              << peaks(rc.prediction) << "\n";
    return;
  }
  if (!rc.recomputes()) {
    std::cout << "recompute: no stage's recomputation gives a faster split that fits\n";
    return;
  }
  const double ratio = plan.predicted.step_time() / rc.prediction.step_time();
  std::cout << "recompute: with " << policies(rc.policies) << ", split " << rc.report.sizes() << " takes "
            << rc.prediction.step_time() << " (" << fixed(ratio) << "x this split's speed), peak memory "
            << peaks(rc.prediction) << " against " << peaks(plan.predicted) << "\n";
}

void print_split(const options& o, const model& m, const split_plan& plan) {
  const ppipe::plan_prediction& pred = plan.predicted;
  const ppipe::partition_report& report = plan.report;
  const bool memory = has_memory(m);
  print_header(o, plan.s);
  std::cout << report.summary() << "\n";
  constexpr std::size_t listed = 12;  // a long pipeline's other stages are only counted
  for (const ppipe::stage_report& st : report.stages) {
    if (static_cast<std::size_t>(st.stage) == listed) {
      std::cout << "... and " << report.stages.size() - listed << " more stages\n";
      break;
    }
    std::cout << "stage " << st.stage << " on rank " << st.rank << ": " << st.layers()
              << (st.layers() == 1 ? " layer (" : " layers (")
              << describe(m, st.first_layer, st.end_layer) << "), " << st.in_flight
              << (st.in_flight == 1 ? " microbatch" : " microbatches") << " in flight";
    if (st.recompute.recomputes()) {
      std::cout << ", recompute " << ppipe::to_string(st.recompute) << " (at most " << st.held << " held in full, "
                << st.stashed << " stashed)";
    }
    std::cout << "\n";
  }
  if (o.timeline.value_or(false)) print_timeline(o, plan.s, pred.sim);

  std::size_t name_width = 8;
  for (const ppipe::device_spec& d : m.devices) name_width = std::max(name_width, d.name.size() + 2);
  std::cout << std::left << "rank  " << std::setw(static_cast<int>(name_width)) << "device"
            << "speed  layers  time/mb" << (memory ? "   peak memory (GiB)" : "") << "\n";
  for (const ppipe::rank_report& r : report.ranks) {
    const ppipe::device_spec d =
        m.devices.empty() ? ppipe::device_spec{} : m.devices[static_cast<std::size_t>(r.rank)];
    int layers = 0;
    for (const ppipe::stage_report& st : report.stages) layers += st.rank == r.rank ? st.layers() : 0;
    std::cout << std::setw(6) << r.rank << std::setw(static_cast<int>(name_width))
              << (d.name.empty() ? "-" : d.name) << std::setw(7) << d.speed << std::setw(8) << layers
              << std::setw(memory ? 10 : 0) << r.time;
    if (memory) {
      const double peak = pred.rank_memory[static_cast<std::size_t>(r.rank)];
      std::cout << fixed(peak) << (std::isfinite(r.capacity) ? " of " + fixed(r.capacity) : " (no limit)")
                << (peak <= r.capacity ? "  fits" : "  OVER");
    }
    std::cout << "\n";
  }
  std::cout << std::right << "predicted step time " << pred.step_time() << "; bubble "
            << percent(pred.bubble()) << " of the step; speedup over one reference device "
            << fixed(pred.speedup()) << "x\n";
  if (plan.unlimited && !first_over(*plan.unlimited).empty()) {
    std::cout << "memory decides this split: " << plan.unlimited->report.sizes() << " would take "
              << plan.unlimited->step_time() << ", but " << first_over(*plan.unlimited) << "\n";
  }
  if (plan.uniform) {
    const ppipe::plan_prediction& u = *plan.uniform;
    const double ratio = u.step_time() / pred.step_time();
    std::cout << "uniform split " << u.report.sizes() << " would take " << u.step_time() << ": "
              << report.partitioner << " is " << fixed(ratio >= 1 ? ratio : 1 / ratio)
              << (ratio >= 1 ? "x faster" : "x slower")
              << (u.fits() ? "" : ", and uniform does not fit: " + first_over(u)) << "\n";
  } else if (report.partitioner != ppipe::partitioners::uniform::name) {
    std::cout << "(the uniform split is the same)\n";
  }
  print_recompute(plan);
  if (!pred.fits()) std::cout << "warning: this split does not fit: " << first_over(pred) << "\n";
  // When the partitioner proved that no split has a faster slowest stage (within memory), moving
  // layers is no cure, and advise() is told so.
  ppipe::advice_options advice;
  advice.split_is_optimal = report.optimal;
  for (const std::string& warning : ppipe::advise(plan.s, pred.sim, advice)) {
    std::cout << "warning: " << warning << "\n";
  }
  std::cout << "\n";
}

void print_model(const options& o, const model& m, const std::string& partitioner) {
  double cost = 0;
  double params = 0;
  double acts = 0;
  for (const ppipe::layer_cost& l : m.layers) {
    cost += l.forward + l.backward;
    params += l.parameter_memory;
    acts += l.activation_memory;
  }
  std::cout << "model " << m.source << ": " << m.layers.size() << " layers (";
  for (const layer_group& g : m.groups) {
    std::cout << (&g == &m.groups.front() ? "" : ", ") << g.name
              << (g.count > 1 ? " x" + std::to_string(g.count) : "");
  }
  std::cout << "); forward + backward " << cost << " per microbatch on the reference device\n";
  if (has_memory(m)) {
    std::cout << "memory in GiB: parameters " << fixed(params) << ", activations " << fixed(acts)
              << " per microbatch\n";
  }
  std::cout << "ranks: ";
  if (m.devices.empty()) std::cout << o.ranks << " alike devices without a memory limit";
  for (std::size_t r = 0; r < m.devices.size(); ++r) {
    const ppipe::device_spec& d = m.devices[r];
    std::cout << (r > 0 ? ", " : "") << r << (d.name.empty() ? "" : " " + d.name) << " (speed " << d.speed
              << (std::isfinite(d.memory) ? ", " + fixed(d.memory) + " GiB" : "") << ")";
  }
  std::cout << "; " << partitioner << " partitioner\n\n";
}

int plan_model(options o) {
  const model m = read_model(o);
  const bool mixed = std::any_of(m.devices.begin(), m.devices.end(), [](const ppipe::device_spec& d) {
    return d.speed != 1.0 || std::isfinite(d.memory);
  });
  const std::string partitioner = o.partitioner.value_or(mixed ? "heterogeneous" : "balanced");
  if (std::find(std::begin(ppipe::partitioner_names), std::end(ppipe::partitioner_names), partitioner) ==
      std::end(ppipe::partitioner_names)) {
    ppipe::detail::fail(ppipe::errc::parse_error,
                        "--partitioner takes uniform, balanced or heterogeneous, not \"", partitioner, "\"");
  }
  print_model(o, m, partitioner);
  if (o.schedule != "all") {
    print_split(o, m, plan_split(o, m, partitioner, o.schedule, false));
    return 0;
  }
  struct outcome {
    std::string name;
    std::optional<split_plan> plan;
    std::string trouble;  // why there is no plan
  };
  std::vector<outcome> rows;
  for (const char* name : {"gpipe", "1f1b", "interleaved_1f1b", "zb_h1", "zb_v", "dualpipe_v"}) {
    try {
      rows.push_back({name, plan_split(o, m, partitioner, name, true), ""});
      print_split(o, m, *rows.back().plan);
    } catch (const ppipe::error& e) {
      // The heterogeneous partitioner says why no split fits; the other schedules may still fit.
      const bool memory = e.code() == ppipe::errc::out_of_memory;
      std::cout << "== " << name
                << (memory ? ": does not fit: " : ": not possible with these numbers: ")
                << examples::printable(e.message()) << "\n\n";
      rows.push_back({name, std::nullopt, memory ? "does not fit in memory" : "not possible"});
    }
  }
  std::size_t split_width = 7;
  for (const auto& [name, plan, trouble] : rows) {
    if (plan) split_width = std::max(split_width, plan->report.sizes().size() + 2);
  }
  const bool memory = has_memory(m);
  const bool limited = has_memory_limit(m);  // recomputation is a choice: its column
  std::cout << std::left << std::setw(19) << "schedule" << std::setw(static_cast<int>(split_width)) << "split"
            << "step time  bubble" << (memory ? "   peak memory  fits" : "")
            << (limited ? "  with recompute" : "") << "\n";
  for (const auto& [name, plan, trouble] : rows) {
    std::cout << std::setw(19) << name;
    if (!plan) {
      std::cout << trouble << "\n";
      continue;
    }
    const ppipe::plan_prediction& pred = plan->predicted;
    std::cout << std::setw(static_cast<int>(split_width)) << plan->report.sizes() << std::setw(11)
              << pred.step_time() << std::setw(memory ? 9 : 0) << percent(pred.bubble());
    if (memory) {
      const double peak = *std::max_element(pred.rank_memory.begin(), pred.rank_memory.end());
      std::cout << std::setw(13) << fixed(peak) << std::setw(limited ? 6 : 0) << (pred.fits() ? "yes" : "no");
    }
    if (limited) {
      const auto& rc = plan->recompute;
      if (plan->recompute_needed) {
        std::cout << "needed (" << policies(rc->policies) << ")";
      } else if (rc && rc->recomputes()) {
        std::cout << rc->prediction.step_time() << " (" << rc->report.sizes() << ", " << policies(rc->policies) << ")";
      } else {
        std::cout << "no gain";
      }
    }
    std::cout << "\n";
  }
  std::cout << std::right;
  if (std::none_of(rows.begin(), rows.end(), [](const outcome& r) { return r.plan.has_value(); })) {
    const bool none_fits = std::all_of(rows.begin(), rows.end(), [](const outcome& r) {
      return r.trouble == "does not fit in memory";
    });
    ppipe::detail::fail(none_fits ? ppipe::errc::out_of_memory : ppipe::errc::invalid_argument,
                        "no schedule could be planned",
                        none_fits ? ": no split fits in memory" : " with these numbers",
                        "; each one says why above");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Plans a pipeline before running it: generates each schedule, proves it valid and "
      "deadlock-free, simulates it and prints its timeline, bubble and memory; with a model, also "
      "splits it over the ranks.",
      "ppipe-plan"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  return examples::cli::run(app, [&] {
    const options o = parse(app, argc, argv);
    check_svg(o);
    if (o.schedule_file) {
      plan(o, "file", false);
      return 0;
    }
    if (o.model_file || o.layers) return plan_model(o);
    if (o.schedule != "all") {
      plan(o, o.schedule, false);
      return 0;
    }
    std::vector<row> rows;
    for (const char* name : {"gpipe", "1f1b", "interleaved_1f1b", "zb_h1", "zb_v", "dualpipe_v"}) {
      try {
        rows.push_back(plan(o, name, true));
      } catch (const ppipe::error& e) {
        std::cout << "== " << name
                  << ": not possible with these numbers: " << examples::printable(e.message())
                  << "\n\n";
      }
    }
    if (rows.empty()) {
      ppipe::detail::fail(ppipe::errc::invalid_argument,
                          "no schedule could be planned with these numbers; each one says why above");
    }
    std::cout << "schedule           step time  bubble   peak activations  speedup  transfers\n"
                 "                                       (rank-share mbs)\n";
    for (const row& r : rows) {
      std::cout << std::left << std::setw(19) << r.name << std::setw(11) << r.makespan << std::setw(9)
                << percent(r.bubble) << std::setw(18) << r.peak << std::setw(9) << r.speedup << r.transfers
                << std::right << "\n";
    }
    return 0;
  });
}
