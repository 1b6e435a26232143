#pragma once
/// @file
/// @brief The stream_transport concept: point-to-point transfers that run on a device's streams,
/// grouped as NCCL groups them, with no host thread waiting for them.

#include <chrono>
#include <concepts>
#include <cstddef>
#include <exception>
#include <span>
#include <string>
#include <string_view>

#include "ppipe/device/stream_device.hpp"
#include "ppipe/error.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/tensor/tensor_view.hpp"
#include "ppipe/transport/transport.hpp"

namespace ppipe {

/// @brief A transport whose sends and receives are work on the ranks' streams, as NCCL's are:
/// the host enqueues them and goes on; the stream runs them in order with its other work.
///
/// Its members, and what the executor relies on:
/// - `tensor_type`: the tensors of the batches a caller passes (host_tensor), as for a transport;
/// - `device_type`: the stream_device whose streams carry the transfers;
/// - `void begin_group(int rank)` and `void end_group(int rank)`, called by rank `rank`'s thread
///   around its transfers (ncclGroupStart/ncclGroupEnd): the transfers between them are issued
///   together when the outermost group ends, and none of them holds up another; groups nest;
/// - `void send(int from, int to, const void* data, std::size_t bytes, device_type&, stream,
///   std::string_view what)`: sends `bytes` bytes at `data` from rank `from` to rank `to` on the
///   stream, which reads them when it gets there and goes on only once the whole group has moved
///   (ncclSend); `what` names the transfer for hang reports ("1SEND_F3 of stage 1");
/// - `void recv(int from, int to, void* data, std::size_t bytes, device_type&, stream,
///   std::string_view what)`: the same for rank `to`'s receive into `data` (ncclRecv). The k-th
///   receive a rank posts from a peer matches the k-th send the peer posts to it, and both give the
///   same byte count;
/// - `void abort()`: ends every transfer in flight, which throws transfers_aborted on its stream (a
///   rank failed);
/// - `void reset()`: readies the transport for the next run, once every stream has drained;
/// - `int num_ranks() const`.
/// Optional members, which the executor's watchdog calls every 20 ms while it waits for the
/// rank's streams: `bool peer_failed()`, whether a rank of another process has reported a failure
/// (the rank then stops, without a failure of its own); `std::exception_ptr poll_failure()`, where
/// a transport acts on abort() from the host (NCCL aborts its communicator, which ends its
/// kernels) and reports an asynchronous failure of its own (null: none).
/// Every transfer of a group goes on one stream. A send keeps its stream waiting until its
/// receive has been posted (transfer_model::rendezvous): the executor issues each run of
/// consecutive transfers of a rank's schedule as one group, and the validator proves the
/// schedule deadlock-free under that model before it runs.
template <class T>
concept stream_transport =
    stream_device<typename T::device_type> &&
    requires(T& t, const T& ct, int rank, const void* data, void* into, std::size_t bytes,
             typename T::device_type& d, typename T::device_type::stream s, std::string_view what) {
      typename T::tensor_type;
      { ct.num_ranks() } -> std::convertible_to<int>;
      t.begin_group(rank);
      t.send(rank, rank, data, bytes, d, s, what);
      t.recv(rank, rank, into, bytes, d, s, what);
      t.end_group(rank);
      t.abort();
      t.reset();
    };

/// @brief A stream transport whose processes are also data-parallel replicas of the pipeline, and
/// which averages a stage's gradients over them on the device's streams (ncclAllReduce with
/// ncclAvg over the communicator of the processes that run the same pipeline rank).
///
/// - `int replicas() const`: how many copies of the pipeline the job runs (1: none to average);
/// - `void allreduce_mean(std::span<const tensor_view> gradients, device_type&, stream,
///   std::chrono::milliseconds timeout)`: enqueues on the stream, after the work already there,
///   the replacement of each gradient (in the device's memory) by its mean over the replicas, and
///   returns at once; every replica enqueues the same gradients, in the same order. The work on the
///   stream waits for the other replicas for at most `timeout`, or as the transport's watchdog
///   decides.
/// The pipeline enqueues it before the optimizer hook of each stage, on the stage's stream, once
/// every replica's step has succeeded.
template <class T>
concept stream_replicas =
    stream_transport<T> && requires(T& t, const T& ct, std::span<const tensor_view> gradients,
                                    typename T::device_type& d, typename T::device_type::stream s) {
      { ct.replicas() } -> std::convertible_to<int>;
      t.allreduce_mean(gradients, d, s, std::chrono::milliseconds{});
    };

/// @brief What a stream transport's work throws when the transport was aborted (a rank failed,
/// here or in another process): the rank stops, and this is not its failure.
class transfers_aborted : public error {
 public:
  /// @param why which transfers stopped, and why
  explicit transfers_aborted(const std::string& why) : error(errc::backend, why) {}
};

/// @brief Whether `e`, or an exception nested in it, is a transfers_aborted.
/// @param e a failure a device reported
/// @return true when the transfers were aborted, not failed
inline bool is_transfers_aborted(const std::exception_ptr& e) {
  if (!e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const transfers_aborted&) {
    return true;
  } catch (const std::exception& outer) {
    try {
      std::rethrow_if_nested(outer);
    } catch (...) {
      return is_transfers_aborted(std::current_exception());
    }
  } catch (...) {
  }
  return false;
}

/// @brief What a pipeline may move its payloads with: a transport of host work, or one that runs
/// on the device's streams.
template <class T>
concept pipeline_transport = transport<T> || stream_transport<T>;

/// @brief The transfer model a schedule must be deadlock-free under for transport `T`: its
/// `static constexpr transfer_model model`; without one, rendezvous for a stream transport (NCCL's
/// sends wait for their receives) and buffered otherwise (host mailboxes, MPI_Isend).
template <class T>
inline constexpr transfer_model transfer_model_of = [] {
  if constexpr (requires { { T::model } -> std::convertible_to<transfer_model>; }) {
    return T::model;
  } else if constexpr (stream_transport<T>) {
    return transfer_model::rendezvous;
  } else {
    return transfer_model::buffered;
  }
}();

}  // namespace ppipe
