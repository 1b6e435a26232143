// ppipe-mpi-train: trains the demo's MLP through a pipeline whose ranks are MPI processes, one
// stage (or v stages) per process, and writes each rank's trace of the last step.
//
//   mpirun -np 4 ppipe-mpi-train [--schedule 1f1b|gpipe|interleaved|zb_h1|zb_v|dualpipe_v]
//          [--schedule-file mine.csv] [--microbatches 16] [--virtual 2] [--replicas 2] [--steps 20]
//          [--batch 512] [--width 256] [--hidden 4] [--lr 0.1] [--trace ppipe-trace | --no-trace]
//          [--timeout-ms 60000] [--check] [--exact-loss]
//          (--help says more)
//
// Every process runs this same program (SPMD): it describes the same model (its linears
// deferred) and data, and ppipe::mpi::pipeline materializes only its own stages' layers, so each
// process holds about 1/p of the weights. With --replicas R the job runs R copies of the
// pipeline on np/R processes each, every copy on its share of the batch, and averages the
// gradients across copies after each step. Every schedule, built-in or from a file, is handed to
// one pipeline type as a value (pipeline_options::schedule). --check also trains the model on this process with the
// host backend (threads) and says whether both give the same bits.
//
// A failure on one process must not leave the others waiting for it: what each process checks or
// writes on its own ends in an agreement of all of them (on_every_process), and anything else that
// one process alone throws ends the job with MPI_Abort.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ppipe/layers/layers.hpp>
#include <ppipe/mpi.hpp>
#include <ppipe/runtime/chrome_trace.hpp>

#include "support/cli.hpp"
#include "support/mlp_checks.hpp"
#include "support/regression.hpp"
#include "support/schedule_choice.hpp"

