#pragma once
// The runtime tests' toy model (tests/support/toy_model.hpp) as CUDA kernels over device tensors,
// for the CUDA backend: every layer maps {x [rows, w], c [rows]} to {a*x + b, c/2 + (row sum of
// x)/10}. The kernels do the host model's arithmetic in the host model's order, each operation
// rounded on its own (no fused multiply-adds), so a pipeline on the GPU computes the host's bits.
// The launchers are compiled by nvcc (cuda_toy.cu); the model is plain C++.

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include <ppipe/backend/cuda/cuda_device.hpp>
#include <ppipe/backend/cuda/error.hpp>
#include <ppipe/model/model.hpp>
#include <ppipe/tensor/device_tensor.hpp>
#include <ppipe/tensor/tensor.hpp>

namespace cuda_toy {

// One layer's forward and backward, and the loss, enqueued on `s`. `gin` and `gin_c` may be null
// (no input gradient wanted); `ga` and `gb` accumulate the layer's weight gradients.
void forward(cudaStream_t s, float a, float b, const float* x, const float* c, float* y, float* yc, std::size_t rows,
             std::size_t w);
void backward(cudaStream_t s, float a, const float* x, const float* g, const float* gc, float* gin, float* gin_c,
              float* ga, float* gb, std::size_t rows, std::size_t w);
void loss(cudaStream_t s, const float* y, const float* yc, const float* t, const float* tc, float* g, float* gc,
          double scale, double* value, std::size_t rows, std::size_t w);

using payload = ppipe::basic_payload<ppipe::device_tensor>;
using context = ppipe::basic_layer_context<ppipe::cuda::device>;

// Pinned host memory the GPU writes: the optimizer hook runs as host work on the stream, where no
// CUDA call is allowed, and reads the gradients there.
class pinned_floats {
 public:
  explicit pinned_floats(std::size_t n) : n_(n) {
    ppipe::cuda::check(cudaMallocHost(reinterpret_cast<void**>(&p_), n * sizeof(float)), "cudaMallocHost");
    for (std::size_t i = 0; i < n; ++i) p_[i] = 0.0f;
  }
  ~pinned_floats() { static_cast<void>(cudaFreeHost(p_)); }
  pinned_floats(const pinned_floats&) = delete;
  pinned_floats& operator=(const pinned_floats&) = delete;
  float& operator[](std::size_t i) { return p_[i]; }
  float operator[](std::size_t i) const { return p_[i]; }
  float* data() { return p_; }
  [[nodiscard]] std::size_t size() const { return n_; }

 private:
  float* p_ = nullptr;
  std::size_t n_;
};

class model {
 public:
  static constexpr bool enqueues_work = true;

  explicit model(int layers, int width = 3)
      : a_(static_cast<std::size_t>(layers)), b_(a_.size()), ga_(a_.size()), gb_(a_.size()), width_(width) {
    for (std::size_t l = 0; l < a_.size(); ++l) {  // toy::model's values
      a_[l] = 0.9f + 0.03f * static_cast<float>(l);
      b_[l] = 0.01f * static_cast<float>(l + 1);
    }
  }

  int num_layers() const { return static_cast<int>(a_.size()); }
  std::vector<ppipe::shape> output_shapes(int layer, const std::vector<ppipe::shape>& in) const {
    if (in.size() != 2 || in[0].rank() != 2 || in[0][1] != width_ || in[1].rank() != 1 || in[1][0] != in[0][0]) {
      throw std::invalid_argument("cuda toy layer " + std::to_string(layer) + " takes {[rows, " +
                                  std::to_string(width_) + "], [rows]}");
    }
    return in;
  }
  void forward(int layer, const context& ctx, const payload& in, payload& out) {
    const auto l = static_cast<std::size_t>(layer);
    cuda_toy::forward(ctx.device->stream.handle(), a_[l], b_[l], in[0].data<float>(), in[1].data<float>(),
                      out[0].data<float>(), out[1].data<float>(), rows(in), static_cast<std::size_t>(width_));
  }
  void backward(int layer, const context& ctx, const payload& in, const payload& /*out*/, const payload& g,
                payload& gin) {
    const auto l = static_cast<std::size_t>(layer);
    cuda_toy::backward(ctx.device->stream.handle(), a_[l], in[0].data<float>(), g[0].data<float>(), g[1].data<float>(),
                       gin.empty() ? nullptr : gin[0].data<float>(), gin.empty() ? nullptr : gin[1].data<float>(),
                       ga_.data() + l, gb_.data() + l, rows(in), static_cast<std::size_t>(width_));
  }

  // toy::model::sgd, on the host (the hook runs after the step's kernels, in stream order).
  void sgd(int first, int end, float lr) {
    for (auto l = static_cast<std::size_t>(first); l < static_cast<std::size_t>(end); ++l) {
      a_[l] -= lr * ga_[l];
      b_[l] -= lr * gb_[l];
      ga_[l] = gb_[l] = 0.0f;
    }
  }
  const std::vector<float>& a() const { return a_; }
  const std::vector<float>& b() const { return b_; }

 private:
  static std::size_t rows(const payload& p) { return static_cast<std::size_t>(p[1].shape()[0]); }

  std::vector<float> a_, b_;
  pinned_floats ga_, gb_;
  int width_;
};

// toy::loss over device tensors: a ppipe::device_loss_function that launches its kernel.
inline ppipe::device_loss_function<ppipe::device_tensor, context> device_loss() {
  return [](const context& ctx, const payload& y, const payload& t, payload& g, double scale,
            const ppipe::device_tensor& value) {
    cuda_toy::loss(ctx.device->stream.handle(), y[0].data<float>(), y[1].data<float>(), t[0].data<float>(),
                   t[1].data<float>(), g[0].data<float>(), g[1].data<float>(), scale, value.data<double>(),
                   static_cast<std::size_t>(y[1].shape()[0]), static_cast<std::size_t>(y[0].shape()[1]));
  };
}

}  // namespace cuda_toy
