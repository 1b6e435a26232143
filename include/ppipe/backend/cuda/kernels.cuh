#pragma once
/// @file
/// @brief What the CUDA kit's kernels share (nvcc only): launch sizes, the checks before and after
/// a launch, and a block-wide sum in a fixed order. Kernels are templates, so that every
/// translation unit that includes a kit header may instantiate them.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "ppipe/backend/cuda/error.hpp"
#include "ppipe/error.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::cuda::kernels {

/// @brief Threads per block of every kit kernel (a power of two, as block_sum() needs).
inline constexpr unsigned block_threads = 256;

/// @brief Blocks for a grid-stride loop over `n` elements: enough to fill a GPU, never more than
/// the elements need.
/// @param n the elements
/// @return at least 1
inline unsigned blocks_for(std::size_t n) {
  const std::size_t want = (n + block_threads - 1) / block_threads;
  return static_cast<unsigned>(want < 1 ? 1 : (want > 4096 ? 4096 : want));
}

/// @brief Throws ppipe::error naming `what` when the launch just made failed (a bad
/// configuration, or an earlier asynchronous fault reported here).
/// @param what the kernel and layer, e.g. "layer_norm 16 forward"
inline void launched(const char* what) { check(cudaGetLastError(), what); }

/// @brief The rows of `p`, which must be one f32 tensor [rows, width] (with `rows` rows, unless
/// `rows` is 0); throws ppipe::error (invalid_argument) naming the layer, the argument and the
/// shapes it got otherwise.
/// @param p a layer's argument
/// @param width the columns the layer takes
/// @param rows the rows it must have, or 0 for any
/// @param layer the layer's describe()
/// @param name the argument ("in", "grad_out")
/// @return its rows
inline std::int64_t rows_of(const basic_payload<device_tensor>& p, int width, std::int64_t rows, const std::string& layer,
                            const char* name) {
  const bool ok = p.size() == 1 && p[0].shape().rank() == 2 && p[0].shape()[1] == width &&
                  p[0].dtype() == dtype::f32 && (rows == 0 || p[0].shape()[0] == rows);
  if (!ok) {
    const std::vector<shape> got = shapes_of(p);
    ppipe::detail::fail(errc::invalid_argument, layer, ": `", name, "` has shapes ",
                        ppipe::to_string(std::span<const shape>(got)), "; it takes one f32 tensor [",
                        rows == 0 ? std::string("rows") : std::to_string(rows), ", ", width, "]");
  }
  return p[0].shape()[0];
}

/// @brief The sum of every thread's `v` over the block, returned to all threads. The order is
/// fixed (a tree over `shared`, which holds block_threads values), so the bits repeat run to run.
/// Every thread of the block must call it.
template <class T>
__device__ T block_sum(T v, T* shared) {
  const unsigned t = threadIdx.x;
  shared[t] = v;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) shared[t] = shared[t] + shared[t + half];
    __syncthreads();
  }
  const T sum = shared[0];
  __syncthreads();  // shared is reused by the caller's next sum
  return sum;
}

}  // namespace ppipe::cuda::kernels
