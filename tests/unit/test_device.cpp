// The stream_device contract on the CPU models. The bodies that hold for every model are in
// tests/support/device_contract.hpp (the CUDA device runs them too); inline_device runs those that
// need no real streams. What only the CPU model has (status text, abort, the race checker,
// poison, the allocator's reuse order, completed_at) is checked here alone.

#include <catch.hpp>

#include "device_contract.hpp"
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


using device_contract::soon;
using support::error_of;

}  // namespace

TEMPLATE_TEST_CASE("work on one stream runs in the order it was enqueued", "[device]", inline_device,
                   cpu_stream_device) {
  TestType d;
  device_contract::in_order(d);
}

TEMPLATE_TEST_CASE("record and wait order one stream's work after another's", "[device]", inline_device,
                   cpu_stream_device) {
  TestType d;
  device_contract::ping_pong(d, 5);
}

TEST_CASE("with random delays, a consumer ordered by events always sees the producer's values", "[device]") {
  for (std::uint64_t seed : {1u, 2u, 3u, 4u}) {
    CAPTURE(seed);
    cpu_stream_device d(cpu_device_options{.seed = seed, .max_delay = 200us, .poison = true, .check_races = true});
    device_contract::ping_pong(d, 10);
  }
}

TEMPLATE_TEST_CASE("copies and zeroes move the bytes, allocations are aligned", "[device]", inline_device,
                   cpu_stream_device) {
  TestType d;
  device_contract::copies_and_zeroes(d);
}

TEST_CASE("cpu_stream_device: staging host memory carries copies both ways, counted until given back", "[device]") {
  cpu_stream_device d;
  device_contract::staging_memory(d);
  CHECK(d.memory().host_bytes_in_use == 0);
  void* p = d.allocate_host(96);
  CHECK(d.memory().host_bytes_in_use == 96);
  CHECK(static_cast<const unsigned char*>(p)[0] == 0xff);  // poisoned until written
  d.release_host(p);
  CHECK(d.memory().host_bytes_in_use == 0);
  static_cast<void>(d.allocate_host(32));  // one still out when the device goes: freed with it
}

TEMPLATE_TEST_CASE("elapsed_us measures the work between two events", "[device]", inline_device, cpu_stream_device) {
  TestType d;
  device_contract::elapsed(d);
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
  cpu_stream_device::stream waiting;
  device_contract::blocked_stream_times_out(d, [&](cpu_stream_device& dev, auto producer, auto consumer) {
    CHECK_THAT(dev.status(consumer), contains("stream 'consumer' waits for an event recorded on stream 'producer'"));
    CHECK_THAT(dev.status(producer), contains("stream 'producer' runs 'blocked host work'"));
    waiting = consumer;
  });
  CHECK_THAT(d.status(waiting), contains("idle"));
}

TEST_CASE("cpu_stream_device: events are values, and one never recorded is complete", "[device]") {
  cpu_stream_device d;
  device_contract::events_are_values(d);
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
  device_contract::failure_is_sticky(d);
}

