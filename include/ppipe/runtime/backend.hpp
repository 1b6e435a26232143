#pragma once
/// @file
/// @brief A backend is a type: it says what tensors are, where and how a rank computes (its
/// device and stage), and how ranks exchange payloads. ppipe::pipeline takes one.

#include <concepts>
#include <memory>

#include "ppipe/device/inline_device.hpp"
#include "ppipe/model/model.hpp"
#include "ppipe/runtime/stage.hpp"
#include "ppipe/tensor/device_tensor.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/transport/host.hpp"
#include "ppipe/transport/stream_transport.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe {

namespace detail {
template <class B>
struct backend_stage_tensor {
  using type = typename B::tensor_type;
};
template <class B>
  requires requires { typename B::stage_tensor_type; }
struct backend_stage_tensor<B> {
  using type = typename B::stage_tensor_type;
};
}  // namespace detail

/// @brief The tensors a backend's stages compute on: `B::stage_tensor_type`, or its `tensor_type`.
template <class B>
using backend_stage_tensor = typename detail::backend_stage_tensor<B>::type;

/// @brief What ppipe::pipeline needs of a backend type B:
/// - `B::tensor_type`: the tensors of the batches a caller passes and of the transport's payloads,
///   a ppipe::batch_tensor (host_tensor);
/// - optional `B::stage_tensor_type`: the tensors the stages' layers read and write, when they are
///   not `tensor_type`: ppipe::device_tensor, whose bytes live in the device's memory (the
///   pipeline copies the batch in and out, and the transfers, through host memory); the loss is
///   then a ppipe::device_loss_function;
/// - `B::device_type`: the backend's model of stream-ordered execution (ppipe::inline_device runs
///   every call at once on the rank's thread); layers get a device_context<device_type> per stage;
/// - `B::transport_type`: a ppipe::transport of `tensor_type` payloads, or, for stages on a stream
///   device, a ppipe::stream_transport whose transfers run on that device's streams;
/// - `template <class Model> using stage_type`: how a rank runs a stage of `Model` (a
///   ppipe::pipeline_stage), built as `stage_type<Model>(model, index, first, end, m, context)`;
/// - `static std::unique_ptr<device_type> make_device(int rank)`: rank `rank`'s device, made once
///   per local rank when the pipeline is built;
/// - optional `static std::vector<std::shared_ptr<device_type>> make_devices(int ranks)`: the
///   devices of every rank of a pipeline in one process, where ranks may share one (stages on one
///   GPU); ranks that share a device hand each other payloads by device copies, not the transport;
/// - `static void start_rank(int rank, device_type&)`: runs on the rank's thread before its first
///   action, once (a CUDA rank binds its thread to its GPU here).
template <class B>
concept backend =
    requires(int rank, typename B::device_type& device) {
      typename B::tensor_type;
      typename B::device_type;
      typename B::transport_type;
      { B::make_device(rank) } -> std::same_as<std::unique_ptr<typename B::device_type>>;
      B::start_rank(rank, device);
    } && batch_tensor<typename B::tensor_type> && pipeline_transport<typename B::transport_type> &&
    std::same_as<typename B::transport_type::tensor_type, typename B::tensor_type> &&
    (std::same_as<backend_stage_tensor<B>, typename B::tensor_type> ||
     std::same_as<backend_stage_tensor<B>, device_tensor>);

/// @brief The layer context a backend's layers get.
template <backend B>
using backend_context = basic_layer_context<typename B::device_type>;

/// @brief The host backend: ranks are threads of this process, tensors live in host memory, each
/// layer call runs to completion on its rank's thread, and payloads are copied between threads.
/// Over another transport of host tensors (ppipe::mpi's), the same backend runs one rank per
/// process: see host_backend_over.
template <transport Transport = host_transport>
  requires std::same_as<typename Transport::tensor_type, host_tensor>
struct host_backend_over {
  using tensor_type = host_tensor;     ///< Batches, stages and payloads are host tensors.
  using device_type = inline_device;   ///< Each call runs to completion on the rank's thread.
  using transport_type = Transport;    ///< How ranks exchange payloads.
  /// @brief A rank runs a stage of `Model` as a ppipe::stage on host tensors and the inline device.
  /// @tparam Model the model type the pipeline runs
  template <class Model>
  using stage_type = stage<Model, tensor_type, device_type>;

  /// @brief The host needs no device of its own: an inline one runs each call on the rank's thread.
  /// Every rank gets the same kind of device, so the rank is not used.
  /// @return a new inline device
  static std::unique_ptr<device_type> make_device(int /*rank*/) { return std::make_unique<device_type>(); }
  /// @brief Nothing to bind on the host.
  static void start_rank(int /*rank*/, device_type& /*device*/) {}
};

/// @brief The default backend: rank threads of this process over host_transport.
using host_backend = host_backend_over<host_transport>;

static_assert(backend<host_backend>);

}  // namespace ppipe
