// ppipe-train: the README's demo. Trains an MLP on a synthetic regression through a pipeline of
// rank threads (the host backend), printing the loss per step, the throughput, and the measured
// bubble next to the one the simulator predicts from the measured kernel times; writes the last
// step's trace as Chrome trace JSON (open it at ui.perfetto.dev).
//
//   ppipe-train [--ranks 4] [--microbatches 16] [--schedule 1f1b|gpipe|interleaved|zb_h1|zb_v|dualpipe_v]
//               [--schedule-file mine.csv] [--virtual 2] [--steps 30] [--batch 512] [--inputs 16]
//               [--width 256] [--hidden 4] [--lr 0.1] [--trace ppipe-trace.json]
//               [--timeout-ms 60000] [--compare] [--no-timeline] [--exact-loss]
//               (--help says more)
//
// Every schedule, built-in or from a file, runs through the same pipeline type: the tool hands
// the pipeline the schedule as a value (pipeline_options::schedule).

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ppipe/layers/layers.hpp>
#include <ppipe/ppipe.hpp>

#include "support/cli.hpp"
#include "support/last_step.hpp"
#include "support/mlp_checks.hpp"
#include "support/regression.hpp"
#include "support/schedule_choice.hpp"

namespace {

struct settings {
  int ranks = 4;
  int microbatches = 16;
  int virtual_stages = 1;
  examples::schedule_choice schedule;
  int steps = 30;
  std::int64_t batch = 512;
  int inputs = 16;  // features per sample
  int width = 256;
  int hidden = 4;  // hidden linear layers (each followed by a ReLU)
  float lr = 0.1f;
  std::string trace = "ppipe-trace.json";
  long timeout_ms = 60000;
  bool compare = false;   // also train the same model on one stage and compare throughput
  bool timeline = true;
  bool exact_loss = false;  // print the last loss with every digit, to compare runs bit for bit
  bool recompute = false;   // every stage keeps only its input and output, and recomputes
  int recompute_every = 0;  // ... and also every k-th layer's input (0: not asked)
  // What -p, -m and -v mean when --schedule-file replaces them, for the refusal.
  std::vector<const CLI::Option*> numbers;
};

void add_options(CLI::App& app, settings& s) {
  namespace cli = examples::cli;
  CLI::Option* ranks = cli::add_ranks(app, s.ranks, "pipeline ranks, a thread each");
  CLI::Option* microbatches = cli::add_microbatches(app, s.microbatches);
  CLI::Option* virtual_stages =
      cli::add_virtual(app, s.virtual_stages, "stages per rank (interleaved_1f1b; zb_v and dualpipe_v take 2)");
  examples::add_schedule_choice(app, s.schedule, virtual_stages);
  s.numbers = {ranks, microbatches, virtual_stages};
  cli::add_number(app, "--steps", s.steps, cli::range<int>{1, cli::most}, "training steps");
  cli::add_number(app, "--batch", s.batch, cli::range<std::int64_t>{1}, "rows per step");
  cli::add_number(app, "--inputs", s.inputs, cli::range<int>{1, cli::most}, "features per row");
  cli::add_number(app, "--width", s.width, cli::range<int>{1, cli::most},
                  "width of the hidden layers");
  cli::add_number(app, "--hidden", s.hidden, cli::range<int>{0, (cli::most - 1) / 2},
                  "hidden linear layers, each followed by a ReLU");
  cli::add_number(app, "--lr", s.lr, cli::range<float>{0.0f}, "learning rate");
  app.add_option("--trace", s.trace, "the last step's Chrome trace; \"\" for none")
      ->capture_default_str();
  cli::add_timeout(app, s.timeout_ms);
  app.add_flag("--compare", s.compare, "also train on one stage and compare the throughput");
  app.add_flag_callback(
      "--no-timeline", [&s] { s.timeline = false; }, "leave out the text timeline");
  app.add_flag("--recompute", s.recompute,
               "recompute activations: each stage keeps only its input and output between a forward and "
               "its backward, and runs the forward again before the backward (the same bits, less memory)");
  cli::add_number(app, "--recompute-every", s.recompute_every, cli::range<int>{1, cli::most},
                  "recompute activations, keeping also every K-th layer's input: less memory than without, "
                  "and less recompute than --recompute");
  app.add_flag("--exact-loss", s.exact_loss,
               "also print the last step's loss with 17 significant digits, to compare runs bit for bit");
}

// The schedule file's schedule, whose numbers then replace -p, -m and -v; none for a built-in
// schedule, which is generated once check() has passed.
std::optional<ppipe::schedule> read_schedule_file(settings& s) {
  if (s.schedule.file.empty()) {
    s.virtual_stages = examples::virtual_stages_for(s.schedule, s.virtual_stages);
    return std::nullopt;
  }
  std::vector<std::string> given;
  for (const CLI::Option* o : s.numbers) {
    if (o->count() > 0) given.push_back(o->get_name());
  }
  examples::refuse_numbers_with_file(s.schedule, given);
  ppipe::schedule plan = examples::load_schedule_file(s.schedule);
  s.ranks = plan.num_ranks();
  s.microbatches = plan.microbatches;
  s.virtual_stages = examples::stages_per_rank(plan);
  return plan;
}

// What the command line asks for, checked before anything is built.
void check(const settings& s) {
  examples::mlp_run run;
  run.rows = s.batch;
  run.inputs = s.inputs;
  run.width = s.width;
  run.hidden = s.hidden;
  run.ranks = s.ranks;
  run.virtual_stages = s.virtual_stages;
  run.microbatches = s.microbatches;
  run.models = s.compare ? 2 : 1;
  examples::check_shape(run, "--batch");
  examples::check_memory(
      run, ppipe::detail::concat("training an MLP of --hidden ", s.hidden, " layers of --width ",
                                 s.width, " on --batch ", s.batch, " rows of --inputs ", s.inputs));
  if (!s.trace.empty()) {
    examples::cli::check_writable(s.trace, "--trace",
                                  "give a file in a folder that exists, or --trace \"\" for none");
  }
}

ppipe::layers::sequential make_model(const settings& s) {
  std::vector<int> widths{s.inputs};
  for (int i = 0; i < s.hidden; ++i) widths.push_back(s.width);
  widths.push_back(1);
  return ppipe::layers::sequential::mlp(widths, 2026);
}

int train(const settings& s, ppipe::schedule plan) {
  const examples::regression data = examples::make_regression(s.batch, s.inputs, 7);
  ppipe::layers::sequential model = make_model(s);
  const ppipe::layers::sgd sgd(s.lr);
  ppipe::pipeline_options o;
  o.ranks = s.ranks;
  o.microbatches = s.microbatches;
  o.virtual_stages = s.virtual_stages;
  o.timeout = std::chrono::milliseconds(s.timeout_ms);
  o.schedule = std::move(plan);
  if (s.recompute_every > 0) {
    o.recompute = {ppipe::recompute_policy::every(s.recompute_every)};
  } else if (s.recompute) {
    o.recompute = {ppipe::recompute_policy::full};
  }
  ppipe::pipeline<ppipe::layers::sequential> pipe(
      model, o, ppipe::layers::mse_loss{}, [&](const ppipe::stage_info& st) { sgd.step(model, st); });

  std::cout << "ppipe-train: an MLP of " << model.num_layers() << " layers (" << s.hidden + 1 << " linear, " << s.inputs << " inputs, width "
            << s.width << ") on " << s.ranks << " rank threads, schedule " << pipe.training_schedule().name << ", m=" << s.microbatches
            << ", batch " << s.batch << " rows\nlayers per stage:";
  for (const int n : pipe.split().sizes()) std::cout << " " << n;
  std::cout << "\n\n";
  std::printf("%6s %12s %10s %14s\n", "step", "loss", "ms", "samples/s");
  double total_ms = 0.0;
  double last_loss = 0.0;
  int timed = 0;
  for (int step = 1; step <= s.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const double loss = pipe.train_step(data.inputs, data.targets);
    last_loss = loss;
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (step > 1) {  // the first step allocates every buffer; leave it out of the throughput
      total_ms += ms;
      ++timed;
    }
    if (step <= 3 || step % 5 == 0 || step == s.steps) {
      std::printf("%6d %12.6f %10.2f %14.0f\n", step, loss, ms, static_cast<double>(s.batch) / ms * 1e3);
    }
  }
  if (s.exact_loss) std::printf("last loss: %.17g\n", last_loss);
  const double mean_ms = timed ? total_ms / timed : 0.0;
  std::printf("\nthroughput: %.0f samples/s (mean step %.2f ms over steps 2..%d)\n",
              timed ? static_cast<double>(s.batch) / mean_ms * 1e3 : 0.0, mean_ms, s.steps);
  examples::report_last_step(pipe.training_schedule(), pipe.last_trace(), s.timeline, s.trace);

  if (s.compare) {
    ppipe::layers::sequential single = make_model(s);
    ppipe::pipeline_options one = o;
    one.ranks = 1;
    one.virtual_stages = 1;
    one.schedule.reset();  // the default 1F1B of one stage
    ppipe::pipeline<ppipe::layers::sequential> alone(
        single, one, ppipe::layers::mse_loss{}, [&](const ppipe::stage_info& st) { sgd.step(single, st); });
    alone.train_step(data.inputs, data.targets);
    const auto t0 = std::chrono::steady_clock::now();
    for (int step = 2; step <= s.steps; ++step) alone.train_step(data.inputs, data.targets);
    const double one_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
                          std::max(1, s.steps - 1);
    std::printf("one stage: %.0f samples/s (mean step %.2f ms); the pipeline is %.2fx that\n",
                static_cast<double>(s.batch) / one_ms * 1e3, one_ms, one_ms / mean_ms);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Trains an MLP through a pipeline of rank threads (the host backend).",
               "ppipe-train"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  settings s;
  return examples::cli::run(app, [&] {
    add_options(app, s);
    app.parse(argc, argv);
    std::optional<ppipe::schedule> file = read_schedule_file(s);
    check(s);
    return train(s, file ? std::move(*file)
                         : ppipe::make_schedule(s.schedule.name, {s.ranks, s.microbatches, s.virtual_stages}));
  });
}
