// ppipe-plan: plan a pipeline before running it. Generates a schedule, proves it valid and
// deadlock-free, simulates it under the costs you give, and prints the timeline, the bubble, the
// activations each stage holds at its peak, and warnings when the plan is poor.
//
//   ppipe-plan                                 all schedules, p=4, m=8, v=2
//   ppipe-plan --schedule 1f1b -p 8 -m 4       one schedule, too few microbatches
//   ppipe-plan -p 4 -m 16 --forward 1,1,2,1    per-stage costs: stage 2 is the slow one
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <ppipe/ppipe.hpp>

namespace {

struct options {
  std::string schedule = "all";
  int ranks = 4;
  int microbatches = 8;
  std::optional<int> virtual_stages;
  std::vector<double> forward{1.0};
  std::vector<double> backward{2.0};
  double transfer = 0.0;
  ppipe::transfer_model transfers = ppipe::transfer_model::rendezvous;
  std::optional<double> activation_mib;
  int width = 100;
  bool timeline = true;
};

constexpr const char* usage = R"(usage: ppipe-plan [options]
  --schedule NAME     gpipe, 1f1b, interleaved_1f1b, forward_only, or all (default: all)
  -p, --ranks N       pipeline ranks (default 4)
  -m, --microbatches N  microbatches per step (default 8)
  -v, --virtual N     stages per rank for interleaved_1f1b and forward_only (default 2 with
                      --schedule all or interleaved_1f1b, else 1)
  --forward T[,T..]   forward time of one rank's share of the model, split evenly over its
                      stages; or a list with the time of every stage (default 1)
  --backward T[,T..]  the same for the backward (default 2)
  --transfer T        time for one activation or gradient message to arrive (default 0)
  --transfers MODEL   rendezvous (sends wait for their receive, as NCCL's do; default) or
                      buffered (sends never wait, as MPI_Isend's and the host backend's)
  --activation-mib X  MiB of activations one rank's share of the model keeps per microbatch
                      (prints the peak memory of each rank)
  --width N           characters per timeline line (default 100)
  --no-timeline       print the figures only
)";

// The whole of `text` as a number of type T, or a parse_error naming the flag.
template <class T>
T to_number(std::string_view flag, const std::string& text) {
  std::size_t used = 0;
  T value{};
  try {
    if constexpr (std::is_same_v<T, int>) {
      value = std::stoi(text, &used);
    } else {
      value = std::stod(text, &used);
    }
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty()) {
    ppipe::detail::fail(ppipe::errc::parse_error, flag, std::is_same_v<T, int> ? " needs a whole number" : " needs a number",
                        ", got \"", text, "\"");
  }
  return value;
}

std::vector<double> to_list(std::string_view flag, const std::string& text) {
  std::vector<double> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(to_number<double>(flag, item));
  if (out.empty()) ppipe::detail::fail(ppipe::errc::parse_error, flag, " needs at least one number");
  return out;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) ppipe::detail::fail(ppipe::errc::parse_error, flag, " needs a value");
      return argv[++i];
    };
    if (flag == "-h" || flag == "--help") {
      std::cout << usage;
      std::exit(0);
    } else if (flag == "--schedule") {
      o.schedule = value();
    } else if (flag == "-p" || flag == "--ranks") {
      o.ranks = to_number<int>(flag, value());
    } else if (flag == "-m" || flag == "--microbatches") {
      o.microbatches = to_number<int>(flag, value());
    } else if (flag == "-v" || flag == "--virtual") {
      o.virtual_stages = to_number<int>(flag, value());
    } else if (flag == "--forward") {
      o.forward = to_list(flag, value());
    } else if (flag == "--backward") {
      o.backward = to_list(flag, value());
    } else if (flag == "--transfer") {
      o.transfer = to_number<double>(flag, value());
    } else if (flag == "--transfers") {
      const std::string model = value();
      if (model == "rendezvous") {
        o.transfers = ppipe::transfer_model::rendezvous;
      } else if (model == "buffered") {
        o.transfers = ppipe::transfer_model::buffered;
      } else {
        ppipe::detail::fail(ppipe::errc::parse_error, "--transfers takes rendezvous or buffered, not \"", model, "\"");
      }
    } else if (flag == "--activation-mib") {
      o.activation_mib = to_number<double>(flag, value());
    } else if (flag == "--width") {
      o.width = to_number<int>(flag, value());
    } else if (flag == "--no-timeline") {
      o.timeline = false;
    } else {
      ppipe::detail::fail(ppipe::errc::parse_error, "unknown option \"", flag, "\"; see --help");
    }
  }
  return o;
}

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

