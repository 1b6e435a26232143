// device_buffers, the stage buffers in a device's memory, on the CPU model with poison and the race
// checker on: what a stage acquires is zeroed on its stream (also when the device reuses a block it
// poisoned), counted as held until released, and off limits to a stream not ordered after it.

#include <cstddef>
#include <cstdint>
#include <vector>

#include <catch.hpp>

#include "device_contract.hpp"
#include "error_message.hpp"
#include "ppipe/device/cpu_device.hpp"
#include "ppipe/runtime/device_buffers.hpp"

namespace {

using ppipe::cpu_stream_device;
using ppipe::dtype;
using ppipe::shape;
using ppipe::wait_status;
using buffers = ppipe::device_buffers<cpu_stream_device>;
using device_contract::host_buffer;
using device_contract::soon;
using support::error_of;

// The bytes of `t`, copied out on `s` and read once `s` has run.
std::vector<std::byte> read_back(cpu_stream_device& d, cpu_stream_device::stream s, const ppipe::device_tensor& t) {
  host_buffer<cpu_stream_device, std::byte> out(t.bytes());
  d.copy_async(s, out.data(), t.byte_data(), t.bytes());
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  return {out.data(), out.data() + t.bytes()};
}

bool all_zero(const std::vector<std::byte>& v) {
  for (const std::byte b : v) {
    if (b != std::byte{0}) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("device_buffers: tensors of the shapes asked, zeroed on the stream, counted until released",
          "[device_buffers]") {
  cpu_stream_device d;
  auto s = d.create_stream("rank 0 compute");
  buffers pool(&d);
  const std::vector<shape> shapes{shape{4, 8}, shape({3}, dtype::i32)};
  auto b = pool.acquire(shapes, s);
  REQUIRE(b.data->size() == 2);
  CHECK((*b.data)[0].shape() == shapes[0]);
  CHECK((*b.data)[1].dtype() == dtype::i32);
  CHECK(b.regions.size() == 2);
  CHECK(b.regions[0].bytes == 4 * 8 * sizeof(float));
  CHECK(all_zero(read_back(d, s, (*b.data)[0])));  // fresh memory is poisoned (NaN) on the CPU model
  CHECK(all_zero(read_back(d, s, (*b.data)[1])));
  CHECK_THAT(error_of([&] { static_cast<void>((*b.data)[0].data<std::int32_t>()); }),
             ppipe_test::contains("a device tensor of dtype f32 was read as i32"));
  const std::size_t bytes = 4 * 8 * sizeof(float) + 3 * sizeof(std::int32_t);
  CHECK(pool.stats().live_bytes == bytes);
  pool.release(b, s);
  CHECK_FALSE(b);
  CHECK(pool.stats().live_bytes == 0);
  CHECK(pool.stats().peak_bytes == bytes);
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
  CHECK(d.allocator_stats().bytes_in_use == 0);
}

TEST_CASE("device_buffers: a block the device reuses in stream order comes back zeroed", "[device_buffers]") {
  cpu_stream_device d;
  auto s = d.create_stream("rank 0 compute");
  buffers pool(&d);
  auto first = pool.acquire({shape{16}}, s);
  host_buffer<cpu_stream_device, float> ones(16);
  for (std::size_t k = 0; k < 16; ++k) ones[k] = 1.0f;
  d.copy_async(s, (*first.data)[0].byte_data(), ones.data(), 16 * sizeof(float));
  std::byte* const where = (*first.data)[0].byte_data();
  pool.release(first, s);
  auto second = pool.acquire({shape{16}}, s);
  CHECK((*second.data)[0].byte_data() == where);  // the same block, reused on the same stream
  CHECK(d.allocator_stats().reused == 1);
  CHECK(all_zero(read_back(d, s, (*second.data)[0])));
  pool.release(second, s);
}

TEST_CASE("device_buffers: another stream must be ordered after the acquire, and before the release",
          "[device_buffers]") {
  cpu_stream_device d;
  auto compute = d.create_stream("rank 0 compute");
  auto send = d.create_stream("rank 0 send");
  buffers pool(&d);
  auto b = pool.acquire({shape{8}}, compute);
  const auto& r = b.regions[0];
  CHECK_THAT(error_of([&] { d.use(send, r.data, r.bytes, ppipe::access::read); }),
             ppipe_test::contains("unordered access (read after write)"));
  d.wait(send, d.record(compute));
  d.use(send, r.data, r.bytes, ppipe::access::read);
  d.enqueue(send, [] {}, "send");
  CHECK_THAT(error_of([&] { pool.release(b, compute); }), ppipe_test::contains("write after read"));
  CHECK(pool.stats().live_bytes == 32);  // a refused release leaves the payload held
  d.wait(compute, d.record(send));
  pool.release(b, compute);
  CHECK_FALSE(b);
  CHECK(pool.stats().live_bytes == 0);
  REQUIRE(d.synchronize(compute, soon()) == wait_status::ready);
}

TEST_CASE("device_buffers: a receive's buffers are counted when the stage takes them", "[device_buffers]") {
  cpu_stream_device d;
  auto s = d.create_stream("rank 1 receive");
  buffers pool(&d);
  auto b = pool.acquire({shape{2, 2}}, s, false);
  CHECK(pool.stats().live_bytes == 0);
  pool.count(b);
  CHECK(pool.stats().live_bytes == 16);
  pool.forget(b);
  CHECK(pool.stats().live_bytes == 0);
  pool.release(b, s, false);
  CHECK(pool.stats().peak_bytes == 16);
  REQUIRE(d.synchronize(s, soon()) == wait_status::ready);
}