TEST_CASE("cpu_stream_device: clear_error is refused while a stream is busy", "[device]") {
  cpu_stream_device d;
  device_contract::clear_error_waits_for_idle(d);
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

TEST_CASE("cpu_stream_device: work enqueued after the host synchronized a stream is ordered after it", "[device]") {
  cpu_stream_device d;
  auto a = d.create_stream("a");
  auto b = d.create_stream("b");
  void* p = d.allocate(64, a);
  d.use(a, p, 64, access::write);
  d.enqueue(a, [] {}, "writer");
  CHECK_THAT(error_of([&] { d.use(b, p, 64, access::read); }), contains("read after write"));
  SECTION("the stream") { REQUIRE(d.synchronize(a, soon()) == wait_status::ready); }
  SECTION("an event after the work") { REQUIRE(d.synchronize(d.record(a), soon()) == wait_status::ready); }
  // As on a GPU: the host saw the work finish, so whatever it enqueues now comes after it.
  d.use(b, p, 64, access::read);
  d.enqueue(b, [] {}, "reader");
  d.wait(a, d.record(b));
  d.release(p, a);
  REQUIRE(d.synchronize(a, soon()) == wait_status::ready);
  // Work enqueued on `a` after the synchronize is not covered: a later write still needs an event.
  void* q = d.allocate(64, a);
  d.use(a, q, 64, access::write);
  d.enqueue(a, [] {}, "second writer");
  CHECK_THAT(error_of([&] { d.use(b, q, 64, access::read); }), contains("read after write"));
  REQUIRE(d.synchronize(a, soon()) == wait_status::ready);
  REQUIRE(d.synchronize(b, soon()) == wait_status::ready);
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

TEST_CASE("cpu_stream_device: a capture spans the streams that join it", "[device]") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    cpu_stream_device d(cpu_device_options{.seed = seed, .max_delay = 300us, .poison = true, .check_races = true});
    device_contract::capture_spans_streams(d);
  }
}

TEST_CASE("cpu_stream_device: a launch checks the accesses of every stream of the capture again", "[device]") {
  cpu_stream_device d;
  auto main = d.create_stream("main");
  auto side = d.create_stream("side");
  void* p = d.allocate(64, main);
  d.begin_capture(main);
  d.zero_async(main, p, 64, "zero on main");
  d.wait(side, d.record(main));
  d.use(side, p, 64, access::read);
  d.enqueue(side, [] {}, "read on side");
  d.wait(main, d.record(side));
  const auto g = d.end_capture(main);
  d.launch(g, main);
  // After the launch, main's later work is ordered after the side's read: a release is fine.
  d.release(p, main);
  REQUIRE(d.synchronize(main, device_contract::soon()) == wait_status::ready);
  // A side read that main's later write is not ordered with: caught when the graph is launched.
  void* q = d.allocate(64, main);
  d.begin_capture(main);
  d.zero_async(main, q, 64, "zero on main");
  d.wait(side, d.record(main));
  d.enqueue(side, [] {}, "joined");
  d.wait(main, d.record(side));
  d.zero_async(main, q, 64, "zero again on main");
  const auto racy = [&] {
    d.use(side, q, 64, access::read);
    d.enqueue(side, [] {}, "unordered read on side");
  };
  racy();
  d.wait(main, d.record(side));
  const auto h = d.end_capture(main);
  CHECK_THAT(error_of([&] { d.launch(h, main); }), contains("unordered access") && contains("'side (in a graph)'"));
  REQUIRE(d.synchronize(main, device_contract::soon()) == wait_status::ready);
  REQUIRE(d.synchronize(side, device_contract::soon()) == wait_status::ready);
  d.release(q, main);
  REQUIRE(d.synchronize(main, device_contract::soon()) == wait_status::ready);
}

TEST_CASE("cpu_stream_device: a graph's branches are not ordered by the streams they were captured on",
          "[device]") {
  cpu_stream_device d;
  auto main = d.create_stream("main");
  auto side = d.create_stream("side");
  void* p = d.allocate(64, main);
  d.zero_async(main, p, 64);
  d.wait(side, d.record(main));
  d.begin_capture(main);
  d.wait(side, d.record(main));
  d.use(side, p, 64, access::read);
  d.enqueue(side, [] {}, "read on the side branch");
  d.wait(main, d.record(side));
  const auto g = d.end_capture(main);
  d.launch(g, main);  // ordered after main's zero: fine
  REQUIRE(d.synchronize(main, device_contract::soon()) == wait_status::ready);
  // Work on 'side' before a launch does not order the graph's side branch after it (as in CUDA,
  // where the launch waits for main alone).
  d.zero_async(side, p, 64, "zero on side");
  CHECK_THAT(error_of([&] { d.launch(g, main); }), contains("unordered access") && contains("'zero on side'"));
  REQUIRE(d.synchronize(main, device_contract::soon()) == wait_status::ready);
  REQUIRE(d.synchronize(side, device_contract::soon()) == wait_status::ready);
  d.release(p, main);
  REQUIRE(d.synchronize(main, device_contract::soon()) == wait_status::ready);
}

