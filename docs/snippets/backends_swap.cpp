// backends_swap: the snippet of docs/backends.md. One model, trained through the same pipeline on
// two backends: the host backend (each layer call runs on its rank's thread) and the CPU-stream
// backend (each rank enqueues its step on CPU streams ordered by events). Only the pipeline's
// fourth template parameter changes, and the losses come out bit for bit the same.

#include <cstdio>
#include <exception>
#include <vector>

#include <ppipe/ppipe.hpp>
#include <ppipe/runtime/cpu_stream_backend.hpp>  // not in the umbrella

// y = a*x elementwise, one weight per layer, on one tensor [rows, width].
struct scale_model {
  std::vector<float> a, grad;
  explicit scale_model(int layers) : a(static_cast<std::size_t>(layers), 0.9f), grad(a.size(), 0.0f) {}
  int num_layers() const { return static_cast<int>(a.size()); }
  std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  // A layer that takes ppipe::layer_context runs on every backend.
  void forward(int layer, const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) {
    const auto l = static_cast<std::size_t>(layer);
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = a[l] * in[0][i];
  }
  void backward(int layer, const ppipe::layer_context&, const ppipe::payload& in, const ppipe::payload&,
                const ppipe::payload& grad_out, ppipe::payload& grad_in) {
    const auto l = static_cast<std::size_t>(layer);
    for (std::size_t i = 0; i < in[0].size(); ++i) {
      grad[l] += grad_out[0][i] * in[0][i];
      if (!grad_in.empty()) grad_in[0][i] = a[l] * grad_out[0][i];
    }
  }
};

double mse(const ppipe::payload& out, const ppipe::payload& target, ppipe::payload& grad_out, double scale) {
  double sum = 0.0;
  const auto n = static_cast<double>(out[0].size());
  for (std::size_t i = 0; i < out[0].size(); ++i) {
    const double d = static_cast<double>(out[0][i]) - static_cast<double>(target[0][i]);
    sum += d * d;
    grad_out[0][i] = static_cast<float>(scale * 2.0 * d / n);
  }
  return sum / n;
}

// Ten training steps of a fresh model on `Backend`; returns the losses.
template <class Backend>
std::vector<double> train() {
  scale_model model(6);
  ppipe::pipeline_options options;
  options.ranks = 3;
  options.microbatches = 6;
  ppipe::pipeline<scale_model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, Backend> pipe(
      model, options, mse, [&](const ppipe::stage_info& stage) {
        for (int l = stage.first_layer; l < stage.end_layer; ++l) {
          const auto k = static_cast<std::size_t>(l);
          model.a[k] -= 0.05f * model.grad[k];
          model.grad[k] = 0.0f;
        }
      });
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{12, 4})};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{12, 4})};
  for (std::size_t i = 0; i < x[0].size(); ++i) {
    x[0][i] = static_cast<float>(i % 7) * 0.1f;
    y[0][i] = 0.5f * x[0][i];
  }
  std::vector<double> losses;
  for (int step = 0; step < 10; ++step) losses.push_back(pipe.train_step(x, y));
  return losses;
}

int main() {
  try {
    const std::vector<double> threads = train<ppipe::host_backend>();
    const std::vector<double> streams = train<ppipe::cpu_stream_backend>();
    std::printf("last loss: host backend %.17g, CPU-stream backend %.17g\n", threads.back(), streams.back());
    return threads == streams ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "backends_swap: %s\n", e.what());
    return 1;
  }
}