namespace {

constexpr int inputs = 16;  // features per row

struct settings {
  examples::schedule_choice schedule;
  int microbatches = 16;
  int virtual_stages = 1;
  int replicas = 1;
  int steps = 20;
  std::int64_t batch = 512;
  int width = 256;
  int hidden = 4;
  float lr = 0.1f;
  std::string trace = "ppipe-trace";
  long timeout_ms = 60000;
  bool check = false;
  bool exact_loss = false;  // print the last loss with every digit, to compare runs bit for bit
  std::vector<const CLI::Option*> numbers;  // -m and -v, which --schedule-file replaces
};

void add_options(CLI::App& app, settings& s) {
  namespace cli = examples::cli;
  CLI::Option* microbatches = cli::add_microbatches(app, s.microbatches);
  CLI::Option* virtual_stages =
      cli::add_virtual(app, s.virtual_stages, "stages per rank (interleaved_1f1b; zb_v and dualpipe_v take 2)");
  examples::add_schedule_choice(app, s.schedule, virtual_stages);
  s.numbers = {microbatches, virtual_stages};
  cli::add_number(app, "--replicas", s.replicas, cli::range<int>{1, cli::most},
                  "data-parallel copies of the pipeline, each on processes/replicas processes");
  cli::add_number(app, "--steps", s.steps, cli::range<int>{1, cli::most}, "training steps");
  cli::add_number(app, "--batch", s.batch, cli::range<std::int64_t>{1},
                  "rows per step, shared by the replicas");
  cli::add_number(app, "--width", s.width, cli::range<int>{1, cli::most},
                  "width of the hidden layers");
  cli::add_number(app, "--hidden", s.hidden, cli::range<int>{0, (cli::most - 1) / 2},
                  "hidden linear layers, each followed by a ReLU");
  cli::add_number(app, "--lr", s.lr, cli::range<float>{0.0f}, "learning rate");
  app.add_option("--trace", s.trace, "each rank's Chrome trace goes to PREFIX.rank<r>.json")
      ->capture_default_str();
  app.add_flag_callback(
      "--no-trace", [&s] { s.trace.clear(); }, "write no traces (wins over --trace)");
  cli::add_timeout(app, s.timeout_ms);
  app.add_flag("--check", s.check,
               "also train on this process with the host backend and compare the bits");
  app.add_flag("--exact-loss", s.exact_loss,
               "also print the last step's loss with 17 significant digits, to compare runs bit for bit");
}

// What the command line says of the schedule, alike on every process: a file replaces -m and -v
// (and must have processes/replicas ranks, which the pipeline checks); zb_v takes v=2.
void check_schedule_options(settings& s) {
  if (s.schedule.file.empty()) {
    s.virtual_stages = examples::virtual_stages_for(s.schedule, s.virtual_stages);
    return;
  }
  std::vector<std::string> given;
  for (const CLI::Option* o : s.numbers) {
    if (o->count() > 0) given.push_back(o->get_name());
  }
  examples::refuse_numbers_with_file(s.schedule, given);
}

// Each process reads the schedule file itself; its numbers then replace -m and -v.
std::optional<ppipe::schedule> read_schedule_file(settings& s) {
  if (s.schedule.file.empty()) return std::nullopt;
  ppipe::schedule plan = examples::load_schedule_file(s.schedule);
  s.microbatches = plan.microbatches;
  s.virtual_stages = examples::stages_per_rank(plan);
  return plan;
}

// The run's sizes as the MLP checks take them: every process makes the whole batch, and its own
// stages' layers.
examples::mlp_run sizes(const settings& s, int processes) {
  examples::mlp_run run;
  run.rows = s.batch / s.replicas;
  run.inputs = inputs;
  run.width = s.width;
  run.hidden = s.hidden;
  run.ranks = processes / s.replicas;
  run.virtual_stages = s.virtual_stages;
  run.microbatches = s.microbatches;
  run.models = s.check ? 2 : 1;
  return run;
}

// What the command line asks for, the same on every process: checked alike everywhere, so every
// process reaches the same verdict.
void check_options(const settings& s, int processes) {
  if (s.check && s.replicas != 1) {
    examples::cli::refuse("--check compares one pipeline with the host backend; drop --replicas ",
                          s.replicas);
  }
  examples::check_shape(sizes(s, processes),
                        s.replicas > 1 ? "each replica's share of --batch" : "--batch");
}

// What each process checks for itself: its trace file, and that the processes on its machine fit
// in its memory.
void check_here(const settings& s, const ppipe::mpi::session& mpi, const std::string& trace_path) {
  MPI_Comm node = MPI_COMM_NULL;
  int here = 1;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, mpi.rank(), MPI_INFO_NULL, &node) ==
      MPI_SUCCESS) {
    MPI_Comm_size(node, &here);
    MPI_Comm_free(&node);
  }
  examples::mlp_run run = sizes(s, mpi.size());
  run.rows = s.batch;  // every process makes the whole batch, then keeps its replica's rows
  run.weight_share = run.ranks;  // and holds only its own stages' weights
  examples::check_memory(
      run,
      ppipe::detail::concat(
          "running ", here, " processes on this machine, each training an MLP of --hidden ",
          s.hidden, " layers of --width ", s.width, " on --batch ", s.batch, " rows,"),
      here);
  if (!trace_path.empty()) {
    examples::cli::check_writable(trace_path, "--trace",
                                  "give a PREFIX in a folder that exists, or --no-trace");
  }
}

