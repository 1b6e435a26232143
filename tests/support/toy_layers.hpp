#pragma once
// toy::model written as typed layers: the same math, layer by layer, composed with
// ppipe::layer_stack instead of dispatching on the layer index. Layer 0 is an affine<0>; the rest
// are a repeated run of std::variant<affine<1>, affine<2>> (alternating), so one model exercises
// a single element, a repeated element and variant dispatch. Its API mirrors toy::model's, so the
// backend contract runs the same bodies on both and compares the bits.

#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "ppipe/model/layer_stack.hpp"
#include "ppipe/tensor/tensor_view.hpp"
#include "toy_model.hpp"

namespace toy {

// One layer of toy::model; Kind only makes distinct C++ types with the same math.
template <int Kind>
class affine {
 public:
  affine(int index, int width)
      : index_(index), width_(width), a_(0.9f + 0.03f * static_cast<float>(index)),
        b_(0.01f * static_cast<float>(index + 1)) {}

  std::vector<ppipe::shape> output_shapes(const std::vector<ppipe::shape>& in) const {
    if (in.size() != 2 || in[0].rank() != 2 || in[0][1] != width_ || in[1].rank() != 1 || in[1][0] != in[0][0]) {
      throw std::invalid_argument("toy layer " + std::to_string(index_) + " takes {[rows, " + std::to_string(width_) +
                                  "], [rows]} but got {" + ppipe::to_string(std::span<const ppipe::shape>(in)) + "}");
    }
    return in;
  }
  void forward(const ppipe::layer_context& ctx, const ppipe::payload& in, ppipe::payload& out) {
    hit(ctx.microbatch, false);
    affine_forward(a_, b_, in, out);
    if (misshaped(ctx.microbatch, false)) out[0] = ppipe::host_tensor(ppipe::shape{in[0].shape()[0] + 1, in[0].shape()[1]});
  }
  void backward(const ppipe::layer_context& ctx, const ppipe::payload& in, const ppipe::payload&,
                const ppipe::payload& g, ppipe::payload& gin) {
    hit(ctx.microbatch, true);
    affine_backward(a_, ga_, gb_, in, g, gin);
    if (!gin.empty() && misshaped(ctx.microbatch, true)) gin[0] = ppipe::host_tensor(ppipe::shape{in[0].shape()[0] + 1, in[0].shape()[1]});
  }
  void backward_input(const ppipe::layer_context& ctx, const ppipe::payload& in, const ppipe::payload&,
                      const ppipe::payload& g, ppipe::payload& gin) {
    hit(ctx.microbatch, true);
    affine_backward_input(a_, in, g, gin);
    if (!gin.empty() && misshaped(ctx.microbatch, true)) gin[0] = ppipe::host_tensor(ppipe::shape{in[0].shape()[0] + 1, in[0].shape()[1]});
  }
  void backward_weight(const ppipe::layer_context&, const ppipe::payload& in, const ppipe::payload&,
                       const ppipe::payload& g) {
    affine_backward_weight(ga_, gb_, in, g);
  }
  template <class F>
  void for_each_parameter(F&& f) {
    f(ppipe::tensor_view(std::span<float>(&a_, 1)), ppipe::tensor_view(std::span<float>(&ga_, 1)));
    f(ppipe::tensor_view(std::span<float>(&b_, 1)), ppipe::tensor_view(std::span<float>(&gb_, 1)));
  }
  std::string describe() const { return "affine<" + std::to_string(Kind) + "> " + std::to_string(index_); }

  void sgd(float lr) {
    a_ -= lr * ga_;
    b_ -= lr * gb_;
    ga_ = gb_ = 0.0f;
  }
  void zero_grad() { ga_ = gb_ = 0.0f; }
  void set_fault(const fault& f) { fault_ = f; }
  void set_width(int w) { width_ = w; }
  float a() const { return a_; }
  float b() const { return b_; }
  float grad_a() const { return ga_; }
  float grad_b() const { return gb_; }

 private:
  bool misshaped(int mb, bool backward) const {
    return fault_.misshape && index_ == fault_.layer && mb == fault_.microbatch && backward == fault_.in_backward;
  }
  void hit(int mb, bool backward) const {
    if (fault_.misshape || index_ != fault_.layer || mb != fault_.microbatch || backward != fault_.in_backward) return;
    if (fault_.stall.count() > 0) {
      std::this_thread::sleep_for(fault_.stall);
    } else {
      throw std::runtime_error("injected fault in layer " + std::to_string(index_));
    }
  }

  int index_;
  int width_;
  float a_;
  float b_;
  float ga_ = 0.0f;
  float gb_ = 0.0f;
  fault fault_;
};

using any_affine = std::variant<affine<1>, affine<2>>;
using layered_base = ppipe::layer_stack<affine<0>, std::vector<any_affine>>;

inline std::vector<any_affine> affine_run(int first, int end, int width) {
  std::vector<any_affine> out;
  for (int i = first; i < end; ++i) {
    if (i % 2 == 1) {
      out.emplace_back(affine<1>(i, width));
    } else {
      out.emplace_back(affine<2>(i, width));
    }
  }
  return out;
}

class layered : public layered_base {
 public:
  explicit layered(int layers, int width = 3) : layered_base(affine<0>(0, width), affine_run(1, layers, width)) {}

  void sgd(int first, int end, float lr) {
    for (int l = first; l < end; ++l) visit(l, [&](auto& x) { x.sgd(lr); });
  }
  void zero_grad() {
    for (int l = 0; l < num_layers(); ++l) visit(l, [](auto& x) { x.zero_grad(); });
  }
  void set_fault(fault f) {
    for (int l = 0; l < num_layers(); ++l) visit(l, [&](auto& x) { x.set_fault(f); });
  }
  void set_width(int layer, int w) { visit(layer, [&](auto& x) { x.set_width(w); }); }
  std::vector<float> a() const { return collect([](const auto& x) { return x.a(); }); }
  std::vector<float> b() const { return collect([](const auto& x) { return x.b(); }); }
  std::vector<float> grad_a() const { return collect([](const auto& x) { return x.grad_a(); }); }
  std::vector<float> grad_b() const { return collect([](const auto& x) { return x.grad_b(); }); }

 private:
  template <class Get>
  std::vector<float> collect(Get get) const {
    std::vector<float> out;
    for (int l = 0; l < num_layers(); ++l) visit(l, [&](const auto& x) { out.push_back(get(x)); });
    return out;
  }
};

}  // namespace toy
