#pragma once
/// @file
/// @brief The Transport concept: asynchronous point-to-point transfer of payloads between ranks.

#include <concepts>
#include <string_view>
#include <utility>

#include "ppipe/device/wait.hpp"
#include "ppipe/tensor/tensor.hpp"

namespace ppipe {

/// @brief A transport moves payloads between pipeline ranks, point to point and asynchronously.
///
/// Its members, and what the executor relies on:
/// - `tensor_type`: the buffer type it moves (host_tensor for the host transport).
/// - `send_handle post_send(int from, int to, const basic_payload<tensor_type>& data)`: starts
///   sending `data`. On a device the data is read after the work the rank has already issued, so
///   the call returns before the bytes have moved; `data` must stay alive and unchanged until
///   complete_send() says ready.
/// - `recv_handle post_recv(int from, int to)`: starts receiving the next message from `from`.
///   Messages between two ranks in one direction arrive in the order they were sent, whatever
///   their kind (NCCL matches point-to-point messages by order, with no tag), so the k-th receive
///   posted for a pair matches its k-th send.
/// - `wait_status complete_recv(recv_handle&, basic_payload<tensor_type>& into, deadline)`: makes
///   the received data usable by the rank's next compute, in `into`. The host transport blocks
///   until the data has arrived; a device transport may instead order its compute stream after
///   the receive and return at once, so the executor never assumes that returning means the bytes
///   are there: it only assumes that work it issues afterwards sees them.
/// - `wait_status complete_send(send_handle&, deadline)`: after ready, the sent buffer may be
///   reused or freed.
/// - `void abort()`: wakes every wait with `aborted`; used when a rank fails.
/// - `void reset()`: readies the transport for the next run; called between runs, never during one.
/// - `int num_ranks() const`.
/// - optionally `static constexpr bool fills_given_buffers = true`: complete_recv() writes into
///   the tensors `into` already holds when their shapes are what arrived (replacing them
///   otherwise). The executor then hands each receive buffers of the expected shapes from the
///   receiving stage's pool, so a steady run does not allocate a buffer per message. Without it,
///   `into` is empty and the transport puts its own tensors there.
template <class T>
concept transport = requires(T& t, const T& ct, int rank, typename T::send_handle& sh,
                             typename T::recv_handle& rh, const basic_payload<typename T::tensor_type>& data,
                             basic_payload<typename T::tensor_type>& into, deadline_clock::time_point deadline) {
  typename T::tensor_type;
  { ct.num_ranks() } -> std::convertible_to<int>;
  { t.post_send(rank, rank, data) } -> std::same_as<typename T::send_handle>;
  { t.post_recv(rank, rank) } -> std::same_as<typename T::recv_handle>;
  { t.complete_recv(rh, into, deadline) } -> std::same_as<wait_status>;
  { t.complete_send(sh, deadline) } -> std::same_as<wait_status>;
  t.abort();
  t.reset();
};

/// @brief Whether transport `T` receives into the buffers it is given (see `fills_given_buffers`).
template <class T>
inline constexpr bool fills_given_buffers = requires { requires T::fills_given_buffers; };

/// @brief Says, in a transport's post_send() and post_recv(), that both ends of the transfer know
/// the payload's shapes ahead (see agrees_shapes).
struct agreed_shapes_t {
  /// @brief Explicit, so that `{}` never converts to the tag by accident; use agreed_shapes.
  explicit agreed_shapes_t() = default;
};
/// @brief The tag value to pass for agreed_shapes_t: `t.post_send(from, to, data, agreed_shapes)`.
inline constexpr agreed_shapes_t agreed_shapes{};

/// @brief A transport that can move a payload without describing it, when both of its ends know
/// its shapes ahead (a pipeline knows every boundary's shapes from output_shapes() before a run):
/// - `post_send(from, to, data, agreed_shapes)`: the matching receive is posted with
///   agreed_shapes and buffers of exactly `data`'s shapes;
/// - `post_recv(from, to, agreed_shapes, buffers)`: the matching send is posted with
///   agreed_shapes and its payload has exactly `buffers`' shapes; it arrives in `buffers`, which
///   complete_recv() hands back.
/// Both ends of a transfer use the same form. The executor uses this form for every transfer of a
/// run whose shapes it knows, after checking that what it sends has the shapes the receiving stage
/// takes (a mismatch is an error on the sending rank). The MPI transport then sends a payload as
/// one message of its values alone, from and into the tensors' memory: for one tensor, what a
/// program calling MPI itself would send.
template <class T>
concept agrees_shapes = transport<T> && requires(T& t, int rank, const basic_payload<typename T::tensor_type>& data,
                                                 basic_payload<typename T::tensor_type> buffers) {
  { t.post_send(rank, rank, data, agreed_shapes) } -> std::same_as<typename T::send_handle>;
  { t.post_recv(rank, rank, agreed_shapes, std::move(buffers)) } -> std::same_as<typename T::recv_handle>;
};

}  // namespace ppipe
