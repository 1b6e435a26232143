// Host-only CUDA use through the ppipe::cuda target of a subproject build.
#include <cstdio>

#include <ppipe/cuda.hpp>

int main() {
  std::printf("CUDA devices: %d\n", ppipe::cuda::device_count());
  return 0;
}
