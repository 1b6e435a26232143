#pragma once
// A model whose stage boundaries carry bf16 activations next to an i32 tensor, for the tests that
// payloads of every dtype cross boundaries bit for bit (host and MPI backends).
//
// Layer l maps [rows, width] to [rows, width]: y = W x + b + ids / 64, computed in float from
// its input (f32 or bf16, widened exactly) and written as bf16 for even l and f32 for odd l
// (rounded to nearest even), so that boundaries alternate f32 -> bf16 -> f32. Every payload is
// {x, ids}: ids, an i32 tensor [rows], is passed through unchanged and feeds every layer, so a
// misdelivered id changes the numbers. Gradients travel in the dtypes of the activations they
// belong to. Parameters are f32 and reach the optimizer through ppipe::tensor_view.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include "ppipe/tensor/dtype.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/tensor/tensor_view.hpp"

namespace mixed {

// Element i of an f32, bf16 or f16 tensor, as float.
inline float get(const ppipe::host_tensor& t, std::size_t i) {
  if (t.dtype() == ppipe::dtype::bf16) return static_cast<float>(t.values<ppipe::bfloat16>()[i]);
  if (t.dtype() == ppipe::dtype::f16) return static_cast<float>(t.values<ppipe::float16>()[i]);
  return t.values()[i];
}

// Writes element i of an f32, bf16 or f16 tensor from a float (rounded to nearest even).
inline void put(ppipe::host_tensor& t, std::size_t i, float v) {
  if (t.dtype() == ppipe::dtype::bf16) {
    t.values<ppipe::bfloat16>()[i] = ppipe::bfloat16(v);
  } else if (t.dtype() == ppipe::dtype::f16) {
    t.values<ppipe::float16>()[i] = ppipe::float16(v);
  } else {
    t.values()[i] = v;
  }
}

class model {
 public:
  // `even` and `odd`: the output dtypes of even and odd layers (f32 and bf16 only in the
  // numerics tests; the agreement test makes processes differ in them).
  model(int layers, int width, ppipe::dtype even = ppipe::dtype::bf16, ppipe::dtype odd = ppipe::dtype::f32)
      : layers_(layers), width_(width), even_(even), odd_(odd) {
    const auto n = static_cast<std::size_t>(width);
    for (int l = 0; l < layers; ++l) {
      std::vector<float> w(n * n), b(n);
      for (std::size_t k = 0; k < w.size(); ++k) {
        w[k] = static_cast<float>((static_cast<int>(k) * 7 + l * 3) % 11 - 5) / 16.0f;
      }
      for (std::size_t k = 0; k < b.size(); ++k) b[k] = static_cast<float>(static_cast<int>(k) - l) / 32.0f;
      w_.push_back(std::move(w));
      b_.push_back(std::move(b));
      gw_.emplace_back(n * n, 0.0f);
      gb_.emplace_back(n, 0.0f);
    }
  }

  [[nodiscard]] int num_layers() const { return layers_; }
  // Layer l's output dtype: bf16 for even l, f32 for odd l (unless built with others).
  [[nodiscard]] ppipe::dtype out_dtype(int layer) const { return layer % 2 == 0 ? even_ : odd_; }

  [[nodiscard]] std::vector<ppipe::shape> output_shapes(int layer, const std::vector<ppipe::shape>& in) const {
    const ppipe::dtype want = layer == 0 ? ppipe::dtype::f32 : out_dtype(layer - 1);
    if (in.size() != 2 || in[0].rank() != 2 || in[0][1] != width_ || in[0].dtype() != want ||
        in[1] != ppipe::shape({in[0][0]}, ppipe::dtype::i32)) {
      throw std::invalid_argument("mixed::model: bad input shapes " + ppipe::to_string(std::span(in)));
    }
    return {ppipe::shape({in[0][0], width_}, out_dtype(layer)), in[1]};
  }

