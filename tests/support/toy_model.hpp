#pragma once
// A small model for the runtime's tests: every layer maps a two-tensor payload
// {x [rows, width], c [rows]} to {a*x + b, c/2 + (row sum of x)/10}, so payloads hold tensors of
// different shapes and both tensors carry gradient. It can be told to throw, to stall or to write a
// tensor of the wrong shape in a given layer and microbatch, to test faults, the watchdog and checks.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <thread>
#include <vector>

#include "ppipe/model/model.hpp"
#include "ppipe/tensor/tensor_view.hpp"

namespace toy {

struct fault {
  int layer = -1;
  int microbatch = -1;
  bool in_backward = false;
  std::chrono::milliseconds stall{0};  // 0: throw; otherwise sleep this long
  bool misshape = false;  // instead: put a tensor of one row more in place of x's output (or gradient)
};

// One layer's math, shared by toy::model and toy::layered (toy_layers.hpp) so that they agree.
inline void affine_forward(float a, float b, const ppipe::payload& in, ppipe::payload& out) {
  const std::size_t rows = in[1].size();
  const std::size_t w = rows ? in[0].size() / rows : 0;
  for (std::size_t r = 0; r < rows; ++r) {
    float sum = 0.0f;
    for (std::size_t j = 0; j < w; ++j) {
      const float x = in[0][r * w + j];
      out[0][r * w + j] = a * x + b;
      sum += x;
    }
    out[1][r] = 0.5f * in[1][r] + 0.1f * sum;
  }
}
// The two halves of affine_backward, for split-backward schedules: the same sums in the same order,
// so the bits match the full backward's.
inline void affine_backward_input(float a, const ppipe::payload& in, const ppipe::payload& g, ppipe::payload& gin) {
  if (gin.empty()) return;
  const std::size_t rows = in[1].size();
  const std::size_t w = rows ? in[0].size() / rows : 0;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t j = 0; j < w; ++j) gin[0][r * w + j] = a * g[0][r * w + j] + 0.1f * g[1][r];
    gin[1][r] = 0.5f * g[1][r];
  }
}
inline void affine_backward_weight(float& ga, float& gb, const ppipe::payload& in, const ppipe::payload& g) {
  for (std::size_t i = 0; i < in[0].size(); ++i) {
    ga += g[0][i] * in[0][i];
    gb += g[0][i];
  }
}
inline void affine_backward(float a, float& ga, float& gb, const ppipe::payload& in, const ppipe::payload& g,
                            ppipe::payload& gin) {
  const std::size_t rows = in[1].size();
  const std::size_t w = rows ? in[0].size() / rows : 0;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t j = 0; j < w; ++j) {
      const std::size_t i = r * w + j;
      ga += g[0][i] * in[0][i];
      gb += g[0][i];
      if (!gin.empty()) gin[0][i] = a * g[0][i] + 0.1f * g[1][r];
    }
    if (!gin.empty()) gin[1][r] = 0.5f * g[1][r];
  }
}

class model {
 public:
  explicit model(int layers, int width = 3)
      : a_(static_cast<std::size_t>(layers)), b_(a_.size()), ga_(a_.size(), 0.0f), gb_(a_.size(), 0.0f),
        width_(a_.size(), width) {
    for (std::size_t l = 0; l < a_.size(); ++l) {
      a_[l] = 0.9f + 0.03f * static_cast<float>(l);
      b_[l] = 0.01f * static_cast<float>(l + 1);
    }
  }

  int num_layers() const { return static_cast<int>(a_.size()); }
  std::vector<ppipe::shape> output_shapes(int layer, const std::vector<ppipe::shape>& in) const {
    const auto w = width_[static_cast<std::size_t>(layer)];
    if (in.size() != 2 || in[0].rank() != 2 || in[0][1] != w || in[1].rank() != 1 || in[1][0] != in[0][0]) {
      throw std::invalid_argument("toy layer " + std::to_string(layer) + " takes {[rows, " + std::to_string(w) +
                                  "], [rows]} but got {" + ppipe::to_string(std::span<const ppipe::shape>(in)) + "}");
    }
    return in;
  }
  void forward(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, ppipe::payload& out) {
    hit(layer, ctx.microbatch, false);
    const auto l = static_cast<std::size_t>(layer);
    affine_forward(a_[l], b_[l], in, out);
    if (misshaped(layer, ctx.microbatch, false)) out[0] = ppipe::host_tensor(ppipe::shape{in[0].shape()[0] + 1, in[0].shape()[1]});
  }
  void backward(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, const ppipe::payload&,
                const ppipe::payload& g, ppipe::payload& gin) {
    hit(layer, ctx.microbatch, true);
    const auto l = static_cast<std::size_t>(layer);
    affine_backward(a_[l], ga_[l], gb_[l], in, g, gin);
    if (!gin.empty() && misshaped(layer, ctx.microbatch, true)) gin[0] = ppipe::host_tensor(ppipe::shape{in[0].shape()[0] + 1, in[0].shape()[1]});
  }
  // The split backward (zero-bubble schedules, DualPipeV): a fault in the backward strikes its
  // input-gradient half.
  void backward_input(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, const ppipe::payload&,
                      const ppipe::payload& g, ppipe::payload& gin) {
    hit(layer, ctx.microbatch, true);
    affine_backward_input(a_[static_cast<std::size_t>(layer)], in, g, gin);
    if (!gin.empty() && misshaped(layer, ctx.microbatch, true)) gin[0] = ppipe::host_tensor(ppipe::shape{in[0].shape()[0] + 1, in[0].shape()[1]});
  }
  void backward_weight(int layer, const ppipe::layer_context&, const ppipe::payload& in, const ppipe::payload&,
                       const ppipe::payload& g) {
    const auto l = static_cast<std::size_t>(layer);
    affine_backward_weight(ga_[l], gb_[l], in, g);
  }

