#pragma once
// ppipe-train's model trained on one stage, for layers_bench's comparison of the layer kit on
// OpenBLAS with the kit's own loops. Each of the two translation units that include this header
// builds the kit its own way (with and without PPIPE_WITH_CBLAS), so the implementation is in an
// unnamed namespace: one copy per translation unit, each with that unit's kit.
#include <cstddef>
#include <cstdint>
#include <memory>

#include <ppipe/layers/layers.hpp>
#include <ppipe/ppipe.hpp>

namespace bench {

/// One training step of the model per call.
class mlp_step {
 public:
  virtual ~mlp_step() = default;
  /// @brief Runs one train_step; returns its loss.
  virtual double step() = 0;
};

/// The same model and step built with the kit's loops (layers_bench_loops.cpp, compiled without
/// PPIPE_WITH_CBLAS).
std::unique_ptr<mlp_step> make_mlp_step_loops();

namespace {

// ppipe-train's defaults (examples/train_mlp.cpp), on one stage as its --compare runs them: 16
// inputs, 4 hidden layers of 256 with ReLU, 1 output, a batch of 512 rows in m=16 microbatches,
// 1F1B, SGD. The data are runtime_bench's: inputs in [-1, 1), a target in [0, 1).
class mlp_step_on_one_stage final : public mlp_step {
 public:
  static constexpr std::int64_t rows = 512;
  static constexpr int inputs = 16;

  mlp_step_on_one_stage()
      : x_{ppipe::host_tensor(ppipe::shape{rows, inputs})},
        y_{ppipe::host_tensor(ppipe::shape{rows, 1})},
        model_(ppipe::layers::sequential::mlp({inputs, 256, 256, 256, 256, 1}, 2026)),
        sgd_(0.01f),
        pipe_(model_, options(), ppipe::layers::mse_loss{},
              [this](const ppipe::stage_info& s) { sgd_.step(model_, s); }) {
    for (std::size_t i = 0; i < x_[0].size(); ++i)
      x_[0][i] = static_cast<float>((i * 7919) % 2000) / 1000.0f - 1.0f;
    for (std::size_t r = 0; r < y_[0].size(); ++r) y_[0][r] = static_cast<float>(r % 17) / 17.0f;
    pipe_.train_step(x_, y_);  // allocates every buffer once
  }

  double step() override { return pipe_.train_step(x_, y_); }

 private:
  static ppipe::pipeline_options options() {
    ppipe::pipeline_options o;
    o.ranks = 1;
    o.microbatches = 16;
    o.record_trace = false;
    return o;
  }

  ppipe::payload x_;
  ppipe::payload y_;
  ppipe::layers::sequential model_;
  ppipe::layers::sgd sgd_;
  ppipe::pipeline<ppipe::layers::sequential> pipe_;
};

}  // namespace
}  // namespace bench
