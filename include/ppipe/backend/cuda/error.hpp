#pragma once
/// @file
/// @brief CUDA runtime status codes turned into ppipe::error.
///
/// Host API only: this header compiles with a plain C++ compiler (g++, clang++) as well as nvcc.

#include <cuda_runtime_api.h>

#include <ppipe/error.hpp>

namespace ppipe::cuda {
namespace detail {

// A fix for the failures that a misconfigured machine produces most often; empty for the rest.
constexpr const char* hint(cudaError_t status) noexcept {
  switch (status) {
    case cudaErrorInsufficientDriver:
      return "; the NVIDIA driver is missing or older than the CUDA runtime: install or update the driver";
    case cudaErrorNoDevice:
      return "; no CUDA-capable device is visible: check nvidia-smi and CUDA_VISIBLE_DEVICES";
    case cudaErrorMemoryAllocation:
      return "; the device is out of memory: use smaller micro-batches or fewer in flight";
    default:
      return "";
  }
}

[[noreturn]] inline void throw_error(cudaError_t status, const char* what, const char* file, int line) {
  const char* name = cudaGetErrorName(status);
  const char* text = cudaGetErrorString(status);
  if (file != nullptr) {
    ppipe::detail::fail(errc::backend, file, ":", line, ": ", what, " failed: CUDA error ",
                        static_cast<int>(status), " ", name, " (", text, ")", hint(status));
  }
  ppipe::detail::fail(errc::backend, what, " failed: CUDA error ", static_cast<int>(status), " ", name,
                      " (", text, ")", hint(status));
}

}  // namespace detail

/// @brief Throws ppipe::error (errc::backend) unless `status` is cudaSuccess.
/// @param status the value a CUDA runtime call returned
/// @param what   the call that returned it, e.g. "cudaMemcpyAsync(stage 2 -> 3)"
/// The message carries the numeric code and its name, e.g.
/// "[ppipe.backend] cudaMalloc failed: CUDA error 2 cudaErrorMemoryAllocation (out of memory); ...".
inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    detail::throw_error(status, what, nullptr, 0);
  }
}

}  // namespace ppipe::cuda

/// @brief Evaluates a CUDA runtime call once and throws ppipe::error naming the call, the file and
/// the line unless it returned cudaSuccess.
#define PPIPE_CUDA_CHECK(expr)                                                                     \
  do {                                                                                             \
    const ::cudaError_t ppipe_cuda_check_status_ = (expr);                                         \
    if (ppipe_cuda_check_status_ != ::cudaSuccess) {                                               \
      ::ppipe::cuda::detail::throw_error(ppipe_cuda_check_status_, #expr, __FILE__, __LINE__);     \
    }                                                                                              \
  } while (false)