  void sgd(int first, int end, float lr) {
    for (auto l = static_cast<std::size_t>(first); l < static_cast<std::size_t>(end); ++l) {
      a_[l] -= lr * ga_[l];
      b_[l] -= lr * gb_[l];
      ga_[l] = gb_[l] = 0.0f;
    }
  }

  // Each layer's a and b with their gradients, as data-parallel replicas average them.
  template <class F>
  void for_each_parameter(int first, int end, F&& f) {
    for (auto l = static_cast<std::size_t>(first); l < static_cast<std::size_t>(end); ++l) {
      f(ppipe::tensor_view(std::span<float>(&a_[l], 1)), ppipe::tensor_view(std::span<float>(&ga_[l], 1)));
      f(ppipe::tensor_view(std::span<float>(&b_[l], 1)), ppipe::tensor_view(std::span<float>(&gb_[l], 1)));
    }
  }

  // A failed step leaves the gradients it accumulated; a caller drops them before the next step.
  void zero_grad() {
    std::fill(ga_.begin(), ga_.end(), 0.0f);
    std::fill(gb_.begin(), gb_.end(), 0.0f);
  }

  void set_fault(fault f) { fault_ = f; }
  void set_width(int layer, int w) { width_[static_cast<std::size_t>(layer)] = w; }
  const std::vector<float>& a() const { return a_; }
  const std::vector<float>& b() const { return b_; }
  const std::vector<float>& grad_a() const { return ga_; }
  const std::vector<float>& grad_b() const { return gb_; }

 private:
  bool misshaped(int layer, int mb, bool backward) const {
    return fault_.misshape && layer == fault_.layer && mb == fault_.microbatch && backward == fault_.in_backward;
  }
  void hit(int layer, int mb, bool backward) const {
    if (fault_.misshape || layer != fault_.layer || mb != fault_.microbatch || backward != fault_.in_backward) return;
    if (fault_.stall.count() > 0) {
      std::this_thread::sleep_for(fault_.stall);
    } else {
      throw std::runtime_error("injected fault in layer " + std::to_string(layer));
    }
  }

  std::vector<float> a_, b_, ga_, gb_;
  std::vector<int> width_;
  fault fault_;
};

// Loss over both tensors: mean squared error of x plus mean squared error of c.
inline double loss(const ppipe::payload& out, const ppipe::payload& target, ppipe::payload& grad, double scale) {
  double total = 0.0;
  for (std::size_t k = 0; k < 2; ++k) {
    const auto n = static_cast<double>(out[k].size());
    double sum = 0.0;
    for (std::size_t i = 0; i < out[k].size(); ++i) {
      const double d = static_cast<double>(out[k][i]) - static_cast<double>(target[k][i]);
      sum += d * d;
      grad[k][i] = static_cast<float>(scale * 2.0 * d / n);
    }
    total += sum / n;
  }
  return total;
}

// A batch {x [rows, width], c [rows]} with values from a simple formula.
inline ppipe::payload batch(std::int64_t rows, std::int64_t width, float salt) {
  ppipe::payload p{ppipe::host_tensor(ppipe::shape{rows, width}), ppipe::host_tensor(ppipe::shape{rows})};
  for (std::size_t i = 0; i < p[0].size(); ++i) p[0][i] = std::sin(static_cast<float>(i) * 0.37f + salt);
  for (std::size_t i = 0; i < p[1].size(); ++i) p[1][i] = std::cos(static_cast<float>(i) * 0.21f + salt);
  return p;
}

}  // namespace toy
