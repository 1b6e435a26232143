#pragma once
/// @file
/// @brief ppipe::cuda::backend: every stage of a pipeline on one GPU of this process, its tensors
/// in the GPU's memory, each rank a host thread that enqueues its step onto its own streams; and
/// ppipe::cuda::backend_placed (multi_gpu_backend): the ranks spread over several GPUs.

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/backend/cuda/device.hpp"
#include "ppipe/error.hpp"
#include "ppipe/runtime/backend.hpp"
#include "ppipe/runtime/stream_stage.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/transport/host.hpp"

namespace ppipe::cuda {
namespace detail {

/// What the CUDA backends share: device tensors on the stages, each rank's thread bound to its
/// GPU, and the host transport, which their ranks never use for payloads (those cross by device
/// copies); they differ in where they put the ranks.
struct gpu_backend_base {
  using tensor_type = host_tensor;
  using stage_tensor_type = device_tensor;
  using device_type = device;
  using transport_type = host_transport;
  template <class Model>
  using stage_type = stream_stage<Model, device_tensor, device>;

  /// @brief Makes the rank's GPU the rank thread's current device.
  /// @param rank the pipeline rank (unused)
  /// @param d the rank's device
  static void start_rank(int /*rank*/, device_type& d) { d.bind(); }
  /// @brief The host transport, unused for payloads.
  /// @param ranks the pipeline's rank count
  /// @return a transport that blocks without polling
  static transport_type make_transport(int ranks) { return transport_type(ranks, std::chrono::microseconds(0)); }
};

}  // namespace detail

/// @brief Every rank on GPU `Ordinal`: the ranks share one ppipe::cuda::device (one memory pool),
/// each with a compute, a send and a receive stream. Layers take ppipe::device_tensor payloads
/// and launch their kernels on the context's stream (`ctx.device->stream.handle()`), saying so
/// with `static constexpr bool enqueues_work = true;`; the loss is a ppipe::device_loss_function
/// that launches its own. The batch is copied in and the outputs and loss values out in stream
/// order; payloads between ranks cross by copies on the GPU, ordered by events, never through the
/// host. The ranks' threads are bound to the GPU before their first action.
///
/// Several ranks on one GPU are what a pipeline needs to be tried, measured and tested on one
/// device (the bubble, the memory per stage, the schedule's order). For ranks on several GPUs,
/// see ppipe::cuda::backend_placed.
/// @tparam Ordinal the GPU, as cudaSetDevice numbers it
template <int Ordinal = 0>
struct backend_on : detail::gpu_backend_base {

  /// @brief A device for rank `rank` alone (where a pipeline has one rank in this process).
  /// @param rank the pipeline rank
  /// @return the GPU's device, serving that rank
  static std::unique_ptr<device_type> make_device(int rank) {
    return std::make_unique<device_type>(device_options{Ordinal, rank});
  }
  /// @brief One device shared by every rank.
  /// @param ranks the pipeline's rank count
  /// @return `ranks` handles to the one device
  static std::vector<std::shared_ptr<device_type>> make_devices(int ranks) {
    const auto one = std::make_shared<device_type>(device_options{Ordinal, -1});
    return std::vector<std::shared_ptr<device_type>>(static_cast<std::size_t>(ranks), one);
  }
};

/// @brief Every rank on GPU 0.
using backend = backend_on<0>;

/// @brief Where ppipe::cuda::backend_placed puts its devices: every GPU this process sees, device
/// k on GPU k.
struct every_gpu {
  /// @brief How many devices: the visible GPUs.
  /// @return device_count()
  static int count() { return device_count(); }
  /// @brief Device k's GPU.
  /// @param k the device's index
  /// @return `k`
  static int ordinal(int k) { return k; }
};

/// @brief `K` devices all on GPU 0, each with its own pool and streams, as `K` GPUs would be:
/// what lets one GPU run the multi-GPU path (events and copies between devices) in tests.
template <int K>
struct as_if_gpus {
  /// @brief How many devices.
  /// @return `K`
  static int count() { return K; }
  /// @brief Device k's GPU: always GPU 0.
  /// @return 0
  static int ordinal(int /*k*/) { return 0; }
};

/// @brief Ranks spread over the devices `Placement` gives (ppipe::cuda::every_gpu: one per visible
/// GPU), neighbouring ranks together (rank r on device r * n / ranks): stages on several GPUs of
/// one process, each rank a host thread bound to its GPU with its own streams, each GPU one pool.
/// Payloads between ranks on one GPU and between GPUs with peer access cross by device copies
/// ordered by events (the receiver's stream waits for the sender's event, also on another GPU,
/// and copies from the sender's memory, peer to peer). Between GPUs without peer access (as
/// consumer cards often are) the sender copies the payload into page-locked host memory and the
/// receiver copies it in after the sender's event: two copies, still in stream order, with no
/// host thread waiting in between.
/// @tparam Placement a type with `static int count()` and `static int ordinal(int k)`
template <class Placement = every_gpu>
struct backend_placed : detail::gpu_backend_base {

  /// @brief A device for rank `rank` alone: the first device's GPU.
  /// @param rank the pipeline rank
  /// @return that device
  static std::unique_ptr<device_type> make_device(int rank) {
    return std::make_unique<device_type>(device_options{Placement::ordinal(0), rank});
  }
  /// @brief The devices, and each rank's: as many devices as the placement gives and the ranks
  /// fill, each the peer of every other.
  /// @param ranks the pipeline's rank count
  /// @return each rank's device
  static std::vector<std::shared_ptr<device_type>> make_devices(int ranks) {
    const int n = std::min(Placement::count(), std::max(ranks, 1));
    if (n < 1) {
      ppipe::detail::fail(errc::backend, "no CUDA device is visible: check nvidia-smi and CUDA_VISIBLE_DEVICES");
    }
    std::vector<std::shared_ptr<device_type>> made;
    for (int k = 0; k < n; ++k) made.push_back(std::make_shared<device_type>(device_options{Placement::ordinal(k), -1}));
    for (const auto& a : made) {
      for (const auto& b : made) a->grant_peer(*b);
    }
    std::vector<std::shared_ptr<device_type>> out;
    for (int r = 0; r < ranks; ++r) out.push_back(made[static_cast<std::size_t>(r * n / ranks)]);
    return out;
  }
};

/// @brief Ranks spread over every GPU this process sees.
using multi_gpu_backend = backend_placed<every_gpu>;

static_assert(ppipe::backend<backend>);
static_assert(ppipe::backend<multi_gpu_backend>);

}  // namespace ppipe::cuda
