// ppipe-mpi-train: trains the demo's MLP through a pipeline whose ranks are MPI processes, one
// stage (or v stages) per process, and writes each rank's trace of the last step.
//
//   mpirun -np 4 ppipe-mpi-train [--schedule 1f1b|gpipe|interleaved_1f1b] [--microbatches 16]
//          [--virtual 2] [--replicas 2] [--steps 20] [--batch 512] [--width 256] [--hidden 4]
//          [--lr 0.1] [--trace ppipe-trace | --no-trace] [--timeout-ms 60000] [--check]
//
// Every process runs this same program (SPMD): it builds the same model and data, and
// ppipe::mpi::pipeline keeps only its own stages. With --replicas R the job runs R copies of the
// pipeline on np/R processes each, every copy on its share of the batch, and averages the
// gradients across copies after each step. --check also trains the model on this process with the
// host backend (threads) and says whether both give the same bits.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <ppipe/layers/layers.hpp>
#include <ppipe/mpi.hpp>
#include <ppipe/runtime/chrome_trace.hpp>

#include "support/regression.hpp"

namespace {

struct settings {
  std::string schedule = "1f1b";
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
};

[[noreturn]] void usage(int rank, const std::string& why) {
  if (rank == 0) {
    std::cerr << "ppipe-mpi-train: " << why << "\n"
              << "usage: mpirun -np P ppipe-mpi-train [--schedule gpipe|1f1b|interleaved_1f1b] [--microbatches M]\n"
              << "       [--virtual V] [--replicas R] [--steps N] [--batch ROWS] [--width W] [--hidden LAYERS]\n"
              << "       [--lr RATE] [--trace PREFIX | --no-trace] [--timeout-ms MS] [--check]\n";
  }
  MPI_Finalize();
  std::exit(2);
}

settings parse(int argc, char** argv, int rank) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(rank, std::string(a) + " needs a value");
      return argv[++i];
    };
    const auto number = [&]() {
      const char* text = value();
      char* end = nullptr;
      const long v = std::strtol(text, &end, 10);
      if (end == text || *end != '\0') usage(rank, std::string(a) + " takes a whole number, not \"" + text + "\"");
      return v;
    };
    if (a == "--schedule") s.schedule = value();
    else if (a == "--microbatches" || a == "-m") s.microbatches = static_cast<int>(number());
    else if (a == "--virtual" || a == "-v") s.virtual_stages = static_cast<int>(number());
    else if (a == "--replicas") s.replicas = static_cast<int>(number());
    else if (a == "--steps") s.steps = static_cast<int>(number());
    else if (a == "--batch") s.batch = number();
    else if (a == "--width") s.width = static_cast<int>(number());
    else if (a == "--hidden") s.hidden = static_cast<int>(number());
    else if (a == "--lr") s.lr = std::strtof(value(), nullptr);
    else if (a == "--trace") s.trace = value();
    else if (a == "--timeout-ms") s.timeout_ms = number();
    else if (a == "--no-trace") s.trace.clear();
    else if (a == "--check") s.check = true;
    else if (a == "--help" || a == "-h") usage(rank, "trains an MLP through a pipeline of MPI processes");
    else usage(rank, "unknown argument \"" + std::string(a) + "\"");
  }
  if (s.steps < 1 || s.batch < 1 || s.width < 1 || s.hidden < 0 || s.replicas < 1) {
    usage(rank, "steps, batch, width and replicas must be >= 1, hidden >= 0");
  }
  return s;
}

ppipe::layers::sequential make_model(const settings& s) {
  std::vector<int> widths{16};
  for (int i = 0; i < s.hidden; ++i) widths.push_back(s.width);
  widths.push_back(1);
  return ppipe::layers::sequential::mlp(widths, 2026);
}

template <class Schedule>
int train(const settings& s, const ppipe::mpi::session& mpi) {
  const bool talk = mpi.rank() == 0;
  ppipe::mpi::transport net = ppipe::mpi::replicated(MPI_COMM_WORLD, s.replicas);
  const int replica = net.replica();
  const int rank = net.rank();
  // Every replica trains on its own rows of the batch.
  const examples::regression all = examples::make_regression(s.batch, 16, 7);
  const std::int64_t rows = s.batch / s.replicas;
  const ppipe::payload x = ppipe::slice_rows(all.inputs, replica * rows, rows);
  const ppipe::payload y = ppipe::slice_rows(all.targets, replica * rows, rows);

  ppipe::layers::sequential model = make_model(s);
  const ppipe::layers::sgd sgd(s.lr);
  ppipe::pipeline_options o;
  o.ranks = 0;  // one per process of the pipeline's communicator
  o.microbatches = s.microbatches;
  o.virtual_stages = s.virtual_stages;
  o.timeout = std::chrono::milliseconds(s.timeout_ms);
  ppipe::mpi::pipeline<ppipe::layers::sequential, Schedule> pipe(
      model, o, ppipe::layers::mse_loss{}, [&](const ppipe::stage_info& st) { sgd.step(model, st); }, std::move(net));
  const int p = pipe.options().ranks;

  if (talk) {
    std::cout << "ppipe-mpi-train: an MLP of " << model.num_layers() << " layers on " << mpi.size() << " processes: "
              << s.replicas << " replica(s) of a " << p << "-rank pipeline, schedule " << Schedule::name
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
      if (!s.trace.empty()) {
        const std::string path = s.trace + ".rank" + std::to_string(mpi.rank()) + ".json";
        ppipe::save_chrome_trace(path, trace);
        std::printf("; trace %s", path.c_str());
      }
      std::printf("\n");
      std::fflush(stdout);
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  if (talk) {
    std::printf("\nthroughput: %.0f samples/s (mean step %.2f ms over steps 2..%d)\n",
                s.steps > 1 ? static_cast<double>(s.batch) / (total_ms / (s.steps - 1)) * 1e3 : 0.0,
                s.steps > 1 ? total_ms / (s.steps - 1) : 0.0, s.steps);
  }

  if (s.check) {
    if (s.replicas != 1) usage(mpi.rank(), "--check compares one pipeline with the host backend; drop --replicas");
    // The same training on this process, p rank threads: the same bits, or the check fails.
    ppipe::layers::sequential here = make_model(s);
    o.ranks = p;
    ppipe::pipeline<ppipe::layers::sequential, Schedule> host(
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
  const ppipe::mpi::session mpi(&argc, &argv);
  const settings s = parse(argc, argv, mpi.rank());
  try {
    if (s.schedule == "gpipe") return train<ppipe::schedules::gpipe>(s, mpi);
    if (s.schedule == "1f1b") return train<ppipe::schedules::one_f_one_b>(s, mpi);
    if (s.schedule == "interleaved_1f1b") return train<ppipe::schedules::interleaved_1f1b>(s, mpi);
    usage(mpi.rank(), "unknown schedule \"" + s.schedule + "\"");
  } catch (const ppipe::error& e) {
    // Every process of a pipeline throws the same error: one line each, then a clean end.
    std::fprintf(stderr, "ppipe-mpi-train: process %d: %s\n", mpi.rank(), e.what());
    return 1;
  }
}