TEST_CASE("cpu_stream_device: memory a capture allocates is the graph's", "[device]") {
  cpu_stream_device d;
  device_contract::capture_owns_memory(d);
}

TEST_CASE("cpu_stream_device: a launch checks and poisons the graph's memory at its place", "[device]") {
  cpu_stream_device d;
  auto main = d.create_stream("main");
  auto other = d.create_stream("other");
  d.begin_capture(main);
  void* p = d.allocate(64, main);
  d.zero_async(main, p, 64, "zero the graph's block");
  d.release(p, main);
  const auto g = d.end_capture(main);
  CHECK(g.memory_bytes() == 64);
  d.launch(g, main);
  // The graph allocates and releases the block in each launch: a use from another stream that is
  // not ordered after the launch races with it.
  CHECK_THAT(error_of([&] { d.use(other, p, 64, access::read); }), contains("unordered access") || contains("released"));
  REQUIRE(d.synchronize(main, device_contract::soon()) == wait_status::ready);
}

TEST_CASE("cpu_stream_device: capture refuses synchronize, and launch replays", "[device]") {
  cpu_stream_device d;
  device_contract::capture_replays(d);
}

TEST_CASE("cpu_stream_device: a launch declares the graph's accesses again", "[device]") {
  cpu_stream_device d;
  auto s = d.create_stream("captured");
  auto other = d.create_stream("other");
  auto* buffer = static_cast<int*>(d.allocate(64, s));
  d.begin_capture(s);
  d.use(s, buffer, 64, access::write);
  d.enqueue(s, [buffer] { buffer[0] = 1; }, "second");
  const auto g = d.end_capture(s);
  d.launch(g, s);
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(buffer[0] == 1);
  d.launch(g, s);  // not synchronized: the replay's write is declared again, and races
  CHECK_THAT(error_of([&] { d.use(other, buffer, 4, access::read); }), contains("'second'"));
  d.wait(other, d.record(s));
  d.use(other, buffer, 4, access::read);
  d.release(buffer, other);
}

TEST_CASE("cpu_stream_device: peers order each other's streams and copy each other's memory", "[device]") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    const cpu_device_options o{.seed = seed, .max_delay = 200us, .poison = true, .check_races = true};
    cpu_stream_device a(o);
    cpu_stream_device b(o, a);
    CHECK_FALSE(a.peer_of(cpu_stream_device{}));
    device_contract::peers_exchange(a, b);
  }
}

TEST_CASE("cpu_stream_device: the race checker watches copies between peers", "[device]") {
  cpu_stream_device a;
  cpu_stream_device b(cpu_device_options{}, a);
  auto sa = a.create_stream("a compute");
  auto sb = b.create_stream("b receive");
  auto* from = a.allocate(256, sa);
  auto* to = b.allocate(256, sb);
  a.zero_async(sa, from, 256);
  CHECK_THAT(error_of([&] { b.copy_async(sb, to, from, 256); }),
             contains("read after write") && contains("'a compute'") && contains("'b receive'"));
  b.wait(sb, a.record(sa));
  b.copy_async(sb, to, from, 256);
  CHECK_THAT(error_of([&] { a.release(from, sa); }), contains("write after read"));
  a.wait(sa, b.record(sb));
  a.release(from, sa);
  b.release(to, sb);
  REQUIRE(a.synchronize(sa, device_contract::soon()) == wait_status::ready);
  REQUIRE(b.synchronize(sb, device_contract::soon()) == wait_status::ready);
}

