#pragma once
// ppipe-cuda-train's two halves: the command line (cuda_train.cpp, g++ with CLI11) and the
// training on the GPU (cuda_train/run.cu, nvcc, where the kit's kernels are).

#include <cstdint>
#include <string>

#include <ppipe/schedule/schedule.hpp>

namespace cuda_train {

struct settings {
  int ranks = 4;
  int microbatches = 16;
  int virtual_stages = 1;
  int steps = 20;
  std::int64_t batch = 512;
  int width = 512;
  int blocks = 8;     // residual MLP blocks (hidden 4 * width)
  bool bf16 = false;  // bf16 blocks (linear, GELU, linear) instead
  float lr = 0.01f;
  std::string trace = "ppipe-cuda-trace.json";
  long timeout_ms = 60000;
  bool check = false;  // also train the same layers on one rank and compare, bit for bit
  bool graphs = false;  // steps after the first captured into one CUDA graph and launched
  bool timeline = true;
};

// The exit status when the machine has no CUDA device.
inline constexpr int exit_no_gpu = 3;

// Trains as `s` says with schedule `plan`; returns the exit status.
int run(const settings& s, ppipe::schedule plan);

}  // namespace cuda_train
