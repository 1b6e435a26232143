#pragma once
/// @file
/// @brief What the CUDA kit's kernels share (nvcc only): launch sizes, the checks before and after
/// a launch, and a block-wide sum in a fixed order. Kernels are templates, so that every
/// translation unit that includes a kit header may instantiate them.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <cuda_bf16.h>
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

/// @brief The rows of `p`, which must be one tensor [rows, width] of `type` (with `rows` rows,
/// unless `rows` is 0); throws ppipe::error (invalid_argument) naming the layer, the argument and
/// the shapes it got otherwise.
/// @param p a layer's argument
/// @param width the columns the layer takes
/// @param rows the rows it must have, or 0 for any
/// @param layer the layer's describe()
/// @param name the argument ("in", "grad_out")
/// @param type the element type the layer takes
/// @return its rows
inline std::int64_t rows_of(const basic_payload<device_tensor>& p, int width, std::int64_t rows, const std::string& layer,
                            const char* name, dtype type = dtype::f32) {
  const bool ok = p.size() == 1 && p[0].shape().rank() == 2 && p[0].shape()[1] == width && p[0].dtype() == type &&
                  (rows == 0 || p[0].shape()[0] == rows);
  if (!ok) {
    const std::vector<shape> got = shapes_of(p);
    ppipe::detail::fail(errc::invalid_argument, layer, ": `", name, "` has shapes ",
                        ppipe::to_string(std::span<const shape>(got)), "; it takes one ", to_string(type), " tensor [",
                        rows == 0 ? std::string("rows") : std::to_string(rows), ", ", width, "]");
  }
  return p[0].shape()[0];
}

/// @brief `in`, when it is the shapes of one tensor [rows, width] of `type` (what a kit layer
/// takes); otherwise throws ppipe::error (invalid_argument) naming the layer and the shapes.
/// @param in the shapes of a layer's input
/// @param width the columns the layer takes
/// @param type the element type it takes
/// @param layer the layer's describe()
/// @return `in`
inline const std::vector<shape>& one_tensor(const std::vector<shape>& in, int width, dtype type,
                                            const std::string& layer) {
  if (in.size() != 1 || in[0].rank() != 2 || in[0][1] != width || in[0].dtype() != type) {
    ppipe::detail::fail(errc::invalid_argument, layer, " takes one ", to_string(type), " tensor [rows, ", width,
                        "], not ", ppipe::to_string(std::span<const shape>(in)));
  }
  return in;
}

/// @brief A bf16 device tensor's address as CUDA's bfloat16 (the same 16 bits as ppipe::bfloat16).
/// @param t a tensor of dtype bf16 (refused otherwise)
/// @return its elements
inline __nv_bfloat16* bf16_data(const device_tensor& t) { return reinterpret_cast<__nv_bfloat16*>(t.data<bfloat16>()); }

/// @brief Calls `f(p)` with tensor `t`'s elements as `float*` or `__nv_bfloat16*`, as its dtype
/// says; refuses any other dtype, naming `what`.
template <class F>
void with_float_data(const device_tensor& t, const char* what, F&& f) {
  if (t.dtype() == dtype::f32) {
    f(t.data<float>());
  } else if (t.dtype() == dtype::bf16) {
    f(bf16_data(t));
  } else {
    ppipe::detail::fail(errc::invalid_argument, what, " takes f32 or bf16 tensors, not ", to_string(t.dtype()));
  }
}

/// @brief acc[k] += the sum of column k of the [rows, n] matrix g, rows in order (one thread per
/// column, so the bits repeat).
template <class T>
__global__ void column_sums(const T* g, float* acc, std::int64_t rows, int n) {
  const int k = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (k >= n) return;
  float sum = 0.0f;
  for (std::int64_t r = 0; r < rows; ++r) sum += static_cast<float>(g[static_cast<std::size_t>(r) * static_cast<std::size_t>(n) + static_cast<std::size_t>(k)]);
  acc[k] += sum;
}

/// @brief Blocks of block_threads for one thread per column of `n` columns.
inline unsigned column_blocks(int n) { return (static_cast<unsigned>(n) + block_threads - 1) / block_threads; }

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