TEST_CASE("cpu_stream_device: peers without peer access exchange only through host memory", "[device]") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    const cpu_device_options o{.seed = seed, .max_delay = 200us, .poison = true, .check_races = true};
    cpu_stream_device a(o);
    cpu_stream_device b(o, a, ppipe::peer_link::events_only);
    CHECK(b.peer_of(a));
    CHECK_FALSE(b.reaches(a));
    CHECK_FALSE(a.reaches(b));
    CHECK(a.reaches(a));
    device_contract::peers_exchange_through_host(a, b);
  }
  cpu_stream_device a;
  cpu_stream_device b(cpu_device_options{}, a, ppipe::peer_link::events_only);
  cpu_stream_device c(cpu_device_options{}, b);  // shares b's memory, not a's
  CHECK(c.reaches(b));
  CHECK_FALSE(c.reaches(a));
  auto sa = a.create_stream("a send");
  auto sb = b.create_stream("b receive");
  void* from = a.allocate(256, sa);
  void* to = b.allocate(256, sb);
  b.wait(sb, a.record(sa));
  // Ordered, but b cannot reach a's memory: the copy must go through host memory.
  CHECK_THAT(error_of([&] { b.copy_async(sb, to, from, 256, "F0 in"); }),
             contains("'b receive' reads memory") && contains("'F0 in'") && contains("without peer access") &&
                 contains("allocate_host()"));
  CHECK_THAT(error_of([&] { a.zero_async(sa, to, 256); }), contains("'a send' writes memory"));
  // A range is out of reach if any of it is: from a's own block into b's.
  void* near = a.allocate(64, sa);
  const auto gap = static_cast<std::byte*>(to) - static_cast<std::byte*>(near);
  if (gap > 0) {
    CHECK_THAT(error_of([&] { a.use(sa, near, static_cast<std::size_t>(gap) + 1, access::read); }),
               contains("without peer access"));
  }
  a.release(near, sa);
  // Staging memory the sender watches: a receiver that does not wait for the sender's event races.
  void* hop = a.allocate_host(256);
  a.track(sa, hop, 256);
  a.copy_async(sa, hop, from, 256);
  CHECK_THAT(error_of([&] { b.copy_async(sb, to, hop, 256); }),
             contains("read after write") && contains("'a send'") && contains("'b receive'"));
  b.wait(sb, a.record(sa));
  b.copy_async(sb, to, hop, 256);
  REQUIRE(b.synchronize(sb, device_contract::soon()) == wait_status::ready);
  a.retire(sa, hop);
  a.release_host(hop);
  a.release(from, sa);
  b.release(to, sb);
  REQUIRE(a.synchronize(sa, device_contract::soon()) == wait_status::ready);
  REQUIRE(b.synchronize(sb, device_contract::soon()) == wait_status::ready);
}

TEST_CASE("cpu_stream_device: a destroyed peer's memory is forgotten by the others", "[device]") {
  cpu_stream_device a;
  auto sa = a.create_stream("a");
  const void* gone = nullptr;
  {
    cpu_stream_device b(cpu_device_options{}, a, ppipe::peer_link::events_only);
    auto sb = b.create_stream("b");
    void* p = b.allocate(256, sb);
    b.zero_async(sb, p, 256);
    b.release(p, sb);
    REQUIRE(b.synchronize(sb, device_contract::soon()) == wait_status::ready);
    // While b lives, its released block is still watched, and out of a's reach.
    CHECK_THAT(error_of([&] { a.use(sa, p, 4, access::read); }), contains("without peer access"));
    gone = p;
  }
  // The address is no device's memory now (the system may hand it to a next): not checked.
  a.use(sa, gone, 4, access::read);
  void* mine = a.allocate(256, sa);
  a.zero_async(sa, mine, 256);
  a.release(mine, sa);
  REQUIRE(a.synchronize(sa, device_contract::soon()) == wait_status::ready);
}

TEST_CASE("cpu_stream_device: handles of another device are refused", "[device]") {
  cpu_stream_device d;
  cpu_stream_device e;
  device_contract::refuses_other_handles(d, e);
  auto mine = d.create_stream("mine");
  int x = 0;
  CHECK_THAT(error_of([&] { d.release(&x, mine); }), contains("did not allocate"));
}
