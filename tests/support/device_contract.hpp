#pragma once
// The stream_device contract, written once: each body takes a device of any model and checks what
// the concept promises. tests/unit/test_device.cpp runs them on the CPU models, and
// tests/backend/cuda_device_test.cpp on a GPU. Device memory is touched only through the device
// (copies and zeroes), and host work touches only host memory from `staging`, as on a GPU.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <latch>
#include <new>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch.hpp>

#include "error_message.hpp"
#include "ppipe/device/stream_device.hpp"
#include "ppipe/error.hpp"

namespace device_contract {

using namespace std::chrono_literals;
using ppipe::deadline_clock;
using ppipe::wait_status;
using ppipe_test::contains;
using support::error_of;

/// Host memory that stream work may read and write in stream order: plain memory for the CPU
/// models; a GPU's test specialises it with pinned memory, which copies read when they run.
template <class Device>
struct staging {
  static void* allocate(std::size_t bytes) { return ::operator new(bytes, std::align_val_t{64}); }
  static void free(void* p) noexcept { ::operator delete(p, std::align_val_t{64}); }
};

/// `n` values of T in staging memory, zero-filled.
template <class Device, class T>
class host_buffer {
 public:
  explicit host_buffer(std::size_t n) : n_(n), p_(static_cast<T*>(staging<Device>::allocate(n * sizeof(T)))) {
    for (std::size_t i = 0; i < n; ++i) p_[i] = T{};
  }
  ~host_buffer() { staging<Device>::free(p_); }
  host_buffer(const host_buffer&) = delete;
  host_buffer& operator=(const host_buffer&) = delete;
  [[nodiscard]] T* data() const noexcept { return p_; }
  T& operator[](std::size_t i) const noexcept { return p_[i]; }

