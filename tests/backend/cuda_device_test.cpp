// ppipe::cuda::device against the stream_device contract (tests/support/device_contract.hpp), the
// bodies the CPU models run in tests/unit/test_device.cpp. Without a GPU each case reports itself
// skipped, except the one that checks how a missing GPU is refused.

#include <cstddef>
#include <cstdint>
#include <optional>

#include <cuda_runtime_api.h>

#include <ppipe/cuda.hpp>

#include "catch.hpp"
#include "device_contract.hpp"

namespace device_contract {
// Pinned memory: a copy from it reads it when the stream reaches the copy.
template <>
struct staging<ppipe::cuda::device> {
  static void* allocate(std::size_t bytes) {
    void* p = nullptr;
    ppipe::cuda::check(cudaMallocHost(&p, bytes), "cudaMallocHost");
    return p;
  }
  static void free(void* p) noexcept { static_cast<void>(cudaFreeHost(p)); }
};
}  // namespace device_contract

namespace {

using ppipe::cuda::device;
using ppipe::cuda::device_options;

bool have_gpu() { return ppipe::cuda::device_count() > 0; }

// Runs `body` on a device of GPU 0, or reports the case skipped (ctest counts it so) without one.
template <class Body>
void on_gpu(Body&& body) {
  if (!have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  device d;
  body(d);
}

}  // namespace

TEST_CASE("cuda::device: a GPU the process does not see is refused, naming the count", "[cuda]") {
  const int count = ppipe::cuda::device_count();
  try {
    device d(device_options{.ordinal = count, .rank = 2});
    FAIL("no error");
  } catch (const ppipe::error& e) {
    CHECK(e.code() == ppipe::errc::unsupported);
    CHECK_THAT(e.what(), ppipe_test::contains("rank 2 (GPU " + std::to_string(count) + "): this process sees " +
                                         std::to_string(count) + " CUDA device"));
    CHECK_THAT(e.what(), ppipe_test::contains("CUDA_VISIBLE_DEVICES"));
  }
}

TEST_CASE("cuda::device: work on one stream runs in the order it was enqueued", "[cuda][gpu]") {
  on_gpu([](device& d) { device_contract::in_order(d); });
}

TEST_CASE("cuda::device: record and wait order one stream's work after another's", "[cuda][gpu]") {
  on_gpu([](device& d) { device_contract::ping_pong(d, 20); });
}

TEST_CASE("cuda::device: copies and zeroes move the bytes, allocations are aligned", "[cuda][gpu]") {
  on_gpu([](device& d) { device_contract::copies_and_zeroes(d); });
}

TEST_CASE("cuda::device: page-locked staging memory carries copies both ways and is reused", "[cuda][gpu]") {
  on_gpu([](device& d) {
    device_contract::staging_memory(d);
    CHECK(d.memory().host_bytes_in_use == 0);
    const std::size_t reserved = d.memory().host_bytes_reserved;
    CHECK(reserved >= 2 * 1000 * sizeof(float));
    d.release_host(d.allocate_host(1000 * sizeof(float)));  // served from what was given back
    CHECK(d.memory().host_bytes_reserved == reserved);
  });
}

TEST_CASE("cuda::device: peers order each other's streams and copy each other's memory", "[cuda][gpu]") {
  on_gpu([](device& a) {
    device b(ppipe::cuda::device_options{a.ordinal(), -1});  // another device of the same GPU
    CHECK_FALSE(a.peer_of(b));
    a.grant_peer(b);
    b.grant_peer(a);
    device_contract::peers_exchange(a, b);
  });
  if (ppipe::cuda::device_count() >= 2) {
    device a(ppipe::cuda::device_options{0, -1});
    device b(ppipe::cuda::device_options{1, -1});
    int can = 0;
    int back = 0;
    REQUIRE(cudaDeviceCanAccessPeer(&can, 1, 0) == cudaSuccess);
    REQUIRE(cudaDeviceCanAccessPeer(&back, 0, 1) == cudaSuccess);
    a.grant_peer(b);
    b.grant_peer(a);
    a.bind();
    CHECK(a.reaches(b) == (back != 0));
    CHECK(b.reaches(a) == (can != 0));
    if (can != 0 && back != 0) device_contract::peers_exchange(a, b);
    device_contract::peers_exchange_through_host(a, b);
  }
}

// Two GPUs without peer access are the case this path is for (see above); on one GPU it runs too.
TEST_CASE("cuda::device: peers on one GPU exchange through host memory as well", "[cuda][gpu]") {
  on_gpu([](device& a) {
    device b(ppipe::cuda::device_options{a.ordinal(), -1});
    a.grant_peer(b);
    b.grant_peer(a);
    CHECK(a.reaches(b));  // one GPU: its memory is its own
    device_contract::peers_exchange_through_host(a, b);
  });
}

TEST_CASE("cuda::device: a destroyed peer is forgotten", "[cuda][gpu]") {
  on_gpu([](device& a) {
    std::optional<device> slot(std::in_place, ppipe::cuda::device_options{a.ordinal(), -1});
    a.grant_peer(*slot);
    CHECK(a.peer_of(*slot));
    slot.reset();
    slot.emplace(ppipe::cuda::device_options{a.ordinal(), -1});  // at the address the last one had
    CHECK_FALSE(a.peer_of(*slot));
    CHECK_FALSE(slot->peer_of(a));
    CHECK_FALSE(slot->reaches(a));
  });
}

TEST_CASE("cuda::device: elapsed_us measures the work between two events", "[cuda][gpu]") {
  on_gpu([](device& d) { device_contract::elapsed(d); });
}

TEST_CASE("cuda::device: synchronize times out on a stream blocked by an event", "[cuda][gpu]") {
  on_gpu([](device& d) {
    device_contract::blocked_stream_times_out(d, [](device& dev, auto producer, auto consumer) {
      CHECK_THAT(dev.status(consumer), ppipe_test::contains("stream 'consumer' has work queued or running"));
      CHECK_THAT(dev.status(producer), ppipe_test::contains("stream 'producer' has work queued or running"));
    });
  });
}

TEST_CASE("cuda::device: events are values, and one never recorded is complete", "[cuda][gpu]") {
  on_gpu([](device& d) { device_contract::events_are_values(d); });
}

TEST_CASE("cuda::device: a failure of host work is sticky, skips later host work, events complete",
          "[cuda][gpu]") {
  on_gpu([](device& d) { device_contract::failure_is_sticky(d); });
}

TEST_CASE("cuda::device: clear_error is refused while a stream is busy", "[cuda][gpu]") {
  on_gpu([](device& d) { device_contract::clear_error_waits_for_idle(d); });
}

TEST_CASE("cuda::device: a capture spans the streams that join it", "[cuda][gpu]") {
  on_gpu([](device& d) { device_contract::capture_spans_streams(d); });
}

TEST_CASE("cuda::device: memory a capture allocates is the graph's", "[cuda][gpu]") {
  on_gpu([](device& d) { device_contract::capture_owns_memory(d); });
}

TEST_CASE("cuda::device: capture refuses synchronize, and launch replays", "[cuda][gpu]") {
  on_gpu([](device& d) { device_contract::capture_replays(d); });
}

TEST_CASE("cuda::device: handles of another device are refused", "[cuda][gpu]") {
  on_gpu([](device& d) {
    device e;
    device_contract::refuses_other_handles(d, e);
  });
}

TEST_CASE("cuda::device: the pool keeps released memory reserved and reports its peak", "[cuda][gpu]") {
  if (!have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  device d(device_options{.ordinal = 0, .rank = 0});
  auto s = d.create_stream("rank 0 compute");
  constexpr std::size_t mib = 1 << 20;
  void* a = d.allocate(8 * mib, s);
  void* b = d.allocate(8 * mib, s);
  d.release(a, s);
  d.release(b, s);
  REQUIRE(d.synchronize(s, device_contract::soon()) == ppipe::wait_status::ready);
  const auto after_first = d.memory();
  CHECK(after_first.allocations == 2);
  CHECK(after_first.bytes_in_use == 0);
  CHECK(after_first.peak_bytes_in_use >= 16 * mib);
  CHECK(after_first.bytes_reserved >= 16 * mib);  // kept for the next step
  // The same sizes again come from what the pool holds: it reserves no more.
  void* c = d.allocate(8 * mib, s);
  void* e = d.allocate(8 * mib, s);
  d.release(c, s);
  d.release(e, s);
  REQUIRE(d.synchronize(s, device_contract::soon()) == ppipe::wait_status::ready);
  CHECK(d.memory().peak_bytes_reserved == after_first.peak_bytes_reserved);
  CHECK_THAT(support::error_of([&] { static_cast<void>(d.allocate(std::size_t{1} << 62, s)); }),
             ppipe_test::contains("rank 0 (GPU 0), stream 'rank 0 compute': allocate(") &&
                 ppipe_test::contains("cudaErrorMemoryAllocation"));
}
