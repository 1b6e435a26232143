#pragma once
// The training schedule of the MLP demos (ppipe-train, ppipe-mpi-train): a built-in one by name
// (--schedule) or one of the user's own from a CSV file (--schedule-file). Either way the tool
// builds one schedule value and hands it to one pipeline type (pipeline_options::schedule), so
// that a schedule needs no pipeline instantiation of its own.

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <ppipe/schedule/csv.hpp>
#include <ppipe/schedule/generate.hpp>

#include "cli.hpp"

namespace examples {

// The schedules a demo trains with: every built-in training schedule ("interleaved" is short for
// interleaved_1f1b).
inline const std::vector<std::string> training_schedules{"gpipe", "1f1b", "interleaved_1f1b", "interleaved", "zb_h1",
                                                         "zb_v", "dualpipe_v"};

struct schedule_choice {
  std::string name = "1f1b";
  std::string file;  // empty: the built-in schedule `name`
  CLI::Option* file_option = nullptr;
  CLI::Option* virtual_option = nullptr;  // -v, to tell "given" from its default
};

// --schedule NAME and --schedule-file PATH, which exclude each other; `virtual_option` is the
// tool's -v.
inline void add_schedule_choice(CLI::App& app, schedule_choice& c, CLI::Option* virtual_option) {
  CLI::Option* by_name = cli::add_schedule(app, c.name, training_schedules);
  c.file_option = app.add_option("--schedule-file", c.file,
                                 "train with a schedule of your own, in PyTorch's CSV form (one row of actions "
                                 "per rank, such as 0F0,0F1,,0B0); its ranks, stages per rank and microbatches "
                                 "replace -p, -v and -m")
                      ->type_name("PATH.csv")
                      ->excludes(by_name);
  c.virtual_option = virtual_option;
}

// Refuses (a usage error) a schedule file together with the numbers it decides; `decided` names
// the options that were given and that the file replaces ("--microbatches").
inline void refuse_numbers_with_file(const schedule_choice& c, const std::vector<std::string>& decided) {
  if (c.file.empty() || decided.empty()) return;
  std::string options;
  for (const std::string& o : decided) options += (options.empty() ? "" : ", ") + o;
  cli::refuse("--schedule-file trains the file's schedule (its ranks, stages per rank and microbatches); leave out ",
              options);
}

// The stages per rank of the built-in schedule: a V is two stages per rank, so zb_v and dualpipe_v
// take v=2 unless -v says otherwise.
inline int virtual_stages_for(const schedule_choice& c, int virtual_stages) {
  if ((c.name == "zb_v" || c.name == "dualpipe_v") && c.virtual_option->count() == 0) return 2;
  return virtual_stages;
}

// The schedule file, read and validated as the pipeline runs it (transfers buffered), named after
// the file so that the tools' output says which one ran. Throws ppipe::error naming the path.
inline ppipe::schedule load_schedule_file(const schedule_choice& c) {
  ppipe::csv_read_options read;
  read.name = std::filesystem::path(c.file).filename().string();
  read.model = ppipe::transfer_model::buffered;
  return ppipe::load_csv(c.file, read);
}

// The stages per rank of a schedule, for the demos' size checks: the most any rank holds (a
// schedule whose ranks hold different numbers of stages is refused by the pipeline, which says so).
inline int stages_per_rank(const ppipe::schedule& s) {
  int most = 1;
  for (int r = 0; r < s.num_ranks(); ++r) most = std::max(most, static_cast<int>(s.place.stages_on(r).size()));
  return most;
}

}  // namespace examples
