#pragma once
/// @file
/// @brief ppipe::cuda::parameter: one parameter of a CUDA kit layer and its gradient accumulator,
/// in the GPU's memory, with the SGD update and the copies a test or checkpoint needs.

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <span>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "ppipe/backend/cuda/cublas.hpp"
#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/cuda/error.hpp"
#include "ppipe/model/model.hpp"

namespace ppipe::cuda {

/// @brief `size()` floats of a parameter and as many of its gradient, both on one GPU. Made
/// empty; upload() allocates them (cudaMalloc: parameters live as long as the model, outside any
/// step's stream-ordered pool) and zeroes the gradient. Copies share the memory.
class parameter {
 public:
  /// @brief Allocates value and gradient on GPU `ordinal`, copies `initial` into the value and
  /// zeroes the gradient; waits for both copies.
  /// @param ordinal the GPU, as cudaSetDevice numbers it
  /// @param initial the first values
  /// @param what the layer, for messages ("layer_norm 16 gamma")
  void upload(int ordinal, std::span<const float> initial, const char* what) {
    const detail::current_device on(ordinal);
    ordinal_ = ordinal;
    size_ = initial.size();
    value_ = allocate(size_, what);
    grad_ = allocate(size_, what);
    check(cudaMemcpy(value_.get(), initial.data(), initial.size_bytes(), cudaMemcpyHostToDevice),
          "cudaMemcpy (a layer's parameter to the GPU)");
    check(cudaMemset(grad_.get(), 0, bytes()), "cudaMemset (a layer's gradient)");
    // Both ran on the legacy stream, which the layers' streams do not wait for, and neither need
    // have finished when it returned.
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (a layer's parameter to the GPU)");
  }

  /// @brief Whether upload() has run.
  /// @return true once the memory is on the GPU
  [[nodiscard]] bool on_device() const noexcept { return value_ != nullptr; }
  /// @brief How many floats.
  /// @return the count; 0 before upload()
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// @brief The values, in device memory.
  /// @return a device pointer; nullptr before upload()
  [[nodiscard]] float* value() const noexcept { return value_.get(); }
  /// @brief The gradient accumulator, in device memory.
  /// @return a device pointer; nullptr before upload()
  [[nodiscard]] float* grad() const noexcept { return grad_.get(); }

  /// @brief value -= lr * grad, then grad = 0, enqueued on the stage's compute stream with its
  /// cuBLAS handle (the stage's ppipe::cuda::cublas_workspace).
  /// @param ctx the stage's device context (an optimizer hook's basic_stage_info gives it)
  /// @param lr the learning rate
  void sgd(device_context<device>& ctx, float lr) {
    cublasHandle_t h = ctx.slot<cublas_workspace>([] { return cublas_workspace{}; }).on(ctx.stream.handle());
    const float step = -lr;
    check_cublas(cublasSaxpy(h, static_cast<int>(size_), &step, grad_.get(), 1, value_.get(), 1),
                 "cublasSaxpy (sgd)");
    check(cudaMemsetAsync(grad_.get(), 0, bytes(), ctx.stream.handle()), "cudaMemsetAsync (sgd: zero the gradient)");
  }

  /// @brief The values copied to the host, after all work on the GPU has finished (a pipeline's
  /// optimizer hook may have enqueued an update that is still running).
  /// @return the values
  [[nodiscard]] std::vector<float> download() const {
    std::vector<float> out(size_);
    if (size_ == 0) return out;
    const detail::current_device on(ordinal_);
    // The layers' streams do not block with the legacy default stream: wait for the device.
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (before a parameter's download)");
    check(cudaMemcpy(out.data(), value_.get(), bytes(), cudaMemcpyDeviceToHost), "cudaMemcpy (a parameter to the host)");
    return out;
  }
  /// @brief The values of `parts`, one after the other, copied to the host once the GPU's work is
  /// done: a layer's weights as tests and checkpoints read them.
  /// @param parts the layer's parameters, in the order wanted
  /// @return their values
  static std::vector<float> download_all(std::initializer_list<const parameter*> parts) {
    std::vector<float> out;
    for (const parameter* part : parts) {
      const std::vector<float> values = part->download();
      out.insert(out.end(), values.begin(), values.end());
    }
    return out;
  }

 private:
  [[nodiscard]] std::size_t bytes() const noexcept { return size_ * sizeof(float); }
  static std::shared_ptr<float> allocate(std::size_t n, const char* what) {
    float* p = nullptr;
    const cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float));
    if (status != cudaSuccess) {
      ppipe::detail::fail(errc::backend, "cudaMalloc (", what, ": ", n, " floats) failed: ", cudaGetErrorName(status),
                          status == cudaErrorMemoryAllocation
                              ? "; the GPU is out of memory: put fewer layers on each GPU (more stages or GPUs)"
                              : "");
    }
    return std::shared_ptr<float>(p, [](float* q) { static_cast<void>(cudaFree(q)); });
  }

  int ordinal_ = 0;
  std::size_t size_ = 0;
  std::shared_ptr<float> value_, grad_;
};

/// @brief Every weight of `model` (a ppipe::layer_stack of kit layers), layer by layer, each
/// layer's as its download() gives them, once the GPU's work is done; layers without weights add
/// none. For tests, checks against an unpipelined run, and checkpoints.
/// @param model the model
/// @tparam Model the model's type
/// @return the weights
template <class Model>
std::vector<float> download_weights(const Model& model) {
  std::vector<float> out;
  for (int l = 0; l < model.num_layers(); ++l) {
    model.visit(l, [&](const auto& layer) {
      if constexpr (requires { layer.download(); }) {
        const std::vector<float> w = layer.download();
        out.insert(out.end(), w.begin(), w.end());
      }
    });
  }
  return out;
}

}  // namespace ppipe::cuda