// Runs `step` on this process, then agrees with every other process: the worst exit status of
// all of them (0 when every step succeeded). A process whose step failed says why in its own line;
// every process reaches the agreement, so none waits for another that has given up.
template <class Step>
int on_every_process(const ppipe::mpi::session& mpi, const CLI::App& app, Step&& step) {
  int status = 0;
  try {
    step();
  } catch (...) {
    const examples::cli::outcome o = examples::cli::outcome_of(std::current_exception(), app);
    std::fprintf(stderr, "%s: process %d: %s\n", app.get_name().c_str(), mpi.rank(),
                 o.message.c_str());
    std::fflush(stderr);
    status = o.status;
  }
  int worst = 0;
  MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

std::string trace_path(const settings& s, int process) {
  return s.trace.empty() ? "" : s.trace + ".rank" + std::to_string(process) + ".json";
}

// Deferred: the pipeline materializes only this process's stages, so each process holds its own
// layers' weights; the --check model is built whole.
ppipe::layers::sequential make_model(const settings& s, bool deferred) {
  std::vector<int> widths{inputs};
  for (int i = 0; i < s.hidden; ++i) widths.push_back(s.width);
  widths.push_back(1);
  if (deferred) {
    return ppipe::layers::sequential::mlp(widths, 2026, ppipe::layers::activation_kind::relu, ppipe::layers::deferred);
  }
  return ppipe::layers::sequential::mlp(widths, 2026);
}

int train(const settings& s, std::optional<ppipe::schedule> file, const ppipe::mpi::session& mpi,
          const CLI::App& app) {
  const bool talk = mpi.rank() == 0;
  ppipe::mpi::transport net = ppipe::mpi::replicated(MPI_COMM_WORLD, s.replicas);
  const int replica = net.replica();
  const int rank = net.rank();
  // Every replica trains on its own rows of the batch.
  const examples::regression all = examples::make_regression(s.batch, inputs, 7);
  const std::int64_t rows = s.batch / s.replicas;
  const ppipe::payload x = ppipe::slice_rows(all.inputs, replica * rows, rows);
  const ppipe::payload y = ppipe::slice_rows(all.targets, replica * rows, rows);

  ppipe::layers::sequential model = make_model(s, true);
  const ppipe::layers::sgd sgd(s.lr);
  ppipe::pipeline_options o;
  o.ranks = 0;  // one per process of the pipeline's communicator
  o.microbatches = s.microbatches;
  o.virtual_stages = s.virtual_stages;
  o.timeout = std::chrono::milliseconds(s.timeout_ms);
  // A built-in schedule for the pipeline's ranks: one per process of a replica.
  o.schedule = file ? std::move(*file)
                    : ppipe::make_schedule(s.schedule.name, {net.num_ranks(), s.microbatches, s.virtual_stages});
  ppipe::mpi::pipeline<ppipe::layers::sequential> pipe(
      model, o, ppipe::layers::mse_loss{}, [&](const ppipe::stage_info& st) { sgd.step(model, st); }, std::move(net));
  const int p = pipe.options().ranks;

  if (talk) {
    std::cout << "ppipe-mpi-train: an MLP of " << model.num_layers() << " layers on " << mpi.size() << " processes: "
              << s.replicas << " replica(s) of a " << p << "-rank pipeline, schedule " << pipe.training_schedule().name
              << ", m=" << s.microbatches << ", " << rows << " rows per replica\nlayers per stage:";
    for (const int n : pipe.split().sizes()) std::cout << " " << n;
    std::cout << "\n\n";
    std::printf("%6s %12s %10s %14s\n", "step", "loss", "ms", "samples/s");
  }
  double total_ms = 0.0;
  std::vector<double> losses;
  for (int step = 1; step <= s.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const double loss = pipe.train_step(x, y);  // every rank of the pipeline gets the loss
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    losses.push_back(loss);
    if (step > 1) total_ms += ms;
    if (talk && (step <= 3 || step % 5 == 0 || step == s.steps)) {
      std::printf("%6d %12.6f %10.2f %14.0f\n", step, loss, ms, static_cast<double>(s.batch) / ms * 1e3);
    }
  }
  const ppipe::run_trace& trace = pipe.last_trace();
  const double busy = trace.busy(rank);
  const std::string path = trace_path(s, mpi.rank());
  if (const int status = on_every_process(mpi, app, [&] {
        if (!path.empty()) ppipe::save_chrome_trace(path, trace);
      })) {
    return status;
  }
  std::fflush(stdout);
  MPI_Barrier(MPI_COMM_WORLD);
  // One line per process, in rank order.
  for (int w = 0; w < mpi.size(); ++w) {
    if (w == mpi.rank()) {
      std::printf("%sprocess %d: replica %d, pipeline rank %d, stages", w == 0 ? "\n" : "", mpi.rank(), replica, rank);
      for (int st = 0; st < pipe.split().num_stages(); ++st) {
        if (pipe.is_local(st)) std::printf(" %d", st);
      }
      std::printf("; last step busy %.2f of %.2f ms (%.0f%%)", busy / 1e3, trace.makespan() / 1e3,
                  trace.makespan() > 0 ? 100.0 * busy / trace.makespan() : 0.0);
      if (!path.empty()) std::printf("; trace %s", path.c_str());
      std::printf("\n");
      std::fflush(stdout);
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  if (talk && s.exact_loss) std::printf("last loss: %.17g\n", losses.back());
  if (talk) {
    std::printf("\nthroughput: %.0f samples/s (mean step %.2f ms over steps 2..%d)\n",
                s.steps > 1 ? static_cast<double>(s.batch) / (total_ms / (s.steps - 1)) * 1e3 : 0.0,
                s.steps > 1 ? total_ms / (s.steps - 1) : 0.0, s.steps);
  }

  if (s.check) {
    // The same training on this process, p rank threads: the same bits, or the check fails.
    ppipe::layers::sequential here = make_model(s, false);
    o.ranks = p;
    ppipe::pipeline<ppipe::layers::sequential> host(
        here, o, ppipe::layers::mse_loss{}, [&](const ppipe::stage_info& st) { sgd.step(here, st); });
    int same = 1;
    for (int step = 0; step < s.steps; ++step) same &= host.train_step(x, y) == losses[static_cast<std::size_t>(step)];
    for (int st = 0; st < pipe.split().num_stages(); ++st) {
      if (!pipe.is_local(st)) continue;
      const auto a = model.parameters(pipe.split().first(st), pipe.split().end(st));
      const auto b = here.parameters(pipe.split().first(st), pipe.split().end(st));
      for (std::size_t k = 0; k < a.size(); ++k) same &= std::equal(a[k].begin(), a[k].end(), b[k].begin(), b[k].end());
    }
    int all_same = 0;
    MPI_Allreduce(&same, &all_same, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (talk) {
      std::printf("check: losses and weights %s the host backend's, bit for bit\n", all_same ? "equal" : "DIFFER FROM");
    }
    return all_same ? 0 : 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains an MLP through a pipeline of MPI processes, one pipeline rank each.",
               "ppipe-mpi-train"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::optional<ppipe::mpi::session> mpi;
  settings s;
  try {
    mpi.emplace(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ppipe-mpi-train: %s\n", examples::printable(e.what()).c_str());
    return examples::cli::exit_failed;
  }
  // Every process reads the same command line to the same verdict; process 0 says it.
  try {
    add_options(app, s);
    app.parse(argc, argv);
    check_schedule_options(s);
  } catch (...) {
    const examples::cli::outcome o = examples::cli::outcome_of(std::current_exception(), app);
    if (mpi->rank() == 0 && o.help) std::cout << o.message;
    if (mpi->rank() == 0 && !o.help) std::cerr << "ppipe-mpi-train: " << o.message << "\n";
    return o.status;
  }
  // A file that one process cannot read is named by that process, and every process stops.
  std::optional<ppipe::schedule> file;
  if (const int status = on_every_process(*mpi, app, [&] { file = read_schedule_file(s); })) return status;
  try {
    check_options(s, mpi->size());
  } catch (...) {
    const examples::cli::outcome o = examples::cli::outcome_of(std::current_exception(), app);
    if (mpi->rank() == 0) std::cerr << "ppipe-mpi-train: " << o.message << "\n";
    return o.status;
  }
  if (const int status =
          on_every_process(*mpi, app, [&] { check_here(s, *mpi, trace_path(s, mpi->rank())); })) {
    return status;
  }
  try {
    return train(s, std::move(file), *mpi, app);
  } catch (const ppipe::error& e) {
    // The pipeline reports a failure on every process: one line each, then an agreed end.
    std::fprintf(stderr, "ppipe-mpi-train: process %d: %s\n", mpi->rank(),
                 examples::printable(e.what()).c_str());
    return examples::cli::status_of(e.code());
  } catch (...) {
    // Anything else happened on this process alone, and the others may be waiting for it in MPI.
    const examples::cli::outcome o = examples::cli::outcome_of(std::current_exception(), app);
    std::fprintf(stderr, "ppipe-mpi-train: process %d: %s\n", mpi->rank(), o.message.c_str());
    std::fflush(nullptr);
    MPI_Abort(MPI_COMM_WORLD, o.status);
    return o.status;
  }
}
