#pragma once
/// @file
/// @brief The CPU-stream backend: every rank a device of CPU streams (ppipe::cpu_stream_device),
/// its layers enqueued on a compute stream while the rank's host thread runs ahead. The test
/// double of the device backends, and a backend users may pick themselves.

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "ppipe/device/cpu_device.hpp"
#include "ppipe/runtime/backend.hpp"
#include "ppipe/runtime/stream_stage.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/transport/cpu_p2p.hpp"
#include "ppipe/transport/host.hpp"

namespace ppipe {

/// @brief The CPU-stream backend's default devices: poison and the race checker on, no delays,
/// each rank's device seeded with its rank.
struct default_cpu_stream_config {
  /// @brief The options of rank `rank`'s device.
  /// @param rank the pipeline rank
  /// @return its device's options
  static cpu_device_options device_options(int rank) {
    cpu_device_options o;
    o.seed = static_cast<std::uint64_t>(rank);
    return o;
  }
};

namespace detail {
/// Whether a CPU-stream config puts every rank on one device (`static constexpr bool one_device`).
template <class Config>
concept one_cpu_device = requires { requires Config::one_device; };
/// Whether it spreads the ranks over peer devices (`static constexpr int peer_devices`).
template <class Config>
concept peer_cpu_devices = requires { requires Config::peer_devices >= 1; };
/// Whether those peers lack memory access (`static constexpr bool peer_access = false`).
template <class Config>
concept cpu_peers_without_access = requires { requires !Config::peer_access; };
/// The transport a CPU-stream config names (`using transport_type = ...`), or the host transport.
template <class Config>
struct cpu_transport_of {
  using type = host_transport;
};
template <class Config>
  requires requires { typename Config::transport_type; }
struct cpu_transport_of<Config> {
  using type = typename Config::transport_type;
};
}  // namespace detail

/// @brief Ranks are host threads that enqueue onto their own cpu_stream_device (a compute, a send
/// and a receive stream, each a worker thread), ordered by events as a GPU's streams are; payloads
/// are host tensors copied between ranks by the host transport, from the send stream of one rank
/// to the receive stream of the other.
/// @tparam Config a type with `static cpu_device_options device_options(int rank)`: the delays,
/// poison and race checking of each rank's device; with `static constexpr bool one_device = true`
/// every rank's streams are on one device (rank 0's options), as stages that share a GPU are, and
/// payloads cross by copies on the device; with `static constexpr int peer_devices = N` the ranks
/// are spread over N devices that are each other's peers (as the GPUs of one process are),
/// neighbouring ranks together (rank r on device r * N / ranks, with its first rank's options),
/// and payloads cross by device copies between and within them; adding `static constexpr bool
/// peer_access = false` makes the devices exchange events but not memory, as GPUs without peer
/// access, and payloads between them cross through staging host memory; with `using
/// transport_type = ppipe::cpu_p2p_transport`, payloads between devices that are not peers cross
/// by that transport on the ranks' streams (NCCL's semantics; see cpu_p2p_backend)
/// @tparam StageTensor host_tensor, or ppipe::device_tensor to hold the stages' tensors in the
/// device's stream-ordered memory, as a GPU backend does (see cpu_device_memory_backend)
template <class Config = default_cpu_stream_config, class StageTensor = host_tensor>
struct cpu_stream_backend_with {
  using tensor_type = host_tensor;          ///< Batches, outputs and payloads are host tensors.
  using stage_tensor_type = StageTensor;    ///< The tensors the stages' layers compute on.
  using device_type = cpu_stream_device;    ///< Each rank's device of CPU streams.
  /// @brief Config's `transport_type` where it names one, otherwise ppipe::host_transport.
  using transport_type = typename detail::cpu_transport_of<Config>::type;
  /// @brief A rank runs a stage of `Model` as a ppipe::stream_stage, enqueued on its device.
  /// @tparam Model the model type the pipeline runs
  template <class Model>
  using stage_type = stream_stage<Model, stage_tensor_type, device_type>;

