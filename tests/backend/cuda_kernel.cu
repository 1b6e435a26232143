// The device half of backend_cuda_kernel: a tiny kernel and a host launcher that reports failures as
// ppipe::error. Kept apart from the Catch2 TU so nvcc compiles only this small file.
#include <cstddef>
#include <vector>

#include <ppipe/cuda.hpp>

#include "cuda_kernel.hpp"

namespace {

__global__ void axpy(float a, const float* x, float* y, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) {
    y[i] = a * x[i] + y[i];
  }
}

// Device memory freed on every path, including when a check throws.
struct device_buffer {
  float* data = nullptr;
  explicit device_buffer(std::size_t n) {
    PPIPE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data), n * sizeof(float)));
  }
  ~device_buffer() { static_cast<void>(cudaFree(data)); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
};

}  // namespace

namespace ppipe_test {

void axpy_on_device(float a, const std::vector<float>& x, std::vector<float>& y) {
  const int n = static_cast<int>(x.size());
  const std::size_t bytes = x.size() * sizeof(float);
  device_buffer dx(x.size());
  device_buffer dy(y.size());
  PPIPE_CUDA_CHECK(cudaMemcpy(dx.data, x.data(), bytes, cudaMemcpyHostToDevice));
  PPIPE_CUDA_CHECK(cudaMemcpy(dy.data, y.data(), bytes, cudaMemcpyHostToDevice));
  constexpr int block = 128;
  axpy<<<(n + block - 1) / block, block>>>(a, dx.data, dy.data, n);
  PPIPE_CUDA_CHECK(cudaGetLastError());
  PPIPE_CUDA_CHECK(cudaDeviceSynchronize());
  PPIPE_CUDA_CHECK(cudaMemcpy(y.data(), dy.data, bytes, cudaMemcpyDeviceToHost));
}

}  // namespace ppipe_test
