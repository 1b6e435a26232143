// The Conan package's test: a two-rank pipeline of the user's own layers trains, and its loss
// falls; with the mpi component, the same model as an SPMD pipeline of one MPI process.
#include <cstdio>
#include <span>
#include <utility>
#include <vector>

#include <ppipe/ppipe.hpp>
#if defined(TEST_PPIPE_MPI)
#include <ppipe/mpi.hpp>
#endif
#if defined(TEST_PPIPE_NCCL)
#include <ppipe/nccl.hpp>
#elif defined(TEST_PPIPE_CUDA)
#include <ppipe/cuda.hpp>
#endif

namespace {

// y = a * x, one trainable a per feature.
struct scale {
  std::vector<float> a, grad_a;
  explicit scale(int width) : a(static_cast<std::size_t>(width), 0.9f), grad_a(a.size(), 0.0f) {}
  std::vector<ppipe::shape> output_shapes(const std::vector<ppipe::shape>& in) const { return in; }
  void forward(const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) {
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = a[i % a.size()] * in[0][i];
  }
  void backward(const ppipe::layer_context&, const ppipe::payload& in, const ppipe::payload&, const ppipe::payload& g,
                ppipe::payload& g_in) {
    for (std::size_t i = 0; i < in[0].size(); ++i) {
      grad_a[i % a.size()] += g[0][i] * in[0][i];
      if (!g_in.empty()) g_in[0][i] = a[i % a.size()] * g[0][i];
    }
  }
  void for_each_parameter(auto&& f) { f(ppipe::tensor_view(std::span(a)), ppipe::tensor_view(std::span(grad_a))); }
};

double mse(const ppipe::payload& y, const ppipe::payload& target, ppipe::payload& grad, double scale_by) {
  double sum = 0.0;
  const auto n = static_cast<double>(y[0].size());
  for (std::size_t i = 0; i < y[0].size(); ++i) {
    const double d = y[0][i] - target[0][i];
    sum += d * d;
    grad[0][i] = static_cast<float>(2.0 * d / n * scale_by);
  }
  return sum / n;
}

template <class Model>
void sgd(Model& m, int first, int end) {
  m.for_each_parameter(first, end, [](ppipe::tensor_view w, ppipe::tensor_view g) {
    for (std::size_t i = 0; i < w.elements; ++i) w.as<float>()[i] -= 0.5f * std::exchange(g.as<float>()[i], 0.0f);
  });
}

// Trains 20 steps towards y = 0.3 x; true when the loss fell by half.
template <class Pipeline>
bool loss_falls(Pipeline& pipe) {
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{8, 4})};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{8, 4})};
  for (std::size_t i = 0; i < x[0].size(); ++i) {
    x[0][i] = 0.1f * static_cast<float>(i % 7 + 1);
    y[0][i] = 0.3f * x[0][i];
  }
  const double first = pipe.train_step(x, y);
  double last = first;
  for (int step = 0; step < 20; ++step) last = pipe.train_step(x, y);
  std::printf("loss %.6f -> %.6f\n", first, last);
  return last < 0.5 * first;
}

}  // namespace

int main(int argc, char** argv) {
  std::printf("ppipe %s\n", PPIPE_VERSION_STRING);
  auto model = ppipe::layer_stack(scale(4), scale(4), scale(4), scale(4));
  ppipe::pipeline_options o;
  o.ranks = 2;
  o.microbatches = 4;
  ppipe::pipeline<decltype(model)> pipe(model, o, mse, [&](const ppipe::stage_info& s) {
    sgd(model, s.first_layer, s.end_layer);
  });
  bool ok = loss_falls(pipe);
#if defined(TEST_PPIPE_MPI)
  const ppipe::mpi::session mpi(&argc, &argv);
  auto spmd_model = ppipe::layer_stack(scale(4), scale(4), scale(4), scale(4));
  o.ranks = 0;  // the communicator's size
  ppipe::mpi::pipeline<decltype(spmd_model)> spmd(
      spmd_model, o, mse, [&](const ppipe::stage_info& s) { sgd(spmd_model, s.first_layer, s.end_layer); },
      ppipe::mpi::transport(MPI_COMM_WORLD));
  std::printf("mpi: %d process(es)\n", mpi.size());
  ok = loss_falls(spmd) && ok;
#else
  static_cast<void>(argc);
  static_cast<void>(argv);
#endif
#if defined(TEST_PPIPE_CUDA)
  std::printf("cuda: %d device(s) visible\n", ppipe::cuda::device_count());
#endif
  return ok ? 0 : 1;
}
