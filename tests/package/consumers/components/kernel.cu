// nvcc compiles the installed CUDA headers and a kernel; launching it needs a device.
#include <cstdio>

#include <ppipe/cuda.hpp>

namespace {
__global__ void fill(int* out, int value) { *out = value; }
}  // namespace

int run_kernel() {
  if (ppipe::cuda::device_count() == 0) {
    std::printf("no CUDA device: kernel built, not launched\n");
    return 0;
  }
  int* device_value = nullptr;
  PPIPE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&device_value), sizeof(int)));
  fill<<<1, 1>>>(device_value, 7);
  PPIPE_CUDA_CHECK(cudaGetLastError());
  int host_value = 0;
  PPIPE_CUDA_CHECK(cudaMemcpy(&host_value, device_value, sizeof(int), cudaMemcpyDeviceToHost));
  PPIPE_CUDA_CHECK(cudaFree(device_value));
  std::printf("kernel wrote %d\n", host_value);
  return host_value == 7 ? 0 : 1;
}