 private:
  std::size_t n_;
  T* p_;
};

inline deadline_clock::time_point soon() { return deadline_clock::now() + 10s; }


/// Work on one stream runs in the order it was enqueued.
template <class Device>
void in_order(Device& d) {
  auto s = d.create_stream("only");
  std::vector<int> seen;
  for (int k = 0; k < 100; ++k) d.enqueue(s, [&seen, k] { seen.push_back(k); });
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  std::vector<int> expected(100);
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(seen == expected);
}

/// A producer fills a device buffer round after round and a consumer copies it out: events order
/// the consumer after each fill, and the next fill after the consumer's copy, so every round's
/// sum is that round's.
template <class Device>
void ping_pong(Device& d, int rounds) {
  constexpr std::size_t n = 256;
  constexpr std::size_t bytes = n * sizeof(float);
  const auto all = n * static_cast<std::size_t>(rounds);
  auto producer = d.create_stream("producer");
  auto consumer = d.create_stream("consumer");
  auto* shared = static_cast<float*>(d.allocate(bytes, producer));
  auto* copy = static_cast<float*>(d.allocate(bytes, consumer));
  host_buffer<Device, float> in(all);
  host_buffer<Device, float> out(all);
  std::vector<double> sums(static_cast<std::size_t>(rounds), -1.0);
  typename Device::event consumed{};
  for (int r = 0; r < rounds; ++r) {
    float* src = in.data() + n * static_cast<std::size_t>(r);
    float* dst = out.data() + n * static_cast<std::size_t>(r);
    d.wait(producer, consumed);
    d.zero_async(producer, shared, bytes);
    d.enqueue(producer, [src, r] {
      for (std::size_t i = 0; i < n; ++i) src[i] = static_cast<float>(r + 1);
    }, "fill");
    d.copy_async(producer, shared, src, bytes);
    d.wait(consumer, d.record(producer));
    d.copy_async(consumer, copy, shared, bytes);
    consumed = d.record(consumer);
    d.copy_async(consumer, dst, copy, bytes);
    d.enqueue(consumer, [dst, &sums, r] {
      sums[static_cast<std::size_t>(r)] = std::accumulate(dst, dst + n, 0.0);
    }, "sum");
  }
  REQUIRE(d.synchronize(consumer, soon()) == wait_status::ready);
  REQUIRE(d.synchronize(producer, soon()) == wait_status::ready);
  for (int r = 0; r < rounds; ++r) CHECK(sums[static_cast<std::size_t>(r)] == static_cast<double>(n) * (r + 1));
  d.wait(producer, d.record(consumer));
  d.release(copy, producer);
  d.release(shared, producer);
  REQUIRE(d.synchronize(producer, soon()) == wait_status::ready);
  CHECK(d.error() == nullptr);
}

/// Copies and zeroes move the bytes in stream order; allocations are aligned.
template <class Device>
void copies_and_zeroes(Device& d) {
  auto s = d.create_stream("copies");
  constexpr std::size_t n = 100;
  constexpr std::size_t bytes = n * sizeof(int);
  auto* a = static_cast<int*>(d.allocate(bytes, s));
  auto* b = static_cast<int*>(d.allocate(bytes, s));
  CHECK(reinterpret_cast<std::uintptr_t>(a) % 64 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(b) % 64 == 0);
  host_buffer<Device, int> sevens(n);
  host_buffer<Device, int> out(n);
  for (std::size_t i = 0; i < n; ++i) sevens[i] = 7;
  d.zero_async(s, a, bytes);
  d.copy_async(s, a + 10, sevens.data() + 10, 5 * sizeof(int));
  d.copy_async(s, b, a, bytes);
  d.copy_async(s, out.data(), b, bytes);
  d.copy_async(s, a, b, 0);  // nothing to move
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(out[0] == 0);
  CHECK(out[9] == 0);
  CHECK(out[10] == 7);
  CHECK(out[14] == 7);
  CHECK(out[15] == 0);
  CHECK(out[n - 1] == 0);
  d.release(a, s);
  d.release(b, s);
  d.release(nullptr, s);
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
}

/// A host_staging_device's staging memory: copies to and from it run in stream order and carry
/// the bytes; blocks are distinct and writable; giving one back (or nullptr) is accepted.
template <class Device>
void staging_memory(Device& d) {
  auto s = d.create_stream("staging");
  constexpr std::size_t n = 1000;
  auto* in = static_cast<float*>(d.allocate_host(n * sizeof(float)));
  auto* out = static_cast<float*>(d.allocate_host(n * sizeof(float)));
  REQUIRE(in != nullptr);
  REQUIRE(out != nullptr);
  CHECK(in != out);
  for (std::size_t i = 0; i < n; ++i) in[i] = static_cast<float>(i) * 0.5f;
  auto* dev = d.allocate(n * sizeof(float), s);
  d.copy_async(s, dev, in, n * sizeof(float));
  d.copy_async(s, out, dev, n * sizeof(float));
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  for (std::size_t i = 0; i < n; i += 111) CHECK(out[i] == static_cast<float>(i) * 0.5f);
  d.release(dev, s);
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  d.release_host(in);
  d.release_host(out);
  d.release_host(nullptr);
  void* again = d.allocate_host(0);  // no bytes is still a block to give back
  d.release_host(again);
}

/// Peer devices (as GPUs of one process): b's stream waits for a's event and copies a's memory;
/// a frees its block after b's event; the values arrive, and each device counts its own pool.
template <class Device>
void peers_exchange(Device& a, Device& b) {
  REQUIRE(a.peer_of(b));
  REQUIRE(b.peer_of(a));
  auto sa = a.create_stream("a compute");
  auto sb = b.create_stream("b receive");
  constexpr std::size_t n = 64;
  auto* from = static_cast<float*>(a.allocate(n * sizeof(float), sa));
  auto* to = static_cast<float*>(b.allocate(n * sizeof(float), sb));
  host_buffer<Device, float> in(n), out(n);
  for (std::size_t i = 0; i < n; ++i) in[i] = static_cast<float>(i) + 0.25f;
  a.copy_async(sa, from, in.data(), n * sizeof(float));
  b.wait(sb, a.record(sa));  // a's event, on b's stream
  b.copy_async(sb, to, from, n * sizeof(float));
  b.copy_async(sb, out.data(), to, n * sizeof(float));
  const auto copied = b.record(sb);
  a.wait(sa, copied);  // a frees its block only after b's copy
  a.release(from, sa);
  REQUIRE(a.synchronize(copied, soon()) == wait_status::ready);  // b's event, synchronized by a
  for (std::size_t i = 0; i < n; ++i) CHECK(out[i] == static_cast<float>(i) + 0.25f);
  b.release(to, sb);
  REQUIRE(b.synchronize(sb, soon()) == wait_status::ready);
  REQUIRE(a.synchronize(sa, soon()) == wait_status::ready);
  CHECK(a.memory().bytes_in_use == 0);
  CHECK(b.memory().bytes_in_use == 0);
}

/// Peers that may not reach each other's memory still exchange data through staging host memory:
/// a's stream copies out, b's stream waits for a's event and copies in; a gives the staging memory
/// back once b's copy has run.
template <class Device>
void peers_exchange_through_host(Device& a, Device& b) {
  REQUIRE(b.peer_of(a));
  auto sa = a.create_stream("a send");
  auto sb = b.create_stream("b receive");
  constexpr std::size_t n = 64;
  constexpr std::size_t bytes = n * sizeof(float);
  auto* from = static_cast<float*>(a.allocate(bytes, sa));
  auto* to = static_cast<float*>(b.allocate(bytes, sb));
  host_buffer<Device, float> in(n), out(n);
  for (std::size_t i = 0; i < n; ++i) in[i] = static_cast<float>(i) - 0.5f;
  void* hop = a.allocate_host(bytes);
  a.copy_async(sa, from, in.data(), bytes);
  a.copy_async(sa, hop, from, bytes);
  a.release(from, sa);  // a's own copy has read it: no need to wait for b
  b.wait(sb, a.record(sa));
  b.copy_async(sb, to, hop, bytes);
  b.copy_async(sb, out.data(), to, bytes);
  b.release(to, sb);
  REQUIRE(b.synchronize(sb, soon()) == wait_status::ready);
  a.release_host(hop);
  for (std::size_t i = 0; i < n; ++i) CHECK(out[i] == static_cast<float>(i) - 0.5f);
  REQUIRE(a.synchronize(sa, soon()) == wait_status::ready);
  CHECK(a.memory().bytes_in_use == 0);
  CHECK(b.memory().bytes_in_use == 0);
}

/// elapsed_us measures the work between two events, negative in the other order.
template <class Device>
void elapsed(Device& d) {
  auto s = d.create_stream("timed");
  const auto before = d.record(s);
  d.enqueue(s, [] { std::this_thread::sleep_for(2ms); }, "sleep 2 ms");
  const auto after = d.record(s);
  REQUIRE(d.synchronize(after, soon()) == wait_status::ready);
  CHECK(d.query(before));
  CHECK(d.query(after));
  CHECK(d.elapsed_us(before, after) >= 2000.0);
  CHECK(d.elapsed_us(after, before) <= -2000.0);
}

/// A stream waiting for an event that does not complete: synchronize times out (on the stream
/// and on the event), and returns ready once it does. `while_blocked(d, producer, consumer)`
/// checks what a model can say about the blocked streams.
template <class Device, class WhileBlocked>
void blocked_stream_times_out(Device& d, WhileBlocked&& while_blocked) {
  auto producer = d.create_stream("producer");
  auto consumer = d.create_stream("consumer");
  std::latch gate(1);
  std::atomic<bool> consumer_ran{false};
  d.enqueue(producer, [&gate] { gate.wait(); }, "blocked host work");
  const auto e = d.record(producer);
  d.wait(consumer, e);
  d.enqueue(consumer, [&consumer_ran] { consumer_ran = true; }, "after the event");

  CHECK(d.synchronize(consumer, deadline_clock::now() + 50ms) == wait_status::timed_out);
  CHECK(d.synchronize(e, deadline_clock::now() + 10ms) == wait_status::timed_out);
  CHECK(d.synchronize(e, ppipe::already_passed) == wait_status::timed_out);
  CHECK_FALSE(d.query(e));
  CHECK_FALSE(consumer_ran);
  while_blocked(d, producer, consumer);

  gate.count_down();
  CHECK(d.synchronize(consumer, soon()) == wait_status::ready);
  CHECK(d.query(e));
  CHECK(consumer_ran);
}

/// Events are values: recording again leaves an earlier one alone, and one never recorded is
/// complete and orders nothing.
template <class Device>
void events_are_values(Device& d) {
  auto s = d.create_stream("s");
  const auto first = d.record(s);
  REQUIRE(d.synchronize(first, soon()) == wait_status::ready);
  std::latch gate(1);
  d.enqueue(s, [&gate] { gate.wait(); }, "blocked");
  const auto second = d.record(s);
  const auto copy = second;
  CHECK(d.query(first));  // recording again did not change it, as re-recording a CUDA event would
  CHECK_FALSE(d.query(second));
  CHECK_FALSE(d.query(copy));
  const typename Device::event never{};
  CHECK(d.query(never));
  CHECK(d.synchronize(never, ppipe::already_passed) == wait_status::ready);
  auto other = d.create_stream("other");
  d.wait(other, never);  // orders nothing
  CHECK(d.synchronize(other, soon()) == wait_status::ready);
  CHECK_THAT(error_of([&] { static_cast<void>(d.elapsed_us(first, second)); }), contains("has not completed"));
  gate.count_down();
  REQUIRE(d.synchronize(copy, soon()) == wait_status::ready);
  CHECK(d.query(second));
  CHECK(d.elapsed_us(first, second) >= 0.0);
}

/// Host work that throws sets the sticky error, named by stream and item with the original
/// nested; later host work is skipped (on other streams too) while events still complete; once
/// cleared, the next failure is kept.
template <class Device>
void failure_is_sticky(Device& d) {
  auto s1 = d.create_stream("rank 1 compute");
  auto s2 = d.create_stream("rank 2 compute");
  std::atomic<int> ran{0};
  d.enqueue(s1, [] { throw std::runtime_error("boom"); }, "F3 of stage 1");
  d.enqueue(s1, [&ran] { ++ran; }, "F4 of stage 1");
  const auto e1 = d.record(s1);
  d.wait(s2, e1);
  d.enqueue(s2, [&ran] { ++ran; }, "F3 of stage 2");
  const auto e2 = d.record(s2);

  REQUIRE(d.synchronize(e2, soon()) == wait_status::ready);
  CHECK(d.query(e1));
  CHECK(ran == 0);
  REQUIRE(d.error() != nullptr);
  try {
    std::rethrow_exception(d.error());
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::stage_failed);
    CHECK_THAT(e.what(), contains("stream 'rank 1 compute', item 'F3 of stage 1' threw: boom"));
    try {
      std::rethrow_if_nested(e);
      FAIL("the original exception is not nested");
    } catch (const std::runtime_error& original) {
      CHECK(std::string(original.what()) == "boom");
    }
  }

