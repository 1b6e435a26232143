// The stream_device contract. Bodies that hold for every model are written once and instantiated
// for each (inline_device, cpu_stream_device); what only a model with real streams can show
// (timeouts, sticky errors, races, capture) is checked on cpu_stream_device alone.

#include <catch.hpp>

#include "error_message.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <latch>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ppipe/device/cpu_device.hpp"
#include "ppipe/device/inline_device.hpp"
#include "ppipe/device/stream_device.hpp"

namespace {

using namespace std::chrono_literals;
using ppipe::access;
using ppipe::cpu_device_options;
using ppipe::cpu_stream_device;
using ppipe::deadline_clock;
using ppipe::inline_device;
using ppipe::wait_status;
using ppipe_test::contains;

static_assert(ppipe::stream_device<inline_device>);
static_assert(!ppipe::capturing_stream_device<inline_device>);
static_assert(ppipe::capturing_stream_device<cpu_stream_device>);

deadline_clock::time_point soon() { return deadline_clock::now() + 10s; }

using support::error_of;

/// The producer writes `round` into every element, the consumer copies and sums them: the
/// consumer must see every value the producer wrote, and the producer must not overwrite the
/// buffer before the consumer has read it (the second event).
template <class Device>
void ping_pong(Device& d, int rounds) {
  constexpr std::size_t n = 256;
  auto producer = d.create_stream("producer");
  auto consumer = d.create_stream("consumer");
  auto* shared = static_cast<float*>(d.allocate(n * sizeof(float), producer));
  auto* copy = static_cast<float*>(d.allocate(n * sizeof(float), consumer));
  std::vector<double> sums(static_cast<std::size_t>(rounds), -1.0);
  typename Device::event consumed{};
  for (int r = 0; r < rounds; ++r) {
    d.wait(producer, consumed);
    d.zero_async(producer, shared, n * sizeof(float));
    d.use(producer, shared, n * sizeof(float), access::write);
    d.enqueue(producer, [shared, r] {
      for (std::size_t i = 0; i < n; ++i) shared[i] = static_cast<float>(r + 1);
    }, "fill");
    d.wait(consumer, d.record(producer));
    d.copy_async(consumer, copy, shared, n * sizeof(float));
    consumed = d.record(consumer);
    d.use(consumer, copy, n * sizeof(float), access::read);
    d.enqueue(consumer, [copy, &sums, r] {
      sums[static_cast<std::size_t>(r)] = std::accumulate(copy, copy + n, 0.0);
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

}  // namespace

TEMPLATE_TEST_CASE("work on one stream runs in the order it was enqueued", "[device]", inline_device,
                   cpu_stream_device) {
  TestType d;
  auto s = d.create_stream("only");
  std::vector<int> seen;
  for (int k = 0; k < 100; ++k) d.enqueue(s, [&seen, k] { seen.push_back(k); });
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  std::vector<int> expected(100);
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(seen == expected);
}

TEMPLATE_TEST_CASE("record and wait order one stream's work after another's", "[device]", inline_device,
                   cpu_stream_device) {
  TestType d;
  ping_pong(d, 5);
}

TEST_CASE("with random delays, a consumer ordered by events always sees the producer's values", "[device]") {
  for (std::uint64_t seed : {1u, 2u, 3u, 4u}) {
    CAPTURE(seed);
    cpu_stream_device d(cpu_device_options{.seed = seed, .max_delay = 200us, .poison = true, .check_races = true});
    ping_pong(d, 10);
  }
}

TEMPLATE_TEST_CASE("copies and zeroes move the bytes, allocations are aligned", "[device]", inline_device,
                   cpu_stream_device) {
  TestType d;
  auto s = d.create_stream("copies");
  constexpr std::size_t n = 100;
  auto* a = static_cast<int*>(d.allocate(n * sizeof(int), s));
  auto* b = static_cast<int*>(d.allocate(n * sizeof(int), s));
  CHECK(reinterpret_cast<std::uintptr_t>(a) % 64 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(b) % 64 == 0);
  d.zero_async(s, a, n * sizeof(int));
  d.use(s, a, sizeof(int), access::write);
  d.enqueue(s, [a] { a[7] = 42; });
  d.copy_async(s, b, a, n * sizeof(int));
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(b[0] == 0);
  CHECK(b[7] == 42);
  CHECK(b[n - 1] == 0);
  d.release(a, s);
  d.release(b, s);
  d.release(nullptr, s);
}

TEMPLATE_TEST_CASE("elapsed_us measures the work between two events", "[device]", inline_device, cpu_stream_device) {
  TestType d;
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

TEST_CASE("inline_device: failures reach the caller of enqueue and are not kept", "[device]") {
  inline_device d;
  auto s = d.create_stream("inline");
  CHECK_THROWS_WITH(d.enqueue(s, [] { throw std::runtime_error("boom"); }, "F3 of stage 1"), "boom");
  CHECK(d.error() == nullptr);
  CHECK(d.query(typename inline_device::event{}));
}

TEST_CASE("cpu_stream_device: synchronize times out on a stream blocked by an event and says why", "[device]") {
  cpu_stream_device d;
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
  CHECK_THAT(d.status(consumer), contains("stream 'consumer' waits for an event recorded on stream 'producer'"));
  CHECK_THAT(d.status(producer), contains("stream 'producer' runs 'blocked host work'"));

  gate.count_down();
  CHECK(d.synchronize(consumer, soon()) == wait_status::ready);
  CHECK(d.query(e));
  CHECK(consumer_ran);
  CHECK_THAT(d.status(consumer), contains("idle"));
}

TEST_CASE("cpu_stream_device: events are values, and one never recorded is complete", "[device]") {
  cpu_stream_device d;
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
  const cpu_stream_device::event never{};
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

TEST_CASE("cpu_stream_device: completed_at is when the stream reached the record, not when it was made", "[device]") {
  cpu_stream_device d;
  auto s = d.create_stream("s");
  std::latch gate(1);
  d.enqueue(s, [&gate] { gate.wait(); }, "blocked");
  const auto e = d.record(s);
  CHECK_THAT(error_of([&] { static_cast<void>(d.completed_at(e)); }), contains("has not completed"));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto released = ppipe::deadline_clock::now();
  gate.count_down();
  REQUIRE(d.synchronize(e, soon()) == wait_status::ready);
  CHECK(d.completed_at(e) >= released);
  CHECK(d.completed_at(e) <= ppipe::deadline_clock::now());
}

TEST_CASE("cpu_stream_device: a failure is sticky, skips later work and still completes events", "[device]") {
  cpu_stream_device d;
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

  // Once cleared, the next failure is kept; a ppipe::error keeps its code, and the work behind it
  // (even the failing kind) is skipped.
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

TEST_CASE("cpu_stream_device: clear_error is refused while a stream is busy", "[device]") {
  cpu_stream_device d;
  auto s = d.create_stream("failing");
  auto blocker = d.create_stream("blocker");
  std::latch started(1);
  std::latch gate(1);
  d.enqueue(blocker, [&] {
    started.count_down();
    gate.wait();
  }, "waits for the test");
  started.wait();  // running before the failure, which would make the stream skip it
  d.enqueue(s, [] { throw std::runtime_error("boom"); }, "thrower");
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(d.error() != nullptr);
  CHECK_THAT(error_of([&] { d.clear_error(); }), contains("stream 'blocker' runs 'waits for the test'") &&
                                                     contains("synchronize every stream first"));
  gate.count_down();
  REQUIRE(d.synchronize(blocker, soon()) == wait_status::ready);
  CHECK(d.error() != nullptr);
  d.clear_error();
  CHECK(d.error() == nullptr);
}

TEST_CASE("cpu_stream_device: abort skips queued work, and events still complete", "[device]") {
  cpu_stream_device d;
  auto s = d.create_stream("aborted");
  std::latch gate(1);
  std::atomic<int> ran{0};
  d.enqueue(s, [&gate] { gate.wait(); }, "running when aborted");
  for (int k = 0; k < 10; ++k) d.enqueue(s, [&ran] { ++ran; });
  const auto e = d.record(s);
  d.abort();
  gate.count_down();
  REQUIRE(d.synchronize(e, soon()) == wait_status::ready);
  CHECK(ran == 0);
  CHECK(d.aborted());
  CHECK(d.error() == nullptr);
  d.clear_error();
  CHECK_FALSE(d.aborted());
  d.enqueue(s, [&ran] { ++ran; });
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(ran == 1);
}

TEST_CASE("cpu_stream_device: an access not ordered after another stream's is reported", "[device]") {
  cpu_stream_device d;
  auto producer = d.create_stream("producer");
  auto consumer = d.create_stream("consumer");
  auto* p = static_cast<float*>(d.allocate(256, producer));
  d.use(producer, p, 256, access::write);
  d.enqueue(producer, [p] { p[0] = 1.0F; }, "write p");
  d.wait(consumer, d.record(producer));  // orders the consumer after the allocation and the write

  SECTION("read after write: both streams, the buffer and both items are named, and the fix") {
    d.use(producer, p, 128, access::write);
    d.enqueue(producer, [p] { p[1] = 2.0F; }, "write p again");
    const std::string m = error_of([&] { d.use(consumer, p + 4, 16, access::read); });
    CHECK_THAT(m, contains("[ppipe.invalid_schedule] unordered access (read after write)"));
    CHECK_THAT(m, contains("stream 'consumer' reads bytes [16, 32)"));
    CHECK_THAT(m, contains("stream 'producer', which writes bytes [0, 128) in 'write p again'"));
    CHECK_THAT(m, contains("(256 bytes)"));
    CHECK_THAT(m, contains("record an event on 'producer' after 'write p again'"));
    CHECK_THAT(m, contains("wait for it on 'consumer'"));
  }
  SECTION("write after read") {
    d.use(consumer, p, 256, access::read);
    d.enqueue(consumer, [] {}, "read p");
    CHECK_THAT(error_of([&] { d.zero_async(producer, p, 256, "zero p"); }),
               contains("unordered access (write after read)") && contains("'zero p'") && contains("'read p'"));
    d.wait(producer, d.record(consumer));
    d.zero_async(producer, p, 256, "zero p");  // ordered now
  }
  SECTION("write after write, and disjoint ranges do not conflict") {
    d.use(consumer, p, 128, access::write);
    d.enqueue(consumer, [] {}, "write first half");
    d.use(producer, p + 32, 128, access::write);  // the second half
    CHECK_THAT(error_of([&] { d.use(producer, p, 4, access::write); }), contains("(write after write)"));
  }
  SECTION("a release races with an unordered use, and a use after release is reported") {
    d.use(consumer, p, 4, access::read);
    d.enqueue(consumer, [] {}, "read p");
    CHECK_THAT(error_of([&] { d.release(p, producer); }), contains("unordered access (write after read)") &&
                                                              contains("release("));
    d.wait(producer, d.record(consumer));
    d.release(p, producer);
    CHECK_THAT(error_of([&] { d.use(producer, p, 4, access::read); }), contains("after it was released"));
  }
  SECTION("memory the device did not allocate is ignored") {
    std::vector<float> host(64);
    d.use(producer, host.data(), 64, access::write);
    d.use(consumer, host.data(), 64, access::write);
  }
  REQUIRE(d.synchronize(producer, soon()) == wait_status::ready);
  REQUIRE(d.synchronize(consumer, soon()) == wait_status::ready);
}

TEST_CASE("cpu_stream_device: tracked host memory is checked like allocated memory until it is retired", "[device]") {
  cpu_stream_device d;
  auto a = d.create_stream("a");
  auto b = d.create_stream("b");
  std::vector<float> host(16);
  d.track(a, host.data(), sizeof(float) * host.size());
  d.use(a, host.data(), 64, access::write);
  d.enqueue(a, [] {}, "writer");
  CHECK_THAT(error_of([&] { d.use(b, host.data(), 64, access::read); }), contains("read after write"));
  d.wait(b, d.record(a));
  d.use(b, host.data(), 64, access::read);
  d.enqueue(b, [] {}, "reader");
  // Retiring on a is a write there: b's read must be ordered before it.
  CHECK_THAT(error_of([&] { d.retire(a, host.data()); }), contains("write after read"));
  d.wait(a, d.record(b));
  d.retire(a, host.data());
  // Retired, the memory is not the checker's any more.
  d.use(b, host.data(), 64, access::write);
  d.enqueue(b, [] {}, "not watched");
  REQUIRE(d.synchronize(a, soon()) == wait_status::ready);
  REQUIRE(d.synchronize(b, soon()) == wait_status::ready);
}

TEST_CASE("cpu_stream_device: memory allocated on one stream needs an event before another uses it", "[device]") {
  cpu_stream_device d;
  auto a = d.create_stream("a");
  auto b = d.create_stream("b");
  d.enqueue(a, [] {}, "earlier work");
  void* p = d.allocate(64, a);
  CHECK_THAT(error_of([&] { d.use(b, p, 64, access::write); }), contains("'allocate(64)'"));
  d.wait(b, d.record(a));
  d.use(b, p, 64, access::write);
}

TEST_CASE("cpu_stream_device: without the race checker an unordered read sees poison", "[device]") {
  cpu_stream_device d(cpu_device_options{.poison = true, .check_races = false});
  auto producer = d.create_stream("producer");
  auto consumer = d.create_stream("consumer");
  auto* p = static_cast<float*>(d.allocate(sizeof(float), producer));
  std::latch written_after_read(1);
  float seen = 0.0F;
  d.use(producer, p, sizeof(float), access::write);
  d.enqueue(producer, [&written_after_read, p] {
    written_after_read.wait();
    p[0] = 1.0F;
  }, "late write");
  d.use(consumer, p, sizeof(float), access::read);  // not reported: the checker is off
  d.enqueue(consumer, [&written_after_read, &seen, p] {
    seen = p[0];
    written_after_read.count_down();
  }, "early read");
  REQUIRE(d.synchronize(producer, soon()) == wait_status::ready);
  REQUIRE(d.synchronize(consumer, soon()) == wait_status::ready);
  CHECK(std::isnan(seen));
}

TEST_CASE("cpu_stream_device: released blocks are reused in stream order only", "[device]") {
  cpu_stream_device d;
  auto s1 = d.create_stream("s1");
  auto s2 = d.create_stream("s2");
  void* p = d.allocate(1000, s1);
  d.release(p, s1);
  void* same_stream = d.allocate(1000, s1);
  CHECK(same_stream == p);
  d.release(same_stream, s1);

  void* unordered = d.allocate(1000, s2);
  CHECK(unordered != p);

  d.wait(s2, d.record(s1));
  void* ordered = d.allocate(1000, s2);
  CHECK(ordered == p);

  const auto stats = d.allocator_stats();
  CHECK(stats.allocations == 4);
  CHECK(stats.reused == 2);
  CHECK(stats.bytes_in_use == 2 * 1024);
  CHECK(stats.peak_bytes_in_use == 2 * 1024);
  CHECK(stats.bytes_reserved == 2 * 1024);
  d.release(unordered, s2);
  d.release(ordered, s2);
  CHECK(d.allocator_stats().bytes_in_use == 0);
  CHECK(d.allocator_stats().bytes_reserved == 2 * 1024);
}

TEST_CASE("cpu_stream_device: poison makes fresh and released memory read NaN", "[device]") {
  cpu_stream_device d;
  auto s = d.create_stream("s");
  auto* fresh = static_cast<float*>(d.allocate(64, s));
  CHECK(std::isnan(fresh[0]));
  auto* doubles = static_cast<double*>(d.allocate(64, s));
  CHECK(std::isnan(doubles[7]));
  d.use(s, fresh, 64, access::write);
  d.enqueue(s, [fresh] { fresh[0] = 1.0F; }, "write");
  float before = 0.0F;
  d.use(s, fresh, 64, access::read);
  d.enqueue(s, [fresh, &before] { before = fresh[0]; }, "read");
  d.release(fresh, s);
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(before == 1.0F);
  CHECK(std::isnan(fresh[0]));  // the pool still holds the block: reading it is this test's privilege
  d.release(doubles, s);
}

TEST_CASE("cpu_stream_device: capture refuses synchronize and allocate, and launch replays", "[device]") {
  cpu_stream_device d;
  auto s = d.create_stream("captured");
  auto other = d.create_stream("other");
  auto* buffer = static_cast<int*>(d.allocate(64, s));
  std::atomic<int> ran{0};
  d.begin_capture(s);
  CHECK(d.capturing(s));
  d.enqueue(s, [&ran] { ++ran; }, "first");
  d.use(s, buffer, 64, access::write);
  d.enqueue(s, [&ran, buffer] { buffer[0] = ++ran; }, "second");
  CHECK_THAT(error_of([&] { static_cast<void>(d.synchronize(s, soon())); }),
             contains("synchronize() on stream 'captured' while it is being captured"));
  CHECK_THAT(error_of([&] { static_cast<void>(d.allocate(8, s)); }), contains("allocate() on stream 'captured'"));
  CHECK_THAT(error_of([&] { d.begin_capture(s); }), contains("already capturing"));
  const auto g = d.end_capture(s);
  CHECK_FALSE(d.capturing(s));
  CHECK(g.size() == 2);
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(ran == 0);

  d.launch(g, s);
  d.launch(g, s);
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(ran == 4);
  CHECK(buffer[0] == 4);
  // A launch declares the graph's accesses again: another stream must be ordered after it.
  CHECK_THAT(error_of([&] { d.use(other, buffer, 4, access::read); }), contains("'second'"));
  d.wait(other, d.record(s));
  d.use(other, buffer, 4, access::read);
  d.release(buffer, other);
}

TEST_CASE("cpu_stream_device: handles of another device are refused", "[device]") {
  cpu_stream_device d;
  cpu_stream_device e;
  auto theirs = e.create_stream("theirs");
  CHECK_THAT(error_of([&] { d.enqueue(theirs, [] {}); }), contains("a stream of another device"));
  CHECK_THAT(error_of([&] { d.enqueue(cpu_stream_device::stream{}, [] {}); }), contains("default-constructed"));
  auto mine = d.create_stream("mine");
  CHECK_THAT(error_of([&] { d.wait(mine, e.record(theirs)); }), contains("another device"));
  CHECK(d.query(cpu_stream_device::event{}));
  int x = 0;
  CHECK_THAT(error_of([&] { d.release(&x, mine); }), contains("did not allocate"));
}
