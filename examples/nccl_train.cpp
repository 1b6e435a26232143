// ppipe-nccl-train: trains residual MLP blocks of the CUDA kit through a pipeline of one rank per
// MPI process, each on its own GPU, its payloads over NCCL (ppipe::nccl::backend). Rank 0 prints
// the cost of the first transfer (NCCL connecting the neighbours), the loss per step and the
// throughput. --check has rank 0 train the same layers on one GPU and compare the losses bit for
// bit. Launch it as an MPI job (docs/nccl.md):
//
//   mpirun -np 4 ppipe-nccl-train [--microbatches 16] [--schedule 1f1b|gpipe|interleaved|zb_h1|zb_v|dualpipe_v]
//                                 [--schedule-file mine.csv] [--virtual 2] [--steps 20] [--batch 512]
//                                 [--width 512] [--blocks 8] [--lr 0.01] [--timeout-ms 60000] [--check]
//
// This half reads the command line (g++, CLI11); nccl_train/run.cu trains (nvcc). Where a process
// has no GPU it says so and exits with status 3.

#include <mpi.h>

#include <string>
#include <utility>
#include <vector>

#include <ppipe/backend/mpi/session.hpp>
#include <ppipe/schedule/generate.hpp>

#include "nccl_train/run.hpp"
#include "support/cli.hpp"
#include "support/schedule_choice.hpp"

namespace {

struct command_line {
  nccl_train::settings s;
  examples::schedule_choice schedule;
  std::vector<const CLI::Option*> numbers;  // -m, -v: replaced by a schedule file's
};

void add_options(CLI::App& app, command_line& c) {
  namespace cli = examples::cli;
  nccl_train::settings& s = c.s;
  CLI::Option* microbatches = cli::add_microbatches(app, s.microbatches);
  CLI::Option* virtual_stages =
      cli::add_virtual(app, s.virtual_stages, "stages per rank (interleaved_1f1b; zb_v and dualpipe_v take 2)");
  examples::add_schedule_choice(app, c.schedule, virtual_stages);
  c.numbers = {microbatches, virtual_stages};
  cli::add_number(app, "--steps", s.steps, cli::range<int>{1, cli::most}, "training steps");
  cli::add_number(app, "--batch", s.batch, cli::range<std::int64_t>{1, 1 << 24}, "rows per step");
  cli::add_number(app, "--width", s.width, cli::range<int>{1, 1 << 16}, "the blocks' width (hidden: 4 times it)");
  cli::add_number(app, "--blocks", s.blocks, cli::range<int>{1, 4096}, "blocks");
  cli::add_number(app, "--lr", s.lr, cli::range<float>{0.0f}, "learning rate");
  cli::add_timeout(app, s.timeout_ms);
  app.add_flag("--check", s.check, "rank 0 also trains on one GPU and compares the losses, bit for bit");
}

// The schedule to run, of `ranks` ranks: a file's (whose numbers replace -m and -v) or a built-in.
ppipe::schedule schedule_of(command_line& c, int ranks) {
  nccl_train::settings& s = c.s;
  if (c.schedule.file.empty()) {
    s.virtual_stages = examples::virtual_stages_for(c.schedule, s.virtual_stages);
    return ppipe::make_schedule(c.schedule.name, {ranks, s.microbatches, s.virtual_stages});
  }
  std::vector<std::string> given;
  for (const CLI::Option* o : c.numbers) {
    if (o->count() > 0) given.push_back(o->get_name());
  }
  examples::refuse_numbers_with_file(c.schedule, given);
  ppipe::schedule plan = examples::load_schedule_file(c.schedule);
  s.microbatches = plan.microbatches;
  s.virtual_stages = examples::stages_per_rank(plan);
  return plan;
}

}  // namespace

int main(int argc, char** argv) {
  const ppipe::mpi::session mpi(&argc, &argv);
  CLI::App app{"Trains residual MLP blocks through a pipeline of one rank per MPI process and GPU, over NCCL.",
               "ppipe-nccl-train"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  command_line c;
  return examples::cli::run(app, [&] {
    add_options(app, c);
    app.parse(argc, argv);
    ppipe::schedule plan = schedule_of(c, mpi.size());
    if (c.s.blocks < plan.num_stages()) {
      ppipe::detail::fail(ppipe::errc::invalid_argument, "--blocks ", c.s.blocks, " gives fewer layers than the ",
                          plan.num_stages(), " stages of ", plan.num_ranks(), " processes and -v ",
                          c.s.virtual_stages, "; give more --blocks, or fewer processes");
    }
    return nccl_train::run(c.s, std::move(plan));
  });
}