  // A ppipe::error keeps its code, and the work behind it (even the failing kind) is skipped.
  REQUIRE(d.synchronize(s1, soon()) == wait_status::ready);
  REQUIRE(d.synchronize(s2, soon()) == wait_status::ready);
  d.clear_error();
  d.enqueue(s2, [] { throw ppipe::error(ppipe::errc::backend, "second"); }, "second failure");
  d.enqueue(s2, [] { throw std::runtime_error("third"); }, "third failure");
  REQUIRE(d.synchronize(s2, soon()) == wait_status::ready);
  REQUIRE(d.error() != nullptr);
  try {
    std::rethrow_exception(d.error());
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::backend);
    CHECK_THAT(e.what(), contains("stream 'rank 2 compute', item 'second failure': second"));
  }
  d.clear_error();
  CHECK(d.error() == nullptr);
  d.enqueue(s1, [&ran] { ++ran; });
  REQUIRE(d.synchronize(s1, soon()) == wait_status::ready);
  CHECK(ran == 1);
}

/// clear_error() is refused while a stream still has work, naming it, and forgets the failure
/// once every stream is idle. (One host work at a time: CUDA may run all of a device's host work
/// on one thread, so a body must never need two to run at once.)
template <class Device>
void clear_error_waits_for_idle(Device& d) {
  auto s = d.create_stream("failing");
  auto blocker = d.create_stream("blocker");
  std::latch started(1);
  std::latch gate(1);
  d.enqueue(blocker, [&] {
    started.count_down();
    gate.wait();
  }, "waits for the test");
  started.wait();
  const std::string refused = error_of([&] { d.clear_error(); });
  gate.count_down();
  CHECK_THAT(refused, contains("stream 'blocker'") && contains("synchronize every stream first"));
  REQUIRE(d.synchronize(blocker, soon()) == wait_status::ready);
  d.enqueue(s, [] { throw std::runtime_error("boom"); }, "thrower");
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(d.error() != nullptr);
  d.clear_error();
  CHECK(d.error() == nullptr);
}

