#pragma once
/// @file
/// @brief ppipe::cuda::backend: every stage of a pipeline on one GPU of this process, its tensors
/// in the GPU's memory, each rank a host thread that enqueues its step onto its own streams.

#include <chrono>
#include <memory>
#include <vector>

#include "ppipe/backend/cuda/cuda_device.hpp"
#include "ppipe/runtime/backend.hpp"
#include "ppipe/runtime/stream_stage.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/transport/host.hpp"

namespace ppipe::cuda {

/// @brief Every rank on GPU `Ordinal`: the ranks share one ppipe::cuda::device (one memory pool),
/// each with a compute, a send and a receive stream. Layers take ppipe::device_tensor payloads
/// and launch their kernels on the context's stream (`ctx.device->stream.handle()`), saying so
/// with `static constexpr bool enqueues_work = true;`; the loss is a ppipe::device_loss_function
/// that launches its own. The batch is copied in and the outputs and loss values out in stream
/// order; payloads between ranks cross by copies on the GPU, ordered by events, never through the
/// host. The ranks' threads are bound to the GPU before their first action.
///
/// Several ranks on one GPU are what a pipeline needs to be tried, measured and tested on one
/// device (the bubble, the memory per stage, the schedule's order). Ranks on different GPUs of
/// one process are not supported yet.
/// @tparam Ordinal the GPU, as cudaSetDevice numbers it
template <int Ordinal = 0>
struct backend_on {
  using tensor_type = host_tensor;
  using stage_tensor_type = device_tensor;
  using device_type = device;
  using transport_type = host_transport;
  template <class Model>
  using stage_type = stream_stage<Model, device_tensor, device>;

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
  /// @brief Makes the GPU the rank thread's current device.
  /// @param rank the pipeline rank (unused)
  /// @param d the rank's device
  static void start_rank(int /*rank*/, device_type& d) { d.bind(); }
  /// @brief The host transport, which ranks on one device never use for payloads.
  /// @param ranks the pipeline's rank count
  /// @return a transport that blocks without polling
  static transport_type make_transport(int ranks) { return transport_type(ranks, std::chrono::microseconds(0)); }
};

/// @brief Every rank on GPU 0.
using backend = backend_on<0>;

static_assert(ppipe::backend<backend>);

}  // namespace ppipe::cuda
