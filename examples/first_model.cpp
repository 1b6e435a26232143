// first_model: a model of one's own written as typed layers, the way docs/runtime.md and the
// README show it: six layers of four types, two tensors across the stage boundary, trained through
// a 2-rank pipeline and checked bit for bit against the same layers run one after the other.

#include <cmath>
#include <cstdio>
#include <span>
#include <utility>
#include <vector>

#include <ppipe/ppipe.hpp>

using ppipe::layer_context;
using ppipe::payload;
using ppipe::shape;

// [model]
// y = a * x, one trainable a per feature.
struct scale {
  std::vector<float> a, grad_a;
  explicit scale(int width) : a(static_cast<std::size_t>(width), 0.9f), grad_a(a.size(), 0.0f) {}
  std::vector<shape> output_shapes(const std::vector<shape>& in) const { return in; }
  void forward(const layer_context&, const payload& in, payload& out) {
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = a[i % a.size()] * in[0][i];
  }
  void backward(const layer_context&, const payload& in, const payload&, const payload& g, payload& g_in) {
    for (std::size_t i = 0; i < in[0].size(); ++i) {
      grad_a[i % a.size()] += g[0][i] * in[0][i];
      if (!g_in.empty()) g_in[0][i] = a[i % a.size()] * g[0][i];  // empty for the model's first layer
    }
  }
  void for_each_parameter(auto&& f) { f(ppipe::tensor_view(std::span(a)), ppipe::tensor_view(std::span(grad_a))); }
};
// y = tanh(x).
struct squash {
  std::vector<shape> output_shapes(const std::vector<shape>& in) const { return in; }
  void forward(const layer_context&, const payload& in, payload& out) {
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = std::tanh(in[0][i]);
  }
  void backward(const layer_context&, const payload&, const payload& out, const payload& g, payload& g_in) {
    for (std::size_t i = 0; i < out[0].size(); ++i) g_in[0][i] = g[0][i] * (1.0f - out[0][i] * out[0][i]);
  }
};
// x [rows, w] -> {x, s [rows, 1]}, s the row sums: two tensors cross to the next stage.
struct branch {
  std::vector<shape> output_shapes(const std::vector<shape>& in) const { return {in[0], shape{in[0][0], 1}}; }
  void forward(const layer_context&, const payload& in, payload& out) {
    const auto w = static_cast<std::size_t>(in[0].shape()[1]);
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = in[0][i];
    for (std::size_t i = 0; i < in[0].size(); ++i) out[1][i / w] += in[0][i];  // ppipe zeroed out
  }
  void backward(const layer_context&, const payload& in, const payload&, const payload& g, payload& g_in) {
    const auto w = static_cast<std::size_t>(in[0].shape()[1]);
    for (std::size_t i = 0; i < in[0].size(); ++i) g_in[0][i] = g[0][i] + g[1][i / w];
  }
};
// {x, s} -> x + 0.1 s, s broadcast along the row.
struct merge {
  std::vector<shape> output_shapes(const std::vector<shape>& in) const { return {in[0]}; }
  void forward(const layer_context&, const payload& in, payload& out) {
    const auto w = static_cast<std::size_t>(in[0].shape()[1]);
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = in[0][i] + 0.1f * in[1][i / w];
  }
  void backward(const layer_context&, const payload& in, const payload&, const payload& g, payload& g_in) {
    const auto w = static_cast<std::size_t>(in[0].shape()[1]);
    for (std::size_t i = 0; i < in[0].size(); ++i) g_in[0][i] = g[0][i], g_in[1][i / w] += 0.1f * g[0][i];
  }
};
// Six layers of four types; the pipeline splits them into stages.
auto make_model(int width) { return ppipe::layer_stack(scale(width), squash{}, branch{}, merge{}, scale(width), squash{}); }
// [model]

double mse(const payload& y, const payload& target, payload& grad, double scale_by) {
  double sum = 0.0;
  const auto n = static_cast<double>(y[0].size());
  for (std::size_t i = 0; i < y[0].size(); ++i) {
    const double d = y[0][i] - target[0][i];
    sum += d * d;
    grad[0][i] = static_cast<float>(2.0 * d / n * scale_by);
  }
  return sum / n;
}

int main() {
  const int width = 8;
  // [stack]
  auto model = make_model(width);
  ppipe::pipeline_options o;
  o.ranks = 2;
  o.microbatches = 4;
  const auto sgd = [](auto& m, int first, int end) {
    m.for_each_parameter(first, end, [](ppipe::tensor_view w, ppipe::tensor_view g) {
      for (std::size_t i = 0; i < w.elements; ++i) w.as<float>()[i] -= 0.05f * std::exchange(g.as<float>()[i], 0.0f);
    });
  };
  ppipe::pipeline<decltype(model)> pipe(model, o, mse,
                                        [&](const ppipe::stage_info& s) { sgd(model, s.first_layer, s.end_layer); });
  // [stack]

  // The same layers one after the other, microbatch by microbatch: what the pipeline must match.
  auto plain = make_model(width);
  payload x{ppipe::host_tensor(shape{16, width})};
  payload y{ppipe::host_tensor(shape{16, width})};
  for (std::size_t i = 0; i < x[0].size(); ++i) {
    x[0][i] = 0.05f * static_cast<float>(i % 13);
    y[0][i] = 0.3f;
  }
  bool same = true;
  for (int step = 1; step <= 20; ++step) {
    const double loss = pipe.train_step(x, y);
    double want = 0.0;
    for (int mb = 0; mb < o.microbatches; ++mb) {
      std::vector<payload> acts{ppipe::slice_rows(x, mb * 4, 4)};
      for (int l = 0; l < plain.num_layers(); ++l) {
        payload out;
        for (const shape& s : plain.output_shapes(l, ppipe::shapes_of(acts.back()))) out.emplace_back(s);
        plain.forward(l, layer_context{}, acts.back(), out);
        acts.push_back(std::move(out));
      }
      payload g{ppipe::host_tensor(acts.back()[0].shape())};
      want += 0.25 * mse(acts.back(), ppipe::slice_rows(y, mb * 4, 4), g, 0.25);
      for (int l = plain.num_layers() - 1; l >= 0; --l) {
        payload g_in;
        if (l > 0) {
          for (const auto& t : acts[static_cast<std::size_t>(l)]) g_in.emplace_back(t.shape());
        }
        plain.backward(l, layer_context{}, acts[static_cast<std::size_t>(l)], acts[static_cast<std::size_t>(l) + 1], g, g_in);
        g = std::move(g_in);
      }
    }
    sgd(plain, 0, plain.num_layers());
    same = same && loss == want;
    if (step == 1 || step % 5 == 0) std::printf("step %2d  loss %.6f\n", step, loss);
  }
  std::printf("two stages %s the layers run one after the other, bit for bit\n", same ? "match" : "DO NOT MATCH");
  return same ? 0 : 1;
}
