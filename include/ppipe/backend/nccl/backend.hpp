#pragma once
/// @file
/// @brief ppipe::nccl::backend: one pipeline rank per process, on the process's GPU, its stages in
/// device memory and its payloads over NCCL (ppipe::nccl::transport).

#include <cstdlib>
#include <memory>
#include <string>

#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/cuda/device.hpp"
#include "ppipe/backend/nccl/transport.hpp"
#include "ppipe/error.hpp"
#include "ppipe/runtime/backend.hpp"
#include "ppipe/runtime/stream_stage.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe::nccl {

/// @brief This process's rank among the processes of its node, as the launcher says:
/// OMPI_COMM_WORLD_LOCAL_RANK (mpirun of Open MPI), SLURM_LOCALID (srun), MPI_LOCALRANKID (MPICH,
/// Intel MPI) or LOCAL_RANK (torchrun-style launchers); 0 when none is set.
/// @return the local rank
inline int local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "LOCAL_RANK"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') {
      char* end = nullptr;
      const long n = std::strtol(v, &end, 10);
      if (end != v && *end == '\0' && n >= 0) return static_cast<int>(n);
      ppipe::detail::fail(errc::invalid_argument, name, " is \"", v, "\", not a local rank; unset it or fix the "
                          "launcher");
    }
  }
  return 0;
}

/// @brief The GPU this process drives: its local rank, modulo the GPUs it sees (with one GPU per
/// process, CUDA_VISIBLE_DEVICES set per process also works: each then sees its own as GPU 0).
/// @return a cudaSetDevice ordinal
inline int process_gpu() {
  const int count = cuda::device_count();
  if (count < 1) {
    ppipe::detail::fail(errc::backend, "no CUDA device is visible to this process: check nvidia-smi and "
                        "CUDA_VISIBLE_DEVICES");
  }
  return local_rank() % count;
}

/// @brief One pipeline rank per process on the process's GPU (process_gpu()), its stages holding
/// ppipe::device_tensor payloads whose layers launch their own kernels (as ppipe::cuda::backend's
/// do), and payloads between processes over ppipe::nccl::transport<Control>. Built, as every
/// distributed pipeline, with its transport:
/// @code
/// ppipe::pipeline<Model, Schedule, ppipe::partitioners::balanced,
///                 ppipe::nccl::backend<ppipe::mpi::transport>>
///     pipe(model, options, loss, hook,
///          ppipe::nccl::transport<ppipe::mpi::transport>(ppipe::mpi::transport(MPI_COMM_WORLD),
///                                                        ppipe::nccl::process_gpu()));
/// @endcode
/// @tparam Control the control transport (ppipe::mpi::transport)
template <class Control>
struct backend {
  /// @brief The tensors the pipeline's caller gives and gets: host tensors.
  using tensor_type = host_tensor;
  /// @brief The tensors the stages hold: device tensors on the process's GPU.
  using stage_tensor_type = device_tensor;
  /// @brief The rank's device: the process's GPU.
  using device_type = cuda::device;
  /// @brief The payloads' transport: NCCL, with `Control` for the host's messages.
  using transport_type = transport<Control>;
  /// @brief A stage of `Model` whose work is enqueued on the device's streams.
  /// @tparam Model the model's type
  template <class Model>
  using stage_type = stream_stage<Model, device_tensor, cuda::device>;

  /// @brief The process's GPU, serving rank `rank`.
  /// @param rank the pipeline rank
  /// @return its device
  /// @throws ppipe::error when no GPU is visible or the launcher's local rank is malformed
  static std::unique_ptr<device_type> make_device(int rank) {
    return std::make_unique<device_type>(cuda::device_options{process_gpu(), rank});
  }
  /// @brief Makes the GPU the rank thread's current device; the first argument, the pipeline
  /// rank, is unused.
  /// @param d the rank's device
  /// @throws ppipe::error when cudaSetDevice fails
  static void start_rank(int /*rank*/, device_type& d) { d.bind(); }
};

}  // namespace ppipe::nccl
