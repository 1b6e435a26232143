#pragma once
/// @file
/// @brief The matrix products of the CPU layer kit's linear layer, in two implementations: plain
/// loops, always there, and cblas_sgemm from OpenBLAS, compiled in with PPIPE_WITH_CBLAS=1 (which
/// linking the CMake target ppipe::blas defines).
///
/// The layer kit's classes live in an inline namespace named after the implementation they use
/// (ppipe::layers::cblas_kernels or ppipe::layers::loop_kernels), so that translation units built
/// with and without PPIPE_WITH_CBLAS can share a program: their layers are different types, not
/// one type with two definitions.

#include <cstddef>

#ifndef PPIPE_WITH_CBLAS
/// 1 to multiply with OpenBLAS's cblas_sgemm, 0 (the default) for the kit's own loops.
#define PPIPE_WITH_CBLAS 0
#endif

#if PPIPE_WITH_CBLAS
#include <cblas.h>
#include <climits>
#include <cstring>
#if !defined(OPENBLAS_VERSION)
#error "ppipe: PPIPE_WITH_CBLAS=1 needs OpenBLAS's cblas.h; the one found is another BLAS's"
#endif
/// The inline namespace of the layer kit's classes: which matrix products they were compiled with.
#define PPIPE_LAYERS_KERNELS cblas_kernels
#else
/// The inline namespace of the layer kit's classes: which matrix products they were compiled with.
#define PPIPE_LAYERS_KERNELS loop_kernels
#endif

