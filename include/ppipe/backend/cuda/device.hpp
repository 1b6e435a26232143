#pragma once
/// @file
/// @brief Which CUDA devices this process can use.

#include <cuda_runtime_api.h>

#include <ppipe/backend/cuda/error.hpp>

namespace ppipe::cuda {

/// @brief The number of CUDA devices visible to this process; 0 on a machine without a usable driver
/// or device, so that callers (and tests) can fall back or skip instead of failing.
/// @return the device count
/// @throws ppipe::error (errc::backend) for any other failure, e.g. a device in a broken state.
inline int device_count() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  switch (status) {
    case cudaSuccess:
      return count;
    // No driver, only the driver's stub library, or a driver without devices: the count is left
    // untouched on these paths, so it cannot be trusted.
    case cudaErrorInsufficientDriver:
    case cudaErrorStubLibrary:
    case cudaErrorNoDevice:
      static_cast<void>(cudaGetLastError());  // the runtime records it; later checks must not see it
      return 0;
    default:
      check(status, "cudaGetDeviceCount");
      return 0;  // not reached: check() throws
  }
}

}  // namespace ppipe::cuda
