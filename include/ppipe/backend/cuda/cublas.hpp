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

  /// @brief At least `n` ones in device memory. Grown only when a microbatch has more rows than
  /// any before, and then synchronously (see grow()).
  /// @param n how many
  /// @return the ones
  const float* ones(std::size_t n) {
    if (n > ones_count_) {
      grow(ones_, n, "cuBLAS layers' ones");
      const std::vector<float> host(n, 1.0f);
      check(cudaMemcpy(ones_.get(), host.data(), n * sizeof(float), cudaMemcpyHostToDevice),
            "cudaMemcpy (cuBLAS layers' ones)");
      // A pageable copy may return before it lands, and the layers' streams do not wait for the
      // legacy stream it ran on.
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (cuBLAS layers' ones)");
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
      grow(scratch_, n, "CUDA layers' scratch");
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
  // Replaces `block` by `n` floats once every stream of the device is done with it: a growth
  // (the first steps only) waits for the GPU, where a stream-ordered one would need every
  // stream that used the block. The old block is kept as long as the workspace: a captured graph
  // may still point at it (capture_graphs), and it is no bigger than the new one.
  void grow(std::shared_ptr<float>& block, std::size_t n, const char* what) {
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (before growing the CUDA layers' workspace)");
    if (block) retired_.push_back(std::move(block));
    block.reset();
    float* p = nullptr;
    const cudaError_t status = cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float));
    if (status != cudaSuccess) {
      ppipe::detail::fail(errc::backend, "cudaMalloc (", what, ", ", n, " floats) failed: ", cudaGetErrorName(status),
                          status == cudaErrorMemoryAllocation ? "; the GPU is out of memory: use smaller microbatches"
                                                              : "");
    }
    block = std::shared_ptr<float>(p, [](float* q) { static_cast<void>(cudaFree(q)); });
  }

  std::shared_ptr<cublasContext> handle_;
  std::shared_ptr<float> ones_, scratch_;
  std::vector<std::shared_ptr<float>> retired_;  // grown out of, kept for graphs that use them
  std::size_t ones_count_ = 0, scratch_count_ = 0;
};

}  // namespace ppipe::cuda
