#pragma once
// The unpipelined reference the runtime's numerics are checked against: the same model, the same
// microbatch split (tensor_split's rule), the same accumulation order (microbatch 0, 1, ...), on
// one thread, with nothing of ppipe's runtime in between.

#include <cstdint>
#include <vector>

#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace reference {

inline std::vector<std::int64_t> rows_of(std::int64_t rows, int m) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(m), rows / m);
  for (std::int64_t i = 0; i < rows % m; ++i) ++out[static_cast<std::size_t>(i)];
  return out;
}

inline ppipe::payload zeros(const std::vector<ppipe::shape>& shapes) {
  ppipe::payload p;
  for (const auto& s : shapes) p.emplace_back(s);
  return p;
}

// Forward through every layer; returns each layer's input and, last, the output.
template <class Model>
std::vector<ppipe::payload> forward(Model& model, ppipe::payload x, int mb, ppipe::pass_mode mode) {
  std::vector<ppipe::payload> acts{std::move(x)};
  const ppipe::layer_context ctx{0, mb, mode};
  for (int l = 0; l < model.num_layers(); ++l) {
    ppipe::payload out = zeros(model.output_shapes(l, ppipe::shapes_of(acts.back())));
    model.forward(l, ctx, acts.back(), out);
    acts.push_back(std::move(out));
  }
  return acts;
}

// Gradients of one step accumulated in the model, microbatch by microbatch; returns the batch
// loss (microbatch losses weighted by their share of the rows, summed in microbatch order).
template <class Model, class Loss>
double accumulate(Model& model, const ppipe::payload& inputs, const ppipe::payload& targets, int m, Loss&& loss) {
  const std::int64_t rows = inputs[0].shape()[0];
  const auto sizes = rows_of(rows, m);
  double total = 0.0;
  std::int64_t first = 0;
  for (int mb = 0; mb < m; ++mb) {
    const std::int64_t n = sizes[static_cast<std::size_t>(mb)];
    const double scale = static_cast<double>(n) / static_cast<double>(rows);
    auto acts = forward(model, ppipe::slice_rows(inputs, first, n), mb, ppipe::pass_mode::training);
    const ppipe::payload target = ppipe::slice_rows(targets, first, n);
    ppipe::payload g = zeros(ppipe::shapes_of(acts.back()));
    total += loss(acts.back(), target, g, scale) * scale;
    const ppipe::layer_context ctx{0, mb, ppipe::pass_mode::training};
    for (int l = model.num_layers() - 1; l >= 0; --l) {
      const auto k = static_cast<std::size_t>(l);
      ppipe::payload gin = l > 0 ? zeros(ppipe::shapes_of(acts[k])) : ppipe::payload{};
      model.backward(l, ctx, acts[k], acts[k + 1], g, gin);
      g = std::move(gin);
    }
    first += n;
  }
  return total;
}

}  // namespace reference
