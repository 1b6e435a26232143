// ppipe-gallery: a picture of every built-in schedule, drawn the way the GPipe, Megatron-LM and
// zero-bubble papers draw them (one row per rank, time to the right, a box per forward and
// backward). Every name in ppipe::schedule_names is drawn, so a schedule added there appears here
// without a change: p=4 ranks, m=8 microbatches, v=2 stages per rank where the schedule takes
// several (else v=1), one rank's share of the model costing F=1 and B=2 (I and W 1 each), all on
// one time scale, so that a shorter step is a shorter picture; and 1F1B with recomputation.
//
//   ppipe-gallery DIR        writes DIR/<schedule>.svg (scripts/gallery.sh: into docs/gallery)
#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <ppipe/ppipe.hpp>
#include <ppipe/schedule/svg.hpp>

#include "support/cli.hpp"

namespace {

constexpr int ranks = 4;
constexpr int microbatches = 8;

// A file name for a schedule name: letters, digits, '-' and '_' kept, anything else '_'.
std::string file_name(std::string_view name) {
  std::string out;
  for (const char c : name) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '_';
    out += keep ? c : '_';
  }
  return out.empty() ? "schedule" : out;
}

std::string percent(double fraction) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << fraction * 100 << "%";
  return os.str();
}

// The schedule `name` with two stages per rank, or with one where its generator takes only one;
// nothing (after saying why) where it takes neither.
std::optional<ppipe::schedule> generate(std::string_view name) {
  for (const int v : {2, 1}) {
    try {
      return ppipe::make_schedule(name, {ranks, microbatches, v});
    } catch (const ppipe::error& e) {
      std::cout << "skipped " << name << " with v=" << v << ": " << e.what() << "\n";
    }
  }
  return std::nullopt;
}

int run(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    ppipe::detail::fail(ppipe::errc::invalid_argument, "cannot create the directory \"",
                        examples::shown(dir.string(), 4096), "\": ", ec.message(),
                        "; give a directory this process may write");
  }
  struct plan {
    std::string_view name;
    ppipe::schedule s;
    ppipe::simulation sim;
  };
  std::vector<plan> plans;
  double longest = 0;
  for (const std::string_view name : ppipe::schedule_names) {
    std::optional<ppipe::schedule> s = generate(name);
    if (!s) continue;
    // One rank's share of the model costs F=1 and B=2 whatever its number of stages (as ppipe-plan
    // splits it), so that every picture shows the same model.
    const double v = static_cast<double>(s->num_stages()) / s->num_ranks();
    ppipe::simulation sim = ppipe::simulate(*s, ppipe::cost_model::uniform(1.0 / v, 2.0 / v));
    longest = std::max(longest, sim.makespan);
    plans.push_back({name, std::move(*s), std::move(sim)});
  }
  // And 1F1B with activation recomputation on every stage: an R (a forward again, here as long as
  // the forward) before each backward.
  {
    ppipe::schedule s = ppipe::make_schedule("1f1b", {ranks, microbatches, 1});
    s = ppipe::with_recompute(std::move(s), std::vector<bool>(static_cast<std::size_t>(ranks), true));
    s.name = "1f1b with recompute";
    ppipe::simulation sim = ppipe::simulate(s, ppipe::cost_model::uniform(1.0, 2.0));
    longest = std::max(longest, sim.makespan);
    plans.push_back({"1f1b_recompute", std::move(s), std::move(sim)});
  }
  // One time scale for all: a shorter step is a shorter picture.
  ppipe::svg_options options;
  options.time_span = longest;
  for (const plan& p : plans) {
    const std::string path = (dir / (file_name(p.name) + ".svg")).string();
    ppipe::save_svg(path, ppipe::render_svg(p.s, p.sim, options));
    std::cout << "wrote " << path << ": " << p.s.name << ", p=" << p.s.num_ranks()
              << ", m=" << p.s.microbatches << ", v=" << p.s.num_stages() / p.s.num_ranks()
              << ", step " << p.sim.makespan << ", bubble " << percent(p.sim.bubble_fraction())
              << "\n";
  }
  const auto drawn = plans.size();
  std::cout << drawn << " pictures in " << dir.string() << "\n";
  return drawn > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Draws every built-in schedule as an SVG picture (p=4, m=8, v=2 where a schedule "
               "takes several stages per rank).",
               "ppipe-gallery"};
  std::string dir;
  return examples::cli::run(app, [&] {
    app.add_option("DIR", dir, "the folder for DIR/<schedule>.svg (created if missing)")
        ->required()
        ->type_name("");
    app.parse(argc, argv);
    return run(dir);
  });
}