  void forward(int layer, const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) const {
    const auto n = static_cast<std::size_t>(width_);
    const auto rows = static_cast<std::size_t>(in[0].shape()[0]);
    const auto& w = w_[static_cast<std::size_t>(layer)];
    const auto& b = b_[static_cast<std::size_t>(layer)];
    const std::span<const std::int32_t> ids = in[1].values<std::int32_t>();
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t j = 0; j < n; ++j) {
        float acc = b[j] + static_cast<float>(ids[r]) / 64.0f;
        for (std::size_t k = 0; k < n; ++k) acc += w[j * n + k] * get(in[0], r * n + k);
        put(out[0], r * n + j, acc);
      }
    }
    std::copy(ids.begin(), ids.end(), out[1].values<std::int32_t>().begin());
  }

  void backward(int layer, const ppipe::layer_context&, const ppipe::payload& in, const ppipe::payload& /*out*/,
                const ppipe::payload& grad_out, ppipe::payload& grad_in) {
    const auto n = static_cast<std::size_t>(width_);
    const auto rows = static_cast<std::size_t>(in[0].shape()[0]);
    const auto& w = w_[static_cast<std::size_t>(layer)];
    auto& gw = gw_[static_cast<std::size_t>(layer)];
    auto& gb = gb_[static_cast<std::size_t>(layer)];
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t j = 0; j < n; ++j) {
        const float g = get(grad_out[0], r * n + j);
        gb[j] += g;
        for (std::size_t k = 0; k < n; ++k) gw[j * n + k] += g * get(in[0], r * n + k);
      }
      if (grad_in.empty()) continue;
      for (std::size_t k = 0; k < n; ++k) {
        float acc = 0.0f;
        for (std::size_t j = 0; j < n; ++j) acc += w[j * n + k] * get(grad_out[0], r * n + j);
        put(grad_in[0], r * n + k, acc);
      }
    }
  }

  template <class F>
  void for_each_parameter(int first, int end, F&& f) {
    for (int l = first; l < end; ++l) {
      const auto i = static_cast<std::size_t>(l);
      f(ppipe::tensor_view(std::span<float>(w_[i])), ppipe::tensor_view(std::span<float>(gw_[i])));
      f(ppipe::tensor_view(std::span<float>(b_[i])), ppipe::tensor_view(std::span<float>(gb_[i])));
    }
  }

  // Plain SGD through the typed views; zeroes the gradients.
  void sgd(int first, int end, float lr) {
    for_each_parameter(first, end, [lr](ppipe::tensor_view value, ppipe::tensor_view grad) {
      const std::span<float> v = value.as<float>();
      const std::span<float> g = grad.as<float>();
      for (std::size_t k = 0; k < v.size(); ++k) {
        v[k] -= lr * g[k];
        g[k] = 0.0f;
      }
    });
  }

  [[nodiscard]] const std::vector<std::vector<float>>& weights() const { return w_; }
  [[nodiscard]] const std::vector<std::vector<float>>& biases() const { return b_; }

 private:
  int layers_;
  int width_;
  ppipe::dtype even_;
  ppipe::dtype odd_;
  std::vector<std::vector<float>> w_, b_, gw_, gb_;
};

// Mean squared error of output 0 (f32 or bf16) against target 0 (f32), computed in double in a
// fixed order; the gradient goes into grad[0] in the output's dtype, the i32 tensor gets none.
inline double loss(const ppipe::payload& out, const ppipe::payload& target, ppipe::payload& grad, double scale) {
  const std::size_t n = out[0].size();
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(get(out[0], i)) - static_cast<double>(target[0].values()[i]);
    sum += d * d;
    put(grad[0], i, static_cast<float>(2.0 * d * scale / static_cast<double>(n)));
  }
  return sum / static_cast<double>(n);
}

// A batch {x [rows, width] f32, ids [rows] i32}, different for each `salt`.
inline ppipe::payload batch(std::int64_t rows, int width, int salt) {
  ppipe::host_tensor x(ppipe::shape{rows, width});
  for (std::size_t i = 0; i < x.size(); ++i) {
    x.values()[i] = static_cast<float>((static_cast<int>(i) * 5 + salt * 3) % 13 - 6) / 8.0f;
  }
  std::vector<std::int32_t> ids(static_cast<std::size_t>(rows));
  for (std::size_t r = 0; r < ids.size(); ++r) ids[r] = static_cast<std::int32_t>((r * 3 + static_cast<std::size_t>(salt)) % 7);
  return {std::move(x), ppipe::host_tensor(ppipe::shape({rows}, ppipe::dtype::i32), std::move(ids))};
}

// The target: one f32 tensor [rows, width] (the ids are not a target; the loss reads tensor 0).
inline ppipe::payload target(std::int64_t rows, int width, int salt) {
  ppipe::host_tensor y(ppipe::shape{rows, width});
  for (std::size_t i = 0; i < y.size(); ++i) y.values()[i] = static_cast<float>((static_cast<int>(i) + salt) % 5) / 4.0f;
  return {std::move(y)};
}

}  // namespace mixed