namespace ppipe::layers {
inline namespace PPIPE_LAYERS_KERNELS {

/// @brief True when the layer kit's linear layer multiplies with cblas_sgemm (PPIPE_WITH_CBLAS=1),
/// false when it uses its own loops.
inline constexpr bool uses_cblas = PPIPE_WITH_CBLAS != 0;

}  // namespace PPIPE_LAYERS_KERNELS

namespace detail {

/// The sizes of one call of a linear layer: x is [rows, in], W [out, in] and y [rows, out], all
/// row-major and dense.
struct matmul_dims {
  std::size_t rows = 0;
  std::size_t in = 0;
  std::size_t out = 0;
};

/// A dot product in eight interleaved partial sums, added in a fixed order: the compiler can keep
/// the lanes in vector registers (a single running sum is a dependency chain it may not reorder),
/// and the bits still depend on `n` and the values alone.
inline float dot_lanes(const float* a, const float* b, std::size_t n) noexcept {
  float lane[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (std::size_t k = 0; k < 8; ++k) lane[k] += a[i + k] * b[i + k];
  }
  float sum =
      ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

/// The loops: every sum in float, in a fixed order that depends on the sizes alone. They are the
/// layer's products without a BLAS, and the reference the BLAS path is tested against.
namespace loops {

/// acc[k] += v[k] for k < n: how a call's gradient joins the accumulator.
inline void add_into(float* acc, const float* v, std::size_t n) noexcept {
  for (std::size_t k = 0; k < n; ++k) acc[k] += v[k];
}

/// y = x W^T + b.
inline void forward(const float* x, const float* w, const float* b, float* y,
                    matmul_dims d) noexcept {
  for (std::size_t r = 0; r < d.rows; ++r) {
    for (std::size_t o = 0; o < d.out; ++o)
      y[r * d.out + o] = dot_lanes(x + r * d.in, w + o * d.in, d.in) + b[o];
  }
}

/// gx = gy W, overwriting gx [rows, in]; gy is [rows, out].
inline void backward_input(const float* gy, const float* w, float* gx, matmul_dims d) noexcept {
  // Row by row, adding W's rows scaled by gy: the inner loop runs along memory.
  for (std::size_t r = 0; r < d.rows; ++r) {
    float* row = gx + r * d.in;
    for (std::size_t i = 0; i < d.in; ++i) row[i] = 0.0f;
    for (std::size_t o = 0; o < d.out; ++o) {
      const float g = gy[r * d.out + o];
      const float* wo = w + o * d.in;
      for (std::size_t i = 0; i < d.in; ++i) row[i] += g * wo[i];
    }
  }
}

/// gw = gy^T x [out, in] and gb = the column sums of gy [out], both overwritten, each element
/// summed over the rows in order.
inline void backward_weight(const float* x, const float* gy, float* gw, float* gb,
                            matmul_dims d) noexcept {
  for (std::size_t k = 0; k < d.out * d.in; ++k) gw[k] = 0.0f;
  for (std::size_t o = 0; o < d.out; ++o) gb[o] = 0.0f;
  for (std::size_t r = 0; r < d.rows; ++r) {
    for (std::size_t o = 0; o < d.out; ++o) {
      const float g = gy[r * d.out + o];
      gb[o] += g;
      float* row = gw + o * d.in;
      for (std::size_t i = 0; i < d.in; ++i) row[i] += g * x[r * d.in + i];
    }
  }
}

}  // namespace loops

#if PPIPE_WITH_CBLAS
/// The same products through cblas_sgemm. OpenBLAS sums in its own blocked order, so its bits
/// differ from the loops' by rounding. They follow from the call's sizes and values and from the
/// kernels OpenBLAS chose for the CPU: the same call gives the same bits every time, on any
/// thread, but a row's result may change with the number of rows that share its call.
namespace cblas {

/// Sets OpenBLAS to one thread, once per process, before the first product. A pipeline already
/// runs a thread per rank: OpenBLAS threads would compete with them for the cores, and calls from
/// several rank threads would queue for OpenBLAS's one pool of workers. With one thread every call
/// runs on the thread that makes it, and concurrent calls are safe in OpenBLAS's threaded builds
/// (they lock their buffer allocator; a serial build does so only when built with USE_LOCKING=1).
inline void use_one_thread() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

/// A size as the BLAS's int; every caller checks its sizes against INT_MAX first.
inline int blas_int(std::size_t n) noexcept {
  return static_cast<int>(n);
}

/// True when every size fits the BLAS's int (OpenBLAS built with 32-bit indices).
inline bool fits(matmul_dims d) noexcept {
  const auto limit = static_cast<std::size_t>(INT_MAX);
  return d.rows <= limit && d.in <= limit && d.out <= limit;
}

/// acc[k] += v[k] for k < n, through saxpy with alpha = 1: alpha * v[k] is v[k] exactly, so each
/// element is acc[k] + v[k] rounded once, the loops' bits, at the BLAS's speed whatever the
/// compiler makes of a loop inlined into its caller.
inline void add_into(float* acc, const float* v, std::size_t n) {
  use_one_thread();
  constexpr std::size_t chunk = std::size_t{1} << 30;  // saxpy counts in int
  for (std::size_t first = 0; first < n; first += chunk) {
    const std::size_t count = n - first < chunk ? n - first : chunk;
    cblas_saxpy(blas_int(count), 1.0f, v + first, 1, acc + first, 1);
  }
}

/// y = x W^T + b: y starts as b in every row, then sgemm adds x W^T (beta = 1).
inline void forward(const float* x, const float* w, const float* b, float* y, matmul_dims d) {
  if (d.rows == 0) return;
  use_one_thread();
  for (std::size_t r = 0; r < d.rows; ++r) std::memcpy(y + r * d.out, b, d.out * sizeof(float));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas_int(d.rows), blas_int(d.out),
              blas_int(d.in), 1.0f, x, blas_int(d.in), w, blas_int(d.in), 1.0f, y, blas_int(d.out));
}

/// gx = gy W, overwriting gx (beta = 0: OpenBLAS never reads gx's old values).
inline void backward_input(const float* gy, const float* w, float* gx, matmul_dims d) {
  if (d.rows == 0) return;
  use_one_thread();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blas_int(d.rows), blas_int(d.in),
              blas_int(d.out), 1.0f, gy, blas_int(d.out), w, blas_int(d.in), 0.0f, gx,
              blas_int(d.in));
}

/// gw += gy^T x, the product adding itself to the accumulator (beta = 1): no pass over a
/// weight-sized buffer of its own, which at 4096 x 4096 costs a tenth of the product. The
/// accumulator's bits follow from the calls made on it, in their order, as they must for a
/// pipelined run to match the unpipelined one (both make the same calls). gb = the column sums of
/// gy, overwritten, adding the rows in order as the loops do.
inline void accumulate_weight(const float* x, const float* gy, float* gw, float* gb, matmul_dims d) {
  std::memset(gb, 0, d.out * sizeof(float));
  if (d.rows == 0) return;  // no rows: nothing to add
  use_one_thread();
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, blas_int(d.out), blas_int(d.in),
              blas_int(d.rows), 1.0f, gy, blas_int(d.out), x, blas_int(d.in), 1.0f, gw,
              blas_int(d.in));
  for (std::size_t r = 0; r < d.rows; ++r) add_into(gb, gy + r * d.out, d.out);
}

}  // namespace cblas
#endif

}  // namespace detail
}  // namespace ppipe::layers
