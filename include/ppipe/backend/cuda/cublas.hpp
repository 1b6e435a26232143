#pragma once
/// @file
/// @brief cuBLAS in ppipe: failures as ppipe::error, and what a stage's cuBLAS layers share (their
/// handle, and a vector of ones for bias sums), kept in the stage's device slot.

#include <cstddef>
#include <memory>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/cuda/error.hpp"
#include "ppipe/error.hpp"
#include "ppipe/model/model.hpp"

namespace ppipe::cuda {

/// @brief Throws ppipe::error (errc::backend) naming the call and cuBLAS's status, unless success.
/// @param status what cuBLAS returned
/// @param what the call, e.g. "cublasSgemm (linear 16->4 forward)"
inline void check_cublas(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  ppipe::detail::fail(errc::backend, what, " failed: cuBLAS status ", static_cast<int>(status), " ",
                      cublasGetStatusName(status), " (", cublasGetStatusString(status), ")",
                      status == CUBLAS_STATUS_ALLOC_FAILED ? "; the GPU is out of memory: use more ranks or smaller microbatches"
                                                           : "");
}

/// @brief What the cuBLAS layers of one stage share, in the stage's device slot
/// (`ctx.device->slot<cublas_workspace>(...)`): one handle, made on the rank's thread (bound to the
/// GPU) at first use, a device vector of ones as long as the largest microbatch so far (a bias
/// is added and summed with it), and scratch memory for kernels. Copies share all three.
class cublas_workspace {
 public:
  /// @brief The handle, set to run on `stream`.
  /// @param stream the stage's compute stream
  /// @return the handle
  cublasHandle_t on(cudaStream_t stream) {
    if (!handle_) {
      cublasHandle_t h = nullptr;
      check_cublas(cublasCreate(&h), "cublasCreate");
      handle_ = std::shared_ptr<cublasContext>(h, [](cublasHandle_t p) { static_cast<void>(cublasDestroy(p)); });
    }
    check_cublas(cublasSetStream(handle_.get(), stream), "cublasSetStream");
    return handle_.get();
  }

  /// @brief At least `n` ones in device memory. Grown (synchronously, once per new size) only
  /// when a microbatch has more rows than any before.
  /// @param n how many
  /// @return the ones
  const float* ones(std::size_t n) {
    if (n > ones_count_) {
      float* p = nullptr;
      check(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float)), "cudaMalloc (cuBLAS layers' ones)");
      ones_ = std::shared_ptr<float>(p, [](float* q) { static_cast<void>(cudaFree(q)); });
      const std::vector<float> host(n, 1.0f);
      check(cudaMemcpy(p, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy (cuBLAS layers' ones)");
      ones_count_ = n;
    }
    return ones_.get();
  }

  /// @brief At least `n` floats of device memory that a layer may use within one call's work on
  /// the stage's stream (the next call on that stream may overwrite them). Grown like ones().
  /// @param n how many
  /// @return the floats
  float* scratch(std::size_t n) {
    if (n > scratch_count_) {
      float* p = nullptr;
      // cudaFree of the smaller block waits for the work that may still use it.
      check(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float)), "cudaMalloc (CUDA layers' scratch)");
      scratch_ = std::shared_ptr<float>(p, [](float* q) { static_cast<void>(cudaFree(q)); });
      scratch_count_ = n;
    }
    return scratch_.get();
  }

  /// @brief The workspace of the stage whose context `ctx` is.
  /// @param ctx a layer's context on the CUDA backend
  /// @return the stage's workspace
  static cublas_workspace& of(const basic_layer_context<device>& ctx) {
    return ctx.device->slot<cublas_workspace>([] { return cublas_workspace{}; });
  }

 private:
  std::shared_ptr<cublasContext> handle_;
  std::shared_ptr<float> ones_, scratch_;
  std::size_t ones_count_ = 0, scratch_count_ = 0;
};

}  // namespace ppipe::cuda
