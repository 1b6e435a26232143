#pragma once
/// @file
/// @brief The stream_device concept: where work runs, stated the way CUDA states stream and event
/// rules, so that one executor can drive a synchronous host model, a CPU model of streams and
/// (later) CUDA itself.

#include <concepts>
#include <cstddef>
#include <exception>
#include <string_view>

#include "ppipe/device/wait.hpp"

namespace ppipe {

/// @brief How work is going to touch a range of device memory (see stream_device's `use`).
enum class access : unsigned char {
  read,   ///< the work reads the range
  write,  ///< the work writes the range (possibly reading it too)
};

namespace detail {
/// The host work a concept check enqueues: any `void()` callable will do.
inline void no_host_work() noexcept {}
}  // namespace detail

/// @brief A device that runs work in stream order: the rules of CUDA streams and events, kept by
/// every model (inline_device, cpu_stream_device, a CUDA device).
///
/// **Streams.** `typename D::stream` is a cheap, copyable handle to an in-order queue of work,
/// made by `d.create_stream(name)` and valid as long as the device (the name appears in messages,
/// e.g. "rank 1 compute"). Work enqueued on one stream runs in the order it was enqueued, each item
/// after the previous one has finished. Work on different streams is **not ordered** at all,
/// except through events.
///
/// **Events.** `typename D::event` is a cheap, copyable value. `d.record(s)` returns a fresh event
/// that completes when all the work enqueued on `s` before the call has finished (cudaEventRecord).
/// Events are values: recording again returns a new event and never changes an old one (where CUDA
/// re-records an event object in place). A default-constructed event counts as complete and orders
/// nothing, as a CUDA event never recorded does.
/// - `d.wait(s, e)`: the work enqueued on `s` after this call starts only after `e` completes
///   (cudaStreamWaitEvent). The host does not block. This is the only way to order two streams.
/// - `d.query(e) -> bool`: whether `e` has completed (cudaEventQuery), without blocking.
/// - `d.synchronize(e, deadline) -> wait_status`: blocks the host until `e` completes (`ready`)
///   or the deadline passes (`timed_out`); cudaEventSynchronize with a deadline, since a wait in
///   ppipe never hangs silently.
/// - `d.synchronize(s, deadline) -> wait_status`: the same for all the work enqueued on `s` so far
///   (cudaStreamSynchronize).
/// - `d.elapsed_us(from, to) -> double`: microseconds between two completed events
///   (cudaEventElapsedTime, in µs); negative when `to` completed first.
/// - optional, `d.completed_at(e) -> deadline_clock::time_point`: the host time a completed event
///   completed at. A CPU model knows it; a GPU does not, and a trace then takes the host time of
///   the record as its rank's origin.
///
/// **Work.**
/// - `d.enqueue(s, fn)` and `d.enqueue(s, fn, label)`: runs the `void()` callable `fn` on the host
///   in stream order (cudaLaunchHostFunc). `label` says what it is ("F3 of stage 1"), for failure
///   and timeout messages.
/// - `d.copy_async(s, dst, src, bytes)`, `d.zero_async(s, dst, bytes)`: memcpy and memset in
///   stream order (cudaMemcpyAsync, cudaMemsetAsync); both declare their own accesses.
/// - `d.use(s, p, bytes, access::read | access::write)`: declares that the work enqueued next on
///   `s` reads or writes `[p, p + bytes)`. A model with a race checker reports an access that is
///   not ordered after a conflicting one on another stream; elsewhere it costs nothing.
///
/// **Stream-ordered memory** (cudaMallocAsync, cudaFreeAsync).
/// - `d.allocate(bytes, s) -> void*`: memory usable by work enqueued on `s` after the call, and by
///   other streams once they are ordered after that point (by an event).
/// - `d.release(p, s)`: `p` is freed when `s` reaches this point; work on `s` before it may still
///   use `p`. Work on another stream that uses `p` must be ordered before the release.
///
/// **Several devices** (optional members). `d.peer_of(other) -> bool`: `d`'s streams may wait for
/// `other`'s events and `other`'s for `d`'s (the GPUs of one process). `d.reaches(other) -> bool`:
/// `d`'s copies may also read and write `other`'s memory (peer access); between peers that do not
/// reach each other, data crosses through host staging memory, each copy ordered by an event.
///
/// **Host work that waits** (optional member). `d.host_work_may_wait() -> bool`: false where host
/// work must return promptly (a GPU runs it on a driver thread, and while it blocks, so do its
/// stream and other host work); absent, host work may wait.
///
/// **Failures.** `d.error() -> std::exception_ptr` is the first failure of work run by the device
/// (sticky, like a CUDA sticky error), null if none. `d.clear_error()` forgets it; it is allowed
/// only while every stream is idle and throws ppipe::error otherwise.
///
/// @tparam D the device type.
template <class D>
concept stream_device =
    std::copyable<typename D::stream> && std::copyable<typename D::event> &&
    requires(D& d, typename D::stream s, typename D::event e, std::string_view text, void* p, const void* cp,
             std::size_t n, deadline_clock::time_point deadline) {
      { d.create_stream(text) } -> std::same_as<typename D::stream>;
      d.enqueue(s, detail::no_host_work);
      d.enqueue(s, detail::no_host_work, text);
      { d.record(s) } -> std::same_as<typename D::event>;
      d.wait(s, e);
      { d.query(e) } -> std::same_as<bool>;
      { d.synchronize(e, deadline) } -> std::same_as<wait_status>;
      { d.synchronize(s, deadline) } -> std::same_as<wait_status>;
      { d.elapsed_us(e, e) } -> std::same_as<double>;
      d.copy_async(s, p, cp, n);
      d.zero_async(s, p, n);
      { d.allocate(n, s) } -> std::same_as<void*>;
      d.release(p, s);
      d.use(s, cp, n, access::read);
      { d.error() } -> std::same_as<std::exception_ptr>;
      d.clear_error();
    };

/// @brief A stream_device that gives host memory for staging copies (page-locked on a GPU,
/// cudaHostAlloc): `d.allocate_host(n) -> void*` and `d.release_host(p)`. A copy between device
/// memory and pageable host memory may make the host wait (CUDA: from device to pageable memory it
/// returns when the copy is done, and into the device it may wait for the stream); between device
/// memory and this memory it is enqueued and returns. The caller gives memory back only once no
/// enqueued copy uses it, and may reuse it for later copies meanwhile.
/// @tparam D the device type.
template <class D>
concept host_staging_device = stream_device<D> && requires(D& d, std::size_t n, void* p) {
  { d.allocate_host(n) } -> std::same_as<void*>;
  d.release_host(p);
};

/// @brief A stream_device that can capture the work enqueued on its streams into a graph and
/// replay it (CUDA stream capture and cudaGraphLaunch).
///
/// - `d.begin_capture(s)`: from now on, work enqueued on `s` is recorded instead of run.
/// - A capture spans several streams of the device as CUDA's does: `d.record(s2)` on a capturing
///   stream returns an event of the capture, and a stream that waits for such an event joins the
///   capture (its work is recorded too, after that point). Before the capture ends, `s` must join
///   every such stream back: be ordered after all of its captured work by waits for events of the
///   capture (directly, or through other streams of it).
/// - An event of a capture is a node of the graph: it orders the capture's streams among
///   themselves, completes only in a launch, and `query`, `synchronize` and `elapsed_us` of it
///   throw; waiting for it once the capture has ended throws too. A capturing stream may wait for
///   an event from before the capture: every launch waits for it.
/// - `d.end_capture(s) -> graph`: on the stream that began the capture, stops recording on every
///   stream of the capture and returns what was recorded (`typename D::graph`, a cheap copyable
///   handle); it throws, and the capture goes on, where a joined stream was not joined back.
/// - `d.launch(g, s)`: enqueues the recorded work again: after the work enqueued on `s` so far,
///   and before the work enqueued on `s` next, with the branches as captured, ordered among
///   themselves by the capture's events alone (not by the streams they were captured on).
///
/// While a stream is capturing, `synchronize(stream, ...)` on it throws ppipe::error (the work it
/// would wait for has not run). `allocate(..., stream)` gives memory the graph owns, at the same
/// address in every launch (CUDA's allocation nodes), and `release` of it in the capture frees it
/// in every launch; the capture must release all it allocates (else end_capture throws), and
/// releasing memory from before the capture throws. Launches of one graph run one after another.
/// @tparam D the device type.
template <class D>
concept capturing_stream_device =
    stream_device<D> && std::copyable<typename D::graph> &&
    requires(D& d, typename D::stream s, const typename D::graph& g) {
      d.begin_capture(s);
      { d.end_capture(s) } -> std::same_as<typename D::graph>;
      d.launch(g, s);
    };

}  // namespace ppipe