/// A capture refuses synchronize and allocate while capturing, records host work instead of
/// running it, and replays it at each launch.
template <class Device>
void capture_replays(Device& d) {
  auto s = d.create_stream("captured");
  host_buffer<Device, int> last(1);
  std::atomic<int> ran{0};
  d.begin_capture(s);
  CHECK(d.capturing(s));
  d.enqueue(s, [&ran] { ++ran; }, "first");
  int* out = last.data();
  d.enqueue(s, [&ran, out] { out[0] = ++ran; }, "second");
  CHECK_THAT(error_of([&] { static_cast<void>(d.synchronize(s, soon())); }),
             contains("synchronize() on stream 'captured' while it is being captured"));
  CHECK_THAT(error_of([&] { d.begin_capture(s); }), contains("already capturing"));
  const auto g = d.end_capture(s);
  CHECK_FALSE(d.capturing(s));
  CHECK(g.size() == 2);
  CHECK_THAT(error_of([&] { static_cast<void>(d.end_capture(s)); }), contains("not capturing"));
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(ran == 0);

  d.launch(g, s);
  d.launch(g, s);
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(ran == 4);
  CHECK(last[0] == 4);
}

/// A capture spans the streams that wait for its events (they join it) and must join them back:
/// a launch runs the whole fork and join, after the launch stream's earlier work and before its
/// later work, with the capture's events made afresh each time.
template <class Device>
void capture_spans_streams(Device& d) {
  auto main = d.create_stream("main");
  auto side = d.create_stream("side");
  auto other = d.create_stream("other");
  // Each launch appends 1 (main, before the fork), 2 (side), then 3 (main, after the join).
  constexpr int launches = 3;
  host_buffer<Device, int> order(3 * launches + 1);
  std::atomic<int> next{0};
  int* out = order.data();
  const auto append = [out, &next](int v) { return [out, &next, v] { out[next++] = v; }; };
  d.begin_capture(main);
  d.enqueue(main, append(1), "before the fork");
  const auto fork = d.record(main);
  CHECK_THAT(error_of([&] { static_cast<void>(d.query(fork)); }), contains("recorded during a capture"));
  CHECK_FALSE(d.capturing(side));
  d.wait(side, fork);
  CHECK(d.capturing(side));
  d.enqueue(side, [] { std::this_thread::sleep_for(2ms); }, "slow side work");
  d.enqueue(side, append(2), "side work");
  CHECK_THAT(error_of([&] { static_cast<void>(d.end_capture(side)); }), contains("joined the capture begun on 'main'"));
  const auto back = d.record(side);
  CHECK_THAT(error_of([&] { static_cast<void>(d.end_capture(main)); }),
             contains("stream 'side', which joined the capture, has work") && contains("'main'"));
  d.wait(main, back);
  d.enqueue(main, append(3), "after the join");
  const auto g = d.end_capture(main);
  CHECK_FALSE(d.capturing(main));
  CHECK_FALSE(d.capturing(side));
  CHECK_THAT(error_of([&] { d.wait(other, back); }), contains("capture that has ended"));
  REQUIRE(d.synchronize(main, soon()) == wait_status::ready);
  REQUIRE(d.synchronize(side, soon()) == wait_status::ready);
  CHECK(next == 0);  // nothing ran while capturing

  for (int k = 0; k < launches; ++k) d.launch(g, main);
  d.enqueue(main, append(4), "after the launches");
  REQUIRE(d.synchronize(main, soon()) == wait_status::ready);
  REQUIRE(next == 3 * launches + 1);
  for (int k = 0; k < launches; ++k) {
    CHECK(order[static_cast<std::size_t>(3 * k)] == 1);
    CHECK(order[static_cast<std::size_t>(3 * k + 1)] == 2);
    CHECK(order[static_cast<std::size_t>(3 * k + 2)] == 3);
  }
  CHECK(order[3 * launches] == 4);

  // A join may go through another stream of the capture, and a record after a stream's last work
  // needs no wait: main waits for side, which waited for other.
  std::atomic<int> ran{0};
  d.begin_capture(main);
  d.wait(side, d.record(main));
  d.wait(other, d.record(side));
  d.enqueue(other, [&ran] { ++ran; }, "work on other");
  d.wait(side, d.record(other));
  d.enqueue(side, [&ran] { ++ran; }, "work on side");
  d.wait(main, d.record(side));
  static_cast<void>(d.record(other));  // no work after it: nothing to join
  const auto chained = d.end_capture(main);
  CHECK_FALSE(d.capturing(other));
  d.launch(chained, main);
  d.launch(chained, main);
  REQUIRE(d.synchronize(main, soon()) == wait_status::ready);
  CHECK(ran == 4);
}

