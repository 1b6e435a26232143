#pragma once
// A sequential model that can be told to fail: a layer's forward or backward throws, sleeps for a
// long time, kills its own process (SIGKILL, as `kill -9` would), or (forward) writes an output one
// column wider than output_shapes() says, when it runs for a chosen microbatch. Everything else goes to the layer kit's
// sequential model.

#include <chrono>
#include <csignal>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ppipe/layers/layers.hpp>

namespace mpi_test {

class faulty {
 public:
  enum class fault { none, throw_in_forward, throw_in_backward, sleep_in_forward, wrong_shape_in_forward, die_in_forward };

  explicit faulty(ppipe::layers::sequential model) : model_(std::move(model)) {}

  void arm(fault f, int layer, int microbatch) {
    fault_ = f;
    layer_ = layer;
    microbatch_ = microbatch;
  }
  void disarm() { fault_ = fault::none; }

  [[nodiscard]] int num_layers() const { return model_.num_layers(); }
  [[nodiscard]] std::vector<ppipe::shape> output_shapes(int layer, const std::vector<ppipe::shape>& in) const {
    return model_.output_shapes(layer, in);
  }
  void forward(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, ppipe::payload& out) {
    if (hit(layer, ctx, fault::throw_in_forward)) {
      throw std::runtime_error("injected fault in the forward of layer " + std::to_string(layer));
    }
    if (hit(layer, ctx, fault::sleep_in_forward)) std::this_thread::sleep_for(std::chrono::seconds(30));
    if (hit(layer, ctx, fault::die_in_forward)) std::raise(SIGKILL);
    model_.forward(layer, ctx, in, out);
    if (hit(layer, ctx, fault::wrong_shape_in_forward)) {
      const auto& dims = out.front().shape().dims();
      out.front() = ppipe::host_tensor(ppipe::shape{dims.front(), dims.back() + 1});
    }
  }
  void backward(int layer, const ppipe::layer_context& ctx, const ppipe::payload& in, const ppipe::payload& out,
                const ppipe::payload& grad_out, ppipe::payload& grad_in) {
    if (hit(layer, ctx, fault::throw_in_backward)) {
      throw std::runtime_error("injected fault in the backward of layer " + std::to_string(layer));
    }
    model_.backward(layer, ctx, in, out, grad_out, grad_in);
  }

  template <class F>
  void for_each_parameter(int first, int end, F&& f) {
    model_.for_each_parameter(first, end, std::forward<F>(f));
  }

  ppipe::layers::sequential& inner() { return model_; }

 private:
  [[nodiscard]] bool hit(int layer, const ppipe::layer_context& ctx, fault f) const {
    return fault_ == f && layer == layer_ && ctx.microbatch == microbatch_;
  }

  ppipe::layers::sequential model_;
  fault fault_ = fault::none;
  int layer_ = -1;
  int microbatch_ = -1;
};

}  // namespace mpi_test
