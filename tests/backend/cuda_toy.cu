// The kernels of the CUDA toy model (cuda_toy.hpp). One thread does each call's work in the host
// model's order: the sums and the weight gradients accumulate element by element as on the host,
// and every multiply and add is rounded on its own (__fmul_rn, __fadd_rn: nvcc would otherwise
// fuse them), so the bits are the host's. Tiny sizes only: this is a test model.
#include <cstddef>

#include <ppipe/backend/cuda/error.hpp>

#include "cuda_toy.hpp"

namespace {

__global__ void forward_kernel(float a, float b, const float* x, const float* c, float* y, float* yc, std::size_t rows,
                               std::size_t w) {
  for (std::size_t r = 0; r < rows; ++r) {
    float sum = 0.0f;
    for (std::size_t j = 0; j < w; ++j) {
      const float v = x[r * w + j];
      y[r * w + j] = __fadd_rn(__fmul_rn(a, v), b);
      sum = __fadd_rn(sum, v);
    }
    yc[r] = __fadd_rn(__fmul_rn(0.5f, c[r]), __fmul_rn(0.1f, sum));
  }
}

__global__ void backward_kernel(float a, const float* x, const float* g, const float* gc, float* gin, float* gin_c,
                                float* ga, float* gb, std::size_t rows, std::size_t w) {
  float sa = *ga;
  float sb = *gb;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t j = 0; j < w; ++j) {
      const std::size_t i = r * w + j;
      sa = __fadd_rn(sa, __fmul_rn(g[i], x[i]));
      sb = __fadd_rn(sb, g[i]);
      if (gin != nullptr) gin[i] = __fadd_rn(__fmul_rn(a, g[i]), __fmul_rn(0.1f, gc[r]));
    }
    if (gin_c != nullptr) gin_c[r] = __fmul_rn(0.5f, gc[r]);
  }
  *ga = sa;
  *gb = sb;
}

__device__ double mse_part(const float* y, const float* t, float* g, std::size_t n, double scale) {
  const double count = static_cast<double>(n);
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = __dadd_rn(static_cast<double>(y[i]), -static_cast<double>(t[i]));
    sum = __dadd_rn(sum, __dmul_rn(d, d));
    g[i] = __double2float_rn(__ddiv_rn(__dmul_rn(__dmul_rn(scale, 2.0), d), count));
  }
  return __ddiv_rn(sum, count);
}

__global__ void loss_kernel(const float* y, const float* yc, const float* t, const float* tc, float* g, float* gc,
                            double scale, double* value, std::size_t rows, std::size_t w) {
  double total = 0.0;
  total = __dadd_rn(total, mse_part(y, t, g, rows * w, scale));
  total = __dadd_rn(total, mse_part(yc, tc, gc, rows, scale));
  *value = total;
}

void launched(const char* what) { ppipe::cuda::check(cudaGetLastError(), what); }

}  // namespace

namespace cuda_toy {

void forward(cudaStream_t s, float a, float b, const float* x, const float* c, float* y, float* yc, std::size_t rows,
             std::size_t w) {
  forward_kernel<<<1, 1, 0, s>>>(a, b, x, c, y, yc, rows, w);
  launched("the toy forward kernel");
}

void backward(cudaStream_t s, float a, const float* x, const float* g, const float* gc, float* gin, float* gin_c,
              float* ga, float* gb, std::size_t rows, std::size_t w) {
  backward_kernel<<<1, 1, 0, s>>>(a, x, g, gc, gin, gin_c, ga, gb, rows, w);
  launched("the toy backward kernel");
}

void loss(cudaStream_t s, const float* y, const float* yc, const float* t, const float* tc, float* g, float* gc,
          double scale, double* value, std::size_t rows, std::size_t w) {
  loss_kernel<<<1, 1, 0, s>>>(y, yc, t, tc, g, gc, scale, value, rows, w);
  launched("the toy loss kernel");
}

}  // namespace cuda_toy