/// Memory a capture allocates is the graph's: each launch has it at the same place, and the
/// capture must release it; memory from before the capture may not be released in it.
template <class Device>
void capture_owns_memory(Device& d) {
  auto s = d.create_stream("captured");
  constexpr std::size_t n = 256;
  constexpr std::size_t bytes = n * sizeof(int);
  host_buffer<Device, int> in(n), out(n);
  void* before = d.allocate(64, s);
  d.begin_capture(s);
  auto* scratch = static_cast<int*>(d.allocate(bytes, s));
  REQUIRE(scratch != nullptr);
  d.copy_async(s, scratch, in.data(), bytes);
  d.copy_async(s, out.data(), scratch, bytes);
  CHECK_THAT(error_of([&] { d.release(before, s); }), contains("the capture did not allocate"));
  CHECK_THAT(error_of([&] { static_cast<void>(d.end_capture(s)); }), contains("not released"));
  d.release(scratch, s);
  const auto g = d.end_capture(s);
  for (int launch = 1; launch <= 3; ++launch) {
    for (std::size_t i = 0; i < n; ++i) in[i] = launch * 1000 + static_cast<int>(i);
    d.launch(g, s);
    REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
    for (std::size_t i = 0; i < n; i += 37) CHECK(out[i] == launch * 1000 + static_cast<int>(i));
  }
  d.release(before, s);
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
}

/// Streams and events of another device, and a default-constructed stream, are refused.
template <class Device>
void refuses_other_handles(Device& d, Device& e) {
  auto theirs = e.create_stream("theirs");
  CHECK_THAT(error_of([&] { d.enqueue(theirs, [] {}); }), contains("a stream of another device"));
  CHECK_THAT(error_of([&] { d.enqueue(typename Device::stream{}, [] {}); }), contains("default-constructed"));
  auto mine = d.create_stream("mine");
  CHECK_THAT(error_of([&] { d.wait(mine, e.record(theirs)); }), contains("another device"));
  CHECK(d.query(typename Device::event{}));
  REQUIRE(e.synchronize(theirs, soon()) == wait_status::ready);
}

}  // namespace device_contract
