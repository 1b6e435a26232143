// Element types: sizes and names, bfloat16 and float16 rounding (ties to even, NaN, infinities,
// subnormals), shapes that carry a dtype, typed access that refuses the wrong one, the pool and
// slicing and stacking of tensors of every dtype, and payload bytes that keep dtypes.

#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "error_message.hpp"
#include "ppipe/tensor/bytes.hpp"
#include "ppipe/runtime/buffer_pool.hpp"
#include "ppipe/tensor/dtype.hpp"
#include "ppipe/tensor/tensor.hpp"
#include "ppipe/tensor/tensor_view.hpp"

namespace {

using ppipe::bfloat16;
using ppipe::dtype;
using ppipe::float16;
using ppipe::host_tensor;
using ppipe::payload;
using ppipe::shape;
using support::message_of;
using Catch::Matchers::Contains;

float from_bits(std::uint32_t u) { return std::bit_cast<float>(u); }

}  // namespace

TEST_CASE("dtype: sizes, names and the trait", "[dtype]") {
  CHECK(ppipe::size_of(dtype::f32) == 4);
  CHECK(ppipe::size_of(dtype::bf16) == 2);
  CHECK(ppipe::size_of(dtype::f16) == 2);
  CHECK(ppipe::size_of(dtype::i32) == 4);
  CHECK(ppipe::size_of(dtype::f64) == 8);
  CHECK(ppipe::size_of(dtype::i64) == 8);
  CHECK(ppipe::to_string(dtype::f32) == "f32");
  CHECK(ppipe::to_string(dtype::bf16) == "bf16");
  CHECK(ppipe::to_string(dtype::f16) == "f16");
  CHECK(ppipe::to_string(dtype::i32) == "i32");
  STATIC_REQUIRE(ppipe::dtype_of_v<float> == dtype::f32);
  STATIC_REQUIRE(ppipe::dtype_of_v<bfloat16> == dtype::bf16);
  STATIC_REQUIRE(ppipe::dtype_of_v<float16> == dtype::f16);
  STATIC_REQUIRE(ppipe::dtype_of_v<std::int32_t> == dtype::i32);
  STATIC_REQUIRE(ppipe::dtype_of<double>::value == dtype::f64);
  STATIC_REQUIRE(!ppipe::tensor_element<char>);
  STATIC_REQUIRE(sizeof(bfloat16) == 2 && sizeof(float16) == 2);
}