struct row {
  std::string name;
  double makespan;
  double bubble;
  double peak;  // most activations any rank holds, in microbatches of a rank's share of the model
  double speedup;
  std::size_t transfers;
};

row plan(const options& o, const std::string& name, bool compare) {
  int v = o.virtual_stages.value_or(name == "interleaved_1f1b" ? 2 : 1);
  if (compare && (name == "gpipe" || name == "1f1b")) v = 1;
  const ppipe::schedule s = ppipe::make_schedule(name, {o.ranks, o.microbatches, v});
  ppipe::validate(s, o.transfers);
  const ppipe::simulation sim =
      ppipe::simulate(s, costs_for(o, s.num_stages(), s.num_ranks()), {o.timeline, o.transfers});
  std::size_t transfers = 0;
  for (const auto& list : s.ranks) {
    for (const ppipe::action& a : list) transfers += ppipe::is_transfer(a.kind) ? 1 : 0;
  }
  const int p = s.num_ranks();

  std::cout << "== " << s.name << ": p=" << p << " ranks, m=" << s.microbatches << " microbatches, "
            << s.num_stages() << " stages (" << v << " per rank) ==\n"
            << "valid and deadlock-free (" << ppipe::to_string(o.transfers) << " transfers): " << s.size()
            << " actions, " << transfers << " of them transfers\n";
  if (o.timeline) {
    try {
      std::cout << ppipe::render_timeline(s, sim, {o.width, 0.0, 1 << 12});
    } catch (const ppipe::error& e) {
      std::cout << "(timeline not drawn: " << e.message() << ")\n";
    }
  }
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
  std::cout << "step time " << sim.makespan << "; bubble " << percent(sim.bubble_fraction())
            << " of the step (textbook (p-1)/(v*m+p-1) = "
            << percent(ppipe::ideal_bubble_fraction(p, s.microbatches, v)) << "), "
            << percent(sim.bubble_overhead()) << " relative to compute\n"
            << "speedup over one device running every stage: " << std::setprecision(3) << sim.speedup()
            << "x\n";
  for (const std::string& warning : ppipe::advise(s, sim)) std::cout << "warning: " << warning << "\n";
  std::cout << "\n";
  int peak = 0;
  for (int x : sim.peak_rank_activations) peak = std::max(peak, x);
  return {s.name, sim.makespan, sim.bubble_fraction(), peak / static_cast<double>(v), sim.speedup(), transfers};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const options o = parse(argc, argv);
    if (o.schedule != "all") {
      plan(o, o.schedule, false);
      return 0;
    }
    std::vector<row> rows;
    for (const char* name : {"gpipe", "1f1b", "interleaved_1f1b"}) {
      try {
        rows.push_back(plan(o, name, true));
      } catch (const ppipe::error& e) {
        std::cout << "== " << name << ": not possible with these numbers: " << e.message() << "\n\n";
      }
    }
    std::cout << "schedule           step time  bubble   peak activations  speedup  transfers\n"
                 "                                       (rank-share mbs)\n";
    for (const row& r : rows) {
      std::cout << std::left << std::setw(19) << r.name << std::setw(11) << r.makespan << std::setw(9)
                << percent(r.bubble) << std::setw(18) << r.peak << std::setw(9) << r.speedup << r.transfers
                << std::right << "\n";
    }
    return 0;
  } catch (const ppipe::error& e) {
    std::cerr << "ppipe-plan: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {  // e.g. std::bad_alloc for a plan too large for this machine
    std::cerr << "ppipe-plan: " << e.what() << "\n";
    return 1;
  }
}
