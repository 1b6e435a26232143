// runtime_basics: the snippets of docs/runtime.md, each copied from here, so that they compile.
// A model of the user's own (scale-and-shift layers on plain C++ vectors), trained and served
// through a 2-rank pipeline on the host backend.

#include <cstdio>
#include <exception>
#include <iostream>
#include <vector>

#include <ppipe/ppipe.hpp>
#include <ppipe/runtime/chrome_trace.hpp>
#include <ppipe/runtime/trace_timeline.hpp>

// [model]
// Every layer computes y = a*x + b elementwise on one tensor [rows, width].
struct scale_shift_model {
  std::vector<float> a, b, grad_a, grad_b;

  explicit scale_shift_model(int layers)
      : a(static_cast<std::size_t>(layers), 1.0f), b(a.size(), 0.0f), grad_a(a.size(), 0.0f), grad_b(a.size(), 0.0f) {}

  int num_layers() const { return static_cast<int>(a.size()); }

  // The shapes a layer makes from its input's; ppipe allocates every buffer from these.
  std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }

  void forward(int layer, const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) {
    const auto l = static_cast<std::size_t>(layer);
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = a[l] * in[0][i] + b[l];
  }

  // Adds this microbatch's weight gradients; writes the input gradient unless grad_in is empty
  // (the model's first layer, whose input needs none).
  void backward(int layer, const ppipe::layer_context&, const ppipe::payload& in, const ppipe::payload& /*out*/,
                const ppipe::payload& grad_out, ppipe::payload& grad_in) {
    const auto l = static_cast<std::size_t>(layer);
    for (std::size_t i = 0; i < in[0].size(); ++i) {
      grad_a[l] += grad_out[0][i] * in[0][i];
      grad_b[l] += grad_out[0][i];
      if (!grad_in.empty()) grad_in[0][i] = a[l] * grad_out[0][i];
    }
  }
};
// [model]

// [loss]
// Mean squared error. `scale` is the microbatch's share of the batch: gradients accumulated over
// the microbatches then add up to the whole batch's.
double mse(const ppipe::payload& out, const ppipe::payload& target, ppipe::payload& grad, double scale) {
  double sum = 0.0;
  const auto n = static_cast<double>(out[0].size());
  for (std::size_t i = 0; i < out[0].size(); ++i) {
    const double d = static_cast<double>(out[0][i]) - static_cast<double>(target[0][i]);
    sum += d * d;
    grad[0][i] = static_cast<float>(scale * 2.0 * d / n);
  }
  return sum / n;
}
// [loss]

int main() {
  try {
    // [pipeline]
    scale_shift_model model(8);
    ppipe::pipeline_options options;
    options.ranks = 2;         // p: two rank threads
    options.microbatches = 4;  // m: each batch is split into 4 microbatches

    const float lr = 0.1f;
    ppipe::pipeline<scale_shift_model, ppipe::schedules::one_f_one_b> pipe(
        model, options, mse, [&](const ppipe::stage_info& stage) {
          // Runs on the stage's rank once the step's gradients are complete.
          for (int l = stage.first_layer; l < stage.end_layer; ++l) {
            const auto k = static_cast<std::size_t>(l);
            model.a[k] -= lr * model.grad_a[k];
            model.b[k] -= lr * model.grad_b[k];
            model.grad_a[k] = model.grad_b[k] = 0.0f;
          }
        });
    // [pipeline]

    // [train]
    ppipe::payload x{ppipe::host_tensor(ppipe::shape{16, 2})};
    ppipe::payload y{ppipe::host_tensor(ppipe::shape{16, 2})};
    for (std::size_t i = 0; i < x[0].size(); ++i) {
      x[0][i] = static_cast<float>(i % 5) * 0.1f;
      y[0][i] = 2.0f * x[0][i] + 0.5f;
    }
    for (int step = 0; step < 50; ++step) {
      const double loss = pipe.train_step(x, y);
      if (step % 10 == 0) std::printf("step %2d  loss %.5f\n", step, loss);
    }
    // [train]

    // [inspect]
    const ppipe::run_trace& trace = pipe.last_trace();
    const ppipe::simulation predicted = ppipe::predict_from_trace(pipe.training_schedule(), trace);
    std::printf("bubble: measured %.1f%%, predicted from the kernel times %.1f%%\n",
                100.0 * trace.bubble_fraction(), 100.0 * predicted.bubble_fraction());
    std::cout << ppipe::render_timeline(pipe.training_schedule(), trace);
    ppipe::save_chrome_trace("runtime_basics.json", trace);  // open at ui.perfetto.dev
    for (int s = 0; s < 2; ++s) {
      std::printf("stage %d held at most %d microbatches of activations\n", s, pipe.memory(s).peak_microbatches);
    }
    // [inspect]

    // [infer]
    const ppipe::payload prediction = pipe.infer(x);  // forward only, microbatches in flight
    std::printf("infer: %s, first value %.3f (target %.3f)\n", ppipe::to_string(prediction[0].shape()).c_str(),
                static_cast<double>(prediction[0][1]), static_cast<double>(y[0][1]));
    // [infer]

    // [errors]
    try {
      pipe.train_step(ppipe::payload{ppipe::host_tensor(ppipe::shape{2, 2})}, y);  // 2 rows, m = 4
    } catch (const ppipe::error& e) {
      std::cout << e.what() << "\n";  // [ppipe.invalid_argument] the inputs have 2 rows but ...
    }
    // [errors]

    // [schedule value]
    // A schedule as a value: written in PyTorch's CSV form, read back, and run by a pipeline whose
    // type names no schedule. p, m and v come from the schedule.
    ppipe::save_csv("runtime_basics.csv", ppipe::make_schedule("gpipe", {2, 4, 1}));
    ppipe::pipeline_options from_file;
    from_file.schedule = ppipe::load_csv("runtime_basics.csv");
    ppipe::pipeline<scale_shift_model> by_value(model, from_file, mse);
    std::printf("from the file: p=%d, m=%d, loss %.5f\n", by_value.options().ranks, by_value.options().microbatches,
                by_value.train_step(x, y));
    // [schedule value]
  } catch (const std::exception& e) {
    std::cerr << "runtime_basics: " << e.what() << "\n";
    return 1;
  }
}
