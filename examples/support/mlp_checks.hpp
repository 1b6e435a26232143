#pragma once
// What the MLP demos (ppipe-train, ppipe-mpi-train) check before they build anything: that the
// pipeline's shape suits the model and the batch, and that the run fits in memory. The library
// checks the shape too, but only after it has laid out the schedule for every microbatch.

#include <cstdint>
#include <string>

#include "cli.hpp"
#include "sizes.hpp"

namespace examples {

// The sizes of one MLP training run, as the command line gives them.
struct mlp_run {
  std::int64_t rows = 0;  // of the batch one pipeline trains on
  int inputs = 0;
  int width = 0;
  int hidden = 0;  // hidden linear layers, each followed by a ReLU
  int ranks = 0;
  int virtual_stages = 1;
  int microbatches = 1;
  int models = 1;  // models trained side by side (a comparison or a check)
  // The pipeline's model holds 1/weight_share of the weights here: the ranks over MPI, where each
  // process materializes only its own stages' layers; the other models hold all of theirs.
  int weight_share = 1;

  [[nodiscard]] int layers() const { return 2 * hidden + 1; }
};

// Refuses (a usage error) a pipeline with more stages than the MLP has layers, or more
// microbatches than rows; `rows_option` names where the rows come from.
inline void check_shape(const mlp_run& run, const std::string& rows_option) {
  const std::int64_t stages = std::int64_t{run.ranks} * run.virtual_stages;
  if (stages > run.layers()) {
    cli::refuse(
        run.ranks, " ranks x ", run.virtual_stages, " stages per rank = ", stages,
        " stages, but the MLP has ", run.layers(), " layers (--hidden ", run.hidden, " gives 2x",
        run.hidden,
        "+1) and every stage needs one; give fewer ranks or stages per rank, or a larger --hidden");
  }
  if (run.microbatches > run.rows) {
    cli::refuse("--microbatches ", run.microbatches, " is more than the ", run.rows, " rows of ",
                rows_option, ", and every microbatch needs a row; give at most ", run.rows,
                " microbatches or more rows");
  }
}

// About what a run holds at once, in bytes: the data, each model's weights and gradients (the
// pipeline's share of them), every
// layer's output for the whole batch (GPipe keeps them all until the backward), and the
// schedule's actions and their trace (a few per stage and microbatch).
struct mlp_bytes {
  std::uint64_t data = 0;
  std::uint64_t weights = 0;
  std::uint64_t activations = 0;
  std::uint64_t schedule = 0;

  explicit mlp_bytes(const mlp_run& r) {
    constexpr std::uint64_t f = sizeof(float);
    data = product(r.rows, plus(static_cast<std::uint64_t>(r.inputs), 1), f);
    // Linear layers inputs -> width -> ... -> width -> 1, each with a bias.
    const auto in = static_cast<std::uint64_t>(r.inputs);
    const auto w = static_cast<std::uint64_t>(r.width);
    const std::uint64_t parameters =
        r.hidden == 0
            ? plus(in, 1)
            : plus(product(plus(in, 1), w), plus(product(r.hidden - 1, plus(w, 1), w), plus(w, 1)));
    const std::uint64_t model = product(parameters, f, 2);
    weights = plus(model / static_cast<std::uint64_t>(r.weight_share > 0 ? r.weight_share : 1),
                   product(model, r.models - 1));
    activations = product(r.rows, plus(product(2, r.hidden, r.width), 1), f, r.models);
    // F, B, sends and receives per stage and microbatch; an action and its trace event each.
    constexpr std::uint64_t per_action = 6 * 64;
    schedule = product(r.ranks, r.virtual_stages, r.microbatches, per_action, r.models);
  }
  [[nodiscard]] std::uint64_t total() const {
    return plus(plus(data, weights), plus(activations, schedule));
  }
  // The largest part and the options that make it smaller.
  [[nodiscard]] std::string largest() const {
    if (data >= weights && data >= activations && data >= schedule) {
      return "the data alone takes " + human_bytes(data) + ": give a smaller --batch or --inputs";
    }
    if (weights >= activations && weights >= schedule) {
      return "the weights and gradients take " + human_bytes(weights) +
             ": give a smaller --inputs, --width or --hidden";
    }
    if (activations >= schedule) {
      return "the activations take " + human_bytes(activations) +
             ": give a smaller --batch, --width or --hidden";
    }
    return "the schedule takes " + human_bytes(schedule) + ": give fewer --microbatches";
  }
};

// Fails (ppipe.out_of_memory) when `processes` such runs would need more than the machine's memory.
inline void check_memory(const mlp_run& run, const std::string& what, int processes = 1) {
  const mlp_bytes bytes(run);
  check_memory(times(bytes.total(), static_cast<std::uint64_t>(processes)), what, bytes.largest());
}

}  // namespace examples