  /// @brief Rank `rank`'s device, with Config's options.
  /// @param rank the pipeline rank
  /// @return a device with no streams yet
  static std::unique_ptr<device_type> make_device(int rank) {
    return std::make_unique<device_type>(Config::device_options(rank));
  }
  /// @brief With Config's `one_device`: one device for every rank, made with rank 0's options.
  /// @param ranks the pipeline's rank count
  /// @return `ranks` handles to the one device
  static std::vector<std::shared_ptr<device_type>> make_devices(int ranks)
    requires detail::one_cpu_device<Config>
  {
    const std::shared_ptr<device_type> one = make_device(0);
    return std::vector<std::shared_ptr<device_type>>(static_cast<std::size_t>(ranks), one);
  }
  /// @brief With Config's `peer_devices`: ranks spread over that many peer devices (at most one
  /// per rank), neighbours together.
  /// @param ranks the pipeline's rank count
  /// @return each rank's device
  static std::vector<std::shared_ptr<device_type>> make_devices(int ranks)
    requires detail::peer_cpu_devices<Config>
  {
    const int n = std::min(Config::peer_devices, std::max(ranks, 1));
    const peer_link link = detail::cpu_peers_without_access<Config> ? peer_link::events_only : peer_link::events_and_memory;
    std::vector<std::shared_ptr<device_type>> made;
    std::vector<std::shared_ptr<device_type>> out;
    for (int r = 0; r < ranks; ++r) {
      const auto k = static_cast<std::size_t>(r * n / ranks);
      if (k == made.size()) {
        made.push_back(made.empty() ? std::make_shared<device_type>(Config::device_options(r))
                                    : std::make_shared<device_type>(Config::device_options(r), *made.front(), link));
      }
      out.push_back(made[k]);
    }
    return out;
  }
  /// @brief Nothing to bind: the streams are the device's own threads.
  static void start_rank(int /*rank*/, device_type& /*device*/) {}
  /// @brief A host transport whose receives block without polling (the receive streams wait, and
  /// polling would take the cores that the compute streams need), or Config's transport.
  /// @param ranks the pipeline's rank count
  /// @return the transport
  static transport_type make_transport(int ranks) {
    if constexpr (std::same_as<transport_type, host_transport>) {
      return transport_type(ranks, std::chrono::microseconds(0));
    } else {
      return transport_type(ranks);
    }
  }
};

/// @brief The CPU-stream backend with its default devices.
using cpu_stream_backend = cpu_stream_backend_with<>;

/// @brief The CPU model of a GPU backend: the stages' tensors are ppipe::device_tensor, in memory
/// the device allocates in stream order, poisons when released and watches for unordered use;
/// layers and the loss (a ppipe::device_loss_function) take device tensors; the batch, the outputs
/// and every transfer are copied through host memory with copy_async.
using cpu_device_memory_backend = cpu_stream_backend_with<default_cpu_stream_config, device_tensor>;

/// @brief The default devices, with payloads between ranks carried by cpu_p2p_transport.
struct cpu_p2p_config : default_cpu_stream_config {
  using transport_type = cpu_p2p_transport;  ///< Payloads cross by NCCL-like sends and receives.
};

/// @brief The CPU model of the NCCL backend: each rank its own device, stages in its memory, and
/// every transfer an NCCL-like send or receive on the rank's send stream, grouped as the schedule
/// groups them and matched in order per pair, with sends that wait for their receives. The
/// validator proves each schedule deadlock-free under that model before it runs.
using cpu_p2p_backend = cpu_stream_backend_with<cpu_p2p_config, device_tensor>;

static_assert(backend<cpu_stream_backend>);
static_assert(backend<cpu_device_memory_backend>);
static_assert(backend<cpu_p2p_backend>);

}  // namespace ppipe
