// ppipe-cuda-train: trains residual MLP blocks of the CUDA kit (layer norm, linear, GELU, linear,
// and the input added back) through a pipeline whose ranks are spread over the visible GPUs (all
// on GPU 0 where there is one), printing the loss per step, the throughput in samples/s and model
// TFLOP/s, the measured bubble next to the one the simulator predicts from the measured kernel
// times, and each GPU pool's peak; writes the last
// step's trace (a track for each rank's compute and its transfers). --check trains the same
// layers on one rank and compares losses and weights bit for bit.
//
//   ppipe-cuda-train [--ranks 4] [--microbatches 16] [--schedule 1f1b|gpipe|interleaved|zb_h1|zb_v|dualpipe_v]
//                    [--schedule-file mine.csv] [--virtual 2] [--steps 20] [--batch 512]
//                    [--width 512] [--blocks 8] [--bf16] [--lr 0.01] [--trace ppipe-cuda-trace.json]
//                    [--timeout-ms 60000] [--check] [--graphs] [--no-timeline]
//
// This half reads the command line (g++, CLI11); cuda_train/run.cu trains (nvcc). Without a GPU
// it says so and exits with status 3.

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ppipe/schedule/generate.hpp>

#include "cuda_train/run.hpp"
#include "support/cli.hpp"
#include "support/schedule_choice.hpp"

namespace {

struct command_line {
  cuda_train::settings s;
  examples::schedule_choice schedule;
  std::vector<const CLI::Option*> numbers;  // -p, -m, -v: replaced by a schedule file's
};

void add_options(CLI::App& app, command_line& c) {
  namespace cli = examples::cli;
  cuda_train::settings& s = c.s;
  CLI::Option* ranks = cli::add_ranks(app, s.ranks, "pipeline ranks, a thread each, spread over the visible GPUs");
  CLI::Option* microbatches = cli::add_microbatches(app, s.microbatches);
  CLI::Option* virtual_stages =
      cli::add_virtual(app, s.virtual_stages, "stages per rank (interleaved_1f1b; zb_v and dualpipe_v take 2)");
  examples::add_schedule_choice(app, c.schedule, virtual_stages);
  c.numbers = {ranks, microbatches, virtual_stages};
  cli::add_number(app, "--steps", s.steps, cli::range<int>{1, cli::most}, "training steps");
  cli::add_number(app, "--batch", s.batch, cli::range<std::int64_t>{1, 1 << 24}, "rows per step");
  cli::add_number(app, "--width", s.width, cli::range<int>{1, 1 << 16}, "the blocks' width (hidden: 4 times it)");
  cli::add_number(app, "--blocks", s.blocks, cli::range<int>{1, 4096}, "blocks");
  app.add_flag("--bf16", s.bf16, "bf16 blocks (linear, GELU, linear; fp32 accumulation and master weights)");
  cli::add_number(app, "--lr", s.lr, cli::range<float>{0.0f}, "learning rate");
  app.add_option("--trace", s.trace, "the last step's Chrome trace; \"\" for none")->capture_default_str();
  cli::add_timeout(app, s.timeout_ms);
  app.add_flag("--check", s.check, "also train on one rank and compare losses and weights, bit for bit");
  app.add_flag("--graphs", s.graphs,
               "capture the second step into one CUDA graph and launch it for the steps after (every rank on one "
               "GPU; those steps keep no trace)");
  app.add_flag_callback("--no-timeline", [&s] { s.timeline = false; }, "leave out the text timeline");
}

// The schedule to run: a file's (whose numbers replace -p, -m and -v) or a built-in one.
ppipe::schedule schedule_of(command_line& c) {
  cuda_train::settings& s = c.s;
  if (c.schedule.file.empty()) {
    s.virtual_stages = examples::virtual_stages_for(c.schedule, s.virtual_stages);
    return ppipe::make_schedule(c.schedule.name, {s.ranks, s.microbatches, s.virtual_stages});
  }
  std::vector<std::string> given;
  for (const CLI::Option* o : c.numbers) {
    if (o->count() > 0) given.push_back(o->get_name());
  }
  examples::refuse_numbers_with_file(c.schedule, given);
  ppipe::schedule plan = examples::load_schedule_file(c.schedule);
  s.ranks = plan.num_ranks();
  s.microbatches = plan.microbatches;
  s.virtual_stages = examples::stages_per_rank(plan);
  return plan;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains residual MLP blocks through a pipeline of ranks spread over the visible GPUs (the CUDA backend).",
               "ppipe-cuda-train"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  command_line c;
  return examples::cli::run(app, [&] {
    add_options(app, c);
    app.parse(argc, argv);
    ppipe::schedule plan = schedule_of(c);
    if (c.s.blocks * (c.s.bf16 ? 3 : 1) < c.s.ranks * c.s.virtual_stages) {
      ppipe::detail::fail(ppipe::errc::invalid_argument, "--blocks ", c.s.blocks, " gives fewer layers than the ",
                          c.s.ranks * c.s.virtual_stages, " stages of -p ", c.s.ranks, " -v ", c.s.virtual_stages,
                          "; give more --blocks or fewer ranks");
    }
    if (!c.s.trace.empty()) {
      examples::cli::check_writable(c.s.trace, "--trace", "give a file in a folder that exists, or --trace \"\" for none");
    }
    return cuda_train::run(c.s, std::move(plan));
  });
}
