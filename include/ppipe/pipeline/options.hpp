#pragma once
/// @file
/// @brief pipeline_options: the numbers a pipeline is built with.

#include <chrono>
#include <optional>
#include <vector>

#include "ppipe/partition/partition.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/schedule/recompute.hpp"
#include "ppipe/schedule/schedule.hpp"

namespace ppipe {

/// @brief The numbers a pipeline is built with.
struct pipeline_options {
  int ranks = 1;           ///< p: pipeline ranks (one thread each on the host backend)
  int microbatches = 1;    ///< m: microbatches per train_step; the batch needs at least m rows
  int virtual_stages = 1;  ///< v: stages per rank (interleaved schedules)
  /// Microbatches (requests in flight) per infer() call; 0 takes `microbatches`.
  int inference_microbatches = 0;
  /// The layers of each stage; empty: the Partitioner splits the model by its layer costs.
  std::optional<partition> split;
  /// One per rank, for the Partitioner (speeds and memory); empty: identical devices.
  std::vector<device_spec> devices;
  /// A complete training schedule to run, such as one ppipe::load_csv() read or
  /// ppipe::make_schedule(name, params) chose at run time; empty: the pipeline's Schedule policy
  /// generates one from p, m and v. A given schedule decides p, m and v: leave ranks,
  /// microbatches and virtual_stages at their defaults to take its values, or repeat them.
  std::optional<ppipe::schedule> schedule;
  /// Activation recomputation: one policy per stage, or one for every stage; empty: none. A
  /// schedule that already has R actions (from a file) runs them whatever this says, with the
  /// stage's policy where it recomputes and full where it says none.
  std::vector<recompute_policy> recompute;
  /// The longest any rank waits for data or for the others (see executor_options).
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  bool record_trace = true;  ///< keep the last run's trace (last_trace())
  /// @brief Capture training steps into one graph and launch it, while the batch's shapes stay the
  /// same, where every rank runs on one device that captures (ppipe::cuda::backend: a CUDA graph;
  /// the CPU model of one device): the host then spends one launch per step instead of enqueueing
  /// every action. The first step with new shapes runs as usual, the next is captured (and run),
  /// the ones after are launched. Steps launched from a graph keep no trace of their actions.
  bool capture_graphs = false;
};

}  // namespace ppipe
