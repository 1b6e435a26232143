#pragma once
/// @file
/// @brief ppipe::inline_device, the synchronous model of stream_device: every item runs at once on
/// the caller's thread. The host backend runs on it, so it must cost next to nothing.

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstring>
#include <exception>
#include <new>
#include <string_view>
#include <utility>

#include "ppipe/device/stream_device.hpp"
#include "ppipe/device/wait.hpp"

namespace ppipe {

/// @brief A stream_device whose streams are the calling thread: enqueue() runs the work before it
/// returns, so everything is complete as soon as it is enqueued and no two streams can race.
///
/// Failures are not sticky here: an exception thrown by enqueued work propagates out of enqueue()
/// to the caller, as any direct call would, and error() stays null. Code written for the concept
/// must therefore expect a failure either from the enqueue call or from error().
class inline_device {
 public:
  /// @brief A stream: empty, since every stream is the caller's thread.
  struct stream {
    /// @brief Every two streams compare equal: they all name the caller's thread.
    /// @return true.
    friend constexpr bool operator==(stream, stream) noexcept = default;
  };
  /// @brief An event: the time at which it was recorded, which is when it completed.
  struct event {
    deadline_clock::time_point at{};  ///< when record() was called
  };

  /// @brief The alignment of every allocation, as a cache line (and CUDA's 256 covers it).
  static constexpr std::size_t alignment = 64;

  /// @brief Makes a stream.
  /// @param name what the stream is for; unused, as nothing here can time out or fail later.
  /// @return an empty handle.
  [[nodiscard]] stream create_stream(std::string_view name) const noexcept {
    static_cast<void>(name);
    return {};
  }

  /// @brief Runs `fn` now, on the calling thread; its exceptions reach the caller.
  /// @param s the stream (unused).
  /// @param fn a `void()` callable.
  template <std::invocable F>
  void enqueue(stream s, F&& fn) const {
    static_cast<void>(s);
    std::forward<F>(fn)();
  }

  /// @brief Runs `fn` now, on the calling thread; its exceptions reach the caller unchanged.
  /// @param s the stream (unused).
  /// @param fn a `void()` callable.
  /// @param label what the work is (unused: an exception already names the caller's context).
  template <std::invocable F>
  void enqueue(stream s, F&& fn, std::string_view label) const {
    static_cast<void>(label);
    enqueue(s, std::forward<F>(fn));
  }

  /// @brief Records an event: complete at once, holding the current time for elapsed_us().
  /// @param s the stream (unused).
  /// @return the event.
  [[nodiscard]] event record(stream s) const noexcept {
    static_cast<void>(s);
    return {deadline_clock::now()};
  }

  /// @brief Nothing to do: the event completed before this call.
  /// @param s the stream that would wait (unused).
  /// @param e the event to wait for (unused).
  void wait(stream s, event e) const noexcept {
    static_cast<void>(s);
    static_cast<void>(e);
  }

  /// @brief Whether `e` has completed: always.
  /// @param e the event (unused).
  /// @return true.
  [[nodiscard]] bool query(event e) const noexcept {
    static_cast<void>(e);
    return true;
  }

  /// @brief Waits for an event: it has already completed, so this returns at once.
  /// @param e the event (unused).
  /// @param deadline when to give up (unused: nothing is ever pending).
  /// @return wait_status::ready.
  [[nodiscard]] wait_status synchronize(event e, deadline_clock::time_point deadline) const noexcept {
    static_cast<void>(e);
    static_cast<void>(deadline);
    return wait_status::ready;
  }

  /// @brief Waits for a stream: its work has already run, so this returns at once.
  /// @param s the stream (unused).
  /// @param deadline when to give up (unused: nothing is ever pending).
  /// @return wait_status::ready.
  [[nodiscard]] wait_status synchronize(stream s, deadline_clock::time_point deadline) const noexcept {
    static_cast<void>(s);
    static_cast<void>(deadline);
    return wait_status::ready;
  }

  /// @brief The time between two events.
  /// @param from the earlier event.
  /// @param to the later event.
  /// @return microseconds from `from` to `to` (negative if `to` was recorded first).
  [[nodiscard]] double elapsed_us(event from, event to) const noexcept {
    return std::chrono::duration<double, std::micro>(to.at - from.at).count();
  }

  /// @brief Copies `bytes` bytes from `src` to `dst` now, on the calling thread (the ranges
  /// must not overlap).
  /// @param s the stream (unused).
  /// @param dst where to copy to.
  /// @param src where to copy from.
  /// @param bytes how many bytes to copy; zero copies nothing, and then the pointers may be null.
  void copy_async(stream s, void* dst, const void* src, std::size_t bytes) const noexcept {
    static_cast<void>(s);
    if (bytes != 0) std::memcpy(dst, src, bytes);
  }

  /// @brief Zeroes `bytes` bytes at `dst` now, on the calling thread.
  /// @param s the stream (unused).
  /// @param dst the memory to zero.
  /// @param bytes how many bytes to zero; zero writes nothing, and then `dst` may be null.
  void zero_async(stream s, void* dst, std::size_t bytes) const noexcept {
    static_cast<void>(s);
    if (bytes != 0) std::memset(dst, 0, bytes);
  }

  /// @brief Allocates `bytes` bytes aligned to `alignment` (at least one byte, so that every
  /// allocation has its own address).
  /// @param bytes the size.
  /// @param s the stream (unused: the memory may be used on any stream at once).
  /// @return the memory; std::bad_alloc when there is none.
  [[nodiscard]] void* allocate(std::size_t bytes, stream s) const {
    static_cast<void>(s);
    return ::operator new(bytes == 0 ? 1 : bytes, std::align_val_t{alignment});
  }

  /// @brief Frees memory from allocate() now: the work that used it has already run.
  /// @param p the memory, or nullptr (ignored).
  /// @param s the stream (unused).
  void release(void* p, stream s) const noexcept {
    static_cast<void>(s);
    if (p != nullptr) ::operator delete(p, std::align_val_t{alignment});
  }

  /// @brief Nothing to check: work runs in the order it is enqueued, whatever its stream.
  /// @param s the stream the access would be on (unused).
  /// @param p the start of the range (unused).
  /// @param bytes the range's size (unused).
  /// @param mode whether the work reads or writes it (unused).
  void use(stream s, const void* p, std::size_t bytes, access mode) const noexcept {
    static_cast<void>(s);
    static_cast<void>(p);
    static_cast<void>(bytes);
    static_cast<void>(mode);
  }

  /// @brief Failures are thrown by enqueue() itself, so none is ever kept.
  /// @return a null exception_ptr.
  [[nodiscard]] std::exception_ptr error() const noexcept { return {}; }

  /// @brief Nothing to clear, and no stream is ever busy.
  void clear_error() const noexcept {}
};

static_assert(stream_device<inline_device>);

}  // namespace ppipe