TEST_CASE("bfloat16 rounds to nearest, ties to even, keeps NaN and infinities", "[dtype]") {
  CHECK(bfloat16(1.0f).bits() == 0x3f80);
  CHECK(static_cast<float>(bfloat16(1.0f)) == 1.0f);
  CHECK(bfloat16(-2.0f).bits() == 0xc000);
  // 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7: down to 1.
  CHECK(bfloat16(from_bits(0x3f808000)).bits() == 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up to the even one.
  CHECK(bfloat16(from_bits(0x3f818000)).bits() == 0x3f82);
  // Just above and below half.
  CHECK(bfloat16(from_bits(0x3f808001)).bits() == 0x3f81);
  CHECK(bfloat16(from_bits(0x3f807fff)).bits() == 0x3f80);
  // The largest float rounds up to infinity; infinities stay.
  CHECK(bfloat16(std::numeric_limits<float>::max()).bits() == 0x7f80);
  CHECK(bfloat16(std::numeric_limits<float>::infinity()).bits() == 0x7f80);
  CHECK(bfloat16(-std::numeric_limits<float>::infinity()).bits() == 0xff80);
  // A NaN whose payload lies only in the dropped bits stays a NaN (not infinity), of its sign.
  const bfloat16 nan(from_bits(0x7f800001));
  CHECK(std::isnan(static_cast<float>(nan)));
  CHECK(std::isnan(static_cast<float>(bfloat16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK((bfloat16(from_bits(0xff800001)).bits() & 0x8000) != 0);
  // Every bfloat16 survives a trip through float.
  for (std::uint32_t b = 0; b <= 0xffff; ++b) {
    const auto x = bfloat16::from_bits(static_cast<std::uint16_t>(b));
    const float f = static_cast<float>(x);
    if (std::isnan(f)) continue;
    REQUIRE(bfloat16(f).bits() == b);
  }
}

TEST_CASE("float16 rounds to nearest, ties to even, with subnormals, overflow and NaN", "[dtype]") {
  CHECK(float16(1.0f).bits() == 0x3c00);
  CHECK(float16(-2.0f).bits() == 0xc000);
  CHECK(float16(65504.0f).bits() == 0x7bff);
  CHECK(static_cast<float>(float16::from_bits(0x7bff)) == 65504.0f);
  // 1 + 2^-11 is halfway between 1 (even) and 1 + 2^-10: down; 1 + 3 * 2^-11: up to even.
  CHECK(float16(1.0f + 0x1p-11f).bits() == 0x3c00);
  CHECK(float16(1.0f + 3 * 0x1p-11f).bits() == 0x3c02);
  CHECK(float16(from_bits(0x3f801001)).bits() == 0x3c01);
  // 65520 is halfway between 65504 (odd mantissa) and 65536 (infinity): up to infinity.
  CHECK(float16(65519.0f).bits() == 0x7bff);
  CHECK(float16(65520.0f).bits() == 0x7c00);
  CHECK(float16(1e9f).bits() == 0x7c00);
  CHECK(float16(-std::numeric_limits<float>::infinity()).bits() == 0xfc00);
  // Subnormals: the smallest is 2^-24; 2^-25 is the tie with 0 (even): 0; above it, 2^-24.
  CHECK(float16(0x1p-24f).bits() == 0x0001);
  CHECK(float16(0x1p-25f).bits() == 0x0000);
  CHECK(float16(0x1.000002p-25f).bits() == 0x0001);
  CHECK(float16(3 * 0x1p-25f).bits() == 0x0002);  // 1.5 * 2^-24: tie between 1 and 2: even, 2
  CHECK(float16(-0x1p-24f).bits() == 0x8001);
  CHECK(float16(-0.0f).bits() == 0x8000);
  CHECK(static_cast<float>(float16::from_bits(0x0001)) == 0x1p-24f);
  CHECK(static_cast<float>(float16::from_bits(0x03ff)) == 1023 * 0x1p-24f);
  // The largest subnormal rounds up into the smallest normal.
  CHECK(float16(from_bits(0x387fffff)).bits() == 0x0400);
  CHECK(std::isnan(static_cast<float>(float16(from_bits(0x7f800001)))));
  CHECK(std::isnan(static_cast<float>(float16(std::numeric_limits<float>::quiet_NaN()))));
  for (std::uint32_t b = 0; b <= 0xffff; ++b) {
    const auto x = float16::from_bits(static_cast<std::uint16_t>(b));
    const float f = static_cast<float>(x);
    if (std::isnan(f)) continue;
    REQUIRE(float16(f).bits() == b);
  }
}

TEST_CASE("a shape carries its dtype: equality, text, with_batch, bytes", "[dtype]") {
  const shape a{8, 16};
  CHECK(a.dtype() == dtype::f32);
  CHECK(ppipe::to_string(a) == "[8, 16]");
  const shape b({8, 16}, dtype::bf16);
  CHECK(ppipe::to_string(b) == "[8, 16] bf16");
  CHECK(a != b);
  CHECK(a.with_dtype(dtype::bf16) == b);
  CHECK(b.with_batch(2) == shape({2, 16}, dtype::bf16));
  CHECK(a.bytes() == 8 * 16 * 4);
  CHECK(b.bytes() == 8 * 16 * 2);
  CHECK(shape(std::vector<std::int64_t>{3}, dtype::i32).bytes() == 12);
  CHECK_THAT(message_of([] { (void)shape({2}, static_cast<dtype>(99)); }), Contains("dtype value 99"));
}

TEST_CASE("typed access refuses the wrong dtype, naming both", "[dtype]") {
  host_tensor t(shape({4}, dtype::bf16), std::vector<bfloat16>{bfloat16(1.0f), bfloat16(2.5f), bfloat16(-3.0f),
                                                              bfloat16(0.0f)});
  CHECK(t.bytes() == 8);
  CHECK(t.size() == 4);
  CHECK(static_cast<float>(t.values<bfloat16>()[1]) == 2.5f);
  CHECK_THAT(message_of([&] { (void)t.data(); }), Contains("holds bf16 elements, not f32"));
  CHECK_THAT(message_of([&] { (void)t.values<std::int32_t>(); }), Contains("holds bf16 elements, not i32"));
  const host_tensor& ct = t;
  CHECK_THAT(message_of([&] { (void)ct.values(); }), Contains("holds bf16 elements, not f32"));
  CHECK_THAT(message_of([] { (void)host_tensor(shape{2}, std::vector<std::int32_t>{1, 2}); }),
             Contains("holds f32 elements but was given i32 values"));
  CHECK_THAT(message_of([] { (void)host_tensor(shape({3}, dtype::i32), std::vector<std::int32_t>{1, 2}); }),
             Contains("needs 3 values, but 2 were given"));
  // Every dtype's storage is aligned for any element.
  for (const dtype d : {dtype::f32, dtype::bf16, dtype::f16, dtype::i32, dtype::f64, dtype::i64}) {
    const host_tensor z(shape({3}, d));
    CHECK(z.bytes() == 3 * ppipe::size_of(d));
    CHECK(reinterpret_cast<std::uintptr_t>(z.byte_data()) % 16 == 0);
  }
  // Equality compares dtypes too.
  CHECK(host_tensor(shape({2}, dtype::i32)) != host_tensor(shape({2}, dtype::f32)));
  CHECK(host_tensor(shape{2}, {1.0f, 2.0f}) == host_tensor(shape{2}, {1.0f, 2.0f}));
}

TEST_CASE("tensor_view: typed spans of any dtype", "[dtype]") {
  std::vector<bfloat16> w(3);
  const ppipe::tensor_view v{std::span<bfloat16>(w)};
  CHECK(v.type == dtype::bf16);
  CHECK(v.elements == 3);
  CHECK(v.bytes() == 6);
  CHECK(v.as<bfloat16>().data() == w.data());
  CHECK_THAT(message_of([&] { (void)v.as<float>(); }), Contains("the tensor view holds bf16 elements, not f32"));
}

TEST_CASE("slice_rows and concat_rows work on bytes of every dtype", "[dtype]") {
  std::vector<bfloat16> h;
  for (int i = 0; i < 12; ++i) h.emplace_back(static_cast<float>(i) * 0.5f);
  std::vector<std::int32_t> ids{10, 11, 12, 13};
  const payload batch{host_tensor(shape({4, 3}, dtype::bf16), h), host_tensor(shape({4}, dtype::i32), ids)};
  const payload mid = ppipe::slice_rows(batch, 1, 2);
  REQUIRE(mid.size() == 2);
  CHECK(mid[0].shape() == shape({2, 3}, dtype::bf16));
  CHECK(static_cast<float>(mid[0].values<bfloat16>()[0]) == 1.5f);
  CHECK(static_cast<float>(mid[0].values<bfloat16>()[5]) == 4.0f);
  CHECK(mid[1].shape() == shape({2}, dtype::i32));
  CHECK(mid[1].values<std::int32_t>()[0] == 11);
  CHECK(mid[1].values<std::int32_t>()[1] == 12);
  const payload whole =
      ppipe::concat_rows({ppipe::slice_rows(batch, 0, 1), mid, ppipe::slice_rows(batch, 3, 1)});
  CHECK(whole == batch);
  // Parts of other dtypes do not stack.
  const payload f32_part{host_tensor(shape{1, 3}), host_tensor(shape({1}, dtype::i32))};
  CHECK_THAT(message_of([&] { (void)ppipe::concat_rows({mid, f32_part}); }), Contains("[1, 3], [1] i32"));
}

TEST_CASE("the pool keys storage by bytes: a bf16 tensor reuses f32 storage of its size", "[dtype]") {
  ppipe::buffer_pool<host_tensor> pool;
  payload p = pool.acquire(std::vector<shape>{shape{4, 8}});  // 128 bytes
  p[0].values()[3] = 7.0f;
  const std::byte* where = p[0].byte_data();
  pool.release(p);
  payload q = pool.acquire(std::vector<shape>{shape({8, 8}, dtype::bf16)});  // 128 bytes
  CHECK(q[0].byte_data() == where);
  CHECK(q[0].dtype() == dtype::bf16);
  for (const bfloat16 x : q[0].values<bfloat16>()) CHECK(x.bits() == 0);  // zeroed
  CHECK(pool.stats().live_bytes == 128);
  pool.release(q);
  payload r = pool.for_receive({shape({32}, dtype::i32)});
  CHECK(r[0].byte_data() == where);
  CHECK(r[0].bytes() == 128);
}

TEST_CASE("payload bytes keep each tensor's dtype", "[dtype]") {
  const payload p{host_tensor(shape({2, 2}, dtype::bf16),
                              std::vector<bfloat16>{bfloat16(1.0f), bfloat16(-1.0f), bfloat16(0.25f), bfloat16(8.0f)}),
                  host_tensor(shape({3}, dtype::i32), std::vector<std::int32_t>{-5, 0, 2147483647}),
                  host_tensor(shape{1}, {3.5f})};
  const std::vector<std::byte> bytes = ppipe::detail::serialize_payloads({p, p});
  const std::vector<payload> back = ppipe::detail::deserialize_payloads<host_tensor>(bytes);
  REQUIRE(back.size() == 2);
  CHECK(back[0] == p);
  CHECK(back[1] == p);
  CHECK(ppipe::shapes_of(back[0]) == ppipe::shapes_of(p));
}
