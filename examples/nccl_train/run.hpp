#pragma once
// ppipe-nccl-train's two halves: the command line (nccl_train.cpp, g++ with CLI11) and the
// training on the process's GPU (nccl_train/run.cu, nvcc, where the kit's kernels are).

#include <cstdint>

#include <ppipe/schedule/schedule.hpp>

namespace nccl_train {

struct settings {
  int microbatches = 16;
  int virtual_stages = 1;
  int steps = 20;
  std::int64_t batch = 512;
  int width = 512;
  int blocks = 8;  // residual MLP blocks (hidden 4 * width)
  float lr = 0.01f;
  long timeout_ms = 60000;
  bool check = false;  // rank 0 also trains the same layers on one GPU and compares the losses, bit for bit
};

// The exit status when a process of the job has no CUDA device.
inline constexpr int exit_no_gpu = 3;

// Trains as `s` says with schedule `plan` (of as many ranks as the job has processes); returns the
// exit status. MPI is initialised.
int run(const settings& s, ppipe::schedule plan);

}  // namespace nccl_train
