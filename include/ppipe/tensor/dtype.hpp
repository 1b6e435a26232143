#pragma once
/// @file
/// @brief Element types of tensors: the dtype tag, the 2-byte float value types bfloat16 and
/// float16, and the trait that maps a C++ element type to its dtype.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "ppipe/error.hpp"

namespace ppipe {

/// @brief What one element of a tensor is. f32 is the default everywhere a dtype is not given.
enum class dtype : std::uint8_t { f32, bf16, f16, i32, f64, i64 };

/// @brief The bytes of one element of `t`.
/// @param t the element type
/// @return 4, 2, 2, 4, 8 or 8
constexpr std::size_t size_of(dtype t) noexcept {
  switch (t) {
    case dtype::bf16:
    case dtype::f16:
      return 2;
    case dtype::f64:
    case dtype::i64:
      return 8;
    case dtype::f32:
    case dtype::i32:
      break;
  }
  return 4;
}

/// @brief "f32", "bf16", "f16", "i32", "f64" or "i64".
/// @param t the element type
/// @return its short name; "dtype(N)" never occurs for a valid value
constexpr std::string_view to_string(dtype t) noexcept {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::bf16: return "bf16";
    case dtype::f16: return "f16";
    case dtype::i32: return "i32";
    case dtype::f64: return "f64";
    case dtype::i64: return "i64";
  }
  return "unknown dtype";
}

/// @brief Whether `t` is one of the enumerators (what a value read from a message must be).
/// @param t the value to check, possibly cast from an integer
/// @return true for f32, bf16, f16, i32, f64 and i64; false for any other value
constexpr bool is_valid(dtype t) noexcept { return static_cast<std::uint8_t>(t) <= static_cast<std::uint8_t>(dtype::i64); }

/// @brief Whether elements of `t` are floating point (f32, bf16, f16, f64).
/// @param t the element type
/// @return false for i32 and i64, true otherwise
constexpr bool is_floating(dtype t) noexcept { return t != dtype::i32 && t != dtype::i64; }

/// @brief The brain float: float's sign and 8-bit exponent with a 7-bit mantissa, in 2 bytes.
/// Conversion from float rounds to nearest, ties to even (NaN stays NaN); to float it is exact.
class bfloat16 {
 public:
  /// @brief Positive zero.
  constexpr bfloat16() noexcept = default;
  /// @brief The bfloat16 nearest to `f` (ties to even; a NaN becomes a quiet NaN of its sign).
  /// @param f the value to round; values beyond bfloat16's range become infinities of their sign
  constexpr explicit bfloat16(float f) noexcept : bits_(round(std::bit_cast<std::uint32_t>(f))) {}
  /// @brief The value as a float (exact).
  /// @return the float of the same value; infinities and NaNs keep their sign
  constexpr explicit operator float() const noexcept { return std::bit_cast<float>(std::uint32_t{bits_} << 16); }
  /// @brief The value with these bits.
  /// @param bits the sign bit, then 8 exponent bits, then 7 mantissa bits, most significant first
  /// @return the bfloat16 whose bits() are `bits`
  static constexpr bfloat16 from_bits(std::uint16_t bits) noexcept {
    bfloat16 b;
    b.bits_ = bits;
    return b;
  }
  /// @brief The 16 bits of the value.
  /// @return the encoding, as from_bits() takes it (the upper half of the float's 32 bits)
  [[nodiscard]] constexpr std::uint16_t bits() const noexcept { return bits_; }
  /// @brief Bitwise equality (so NaN == NaN of the same bits, and +0 != -0): what a test compares.
  friend constexpr bool operator==(bfloat16, bfloat16) = default;

 private:
  static constexpr std::uint16_t round(std::uint32_t u) noexcept {
    if ((u & 0x7fffffffU) > 0x7f800000U) return static_cast<std::uint16_t>((u >> 16) | 0x40U);  // quiet NaN
    // Adding 0x7fff plus the lowest kept bit carries into the kept bits exactly when the dropped
    // bits are above half, or at half with an odd kept part: ties to even. Overflow gives inf.
    return static_cast<std::uint16_t>((u + 0x7fffU + ((u >> 16) & 1U)) >> 16);
  }
  std::uint16_t bits_ = 0;
};

/// @brief IEEE 754 binary16: sign, 5-bit exponent, 10-bit mantissa, in 2 bytes (largest finite
/// 65504). Conversion from float rounds to nearest, ties to even, with subnormals and overflow to
/// infinity (NaN stays NaN); to float it is exact.
class float16 {
 public:
  /// @brief Positive zero.
  constexpr float16() noexcept = default;
  /// @brief The float16 nearest to `f`.
  /// @param f the value to round; magnitudes that round above 65504 become infinities of their sign
  constexpr explicit float16(float f) noexcept : bits_(round(std::bit_cast<std::uint32_t>(f))) {}
  /// @brief The value as a float (exact).
  /// @return the float of the same value, subnormals included; infinities and NaNs keep their sign
  constexpr explicit operator float() const noexcept {
    const std::uint32_t sign = std::uint32_t{bits_ & 0x8000U} << 16;
    const std::uint32_t e = (bits_ >> 10) & 0x1fU;
    const std::uint32_t m = bits_ & 0x3ffU;
    if (e == 0x1fU) return std::bit_cast<float>(sign | 0x7f800000U | (m << 13));  // inf, NaN
    if (e == 0) {  // zero or subnormal: m * 2^-24, exact in float
      const float v = static_cast<float>(m) * 0x1p-24f;
      return sign != 0 ? -v : v;
    }
    return std::bit_cast<float>(sign | ((e + 112U) << 23) | (m << 13));
  }
  /// @brief The value with these bits.
  /// @param bits the sign bit, then 5 exponent bits, then 10 mantissa bits, most significant first
  /// @return the float16 whose bits() are `bits`
  static constexpr float16 from_bits(std::uint16_t bits) noexcept {
    float16 h;
    h.bits_ = bits;
    return h;
  }
  /// @brief The 16 bits of the value.
  /// @return the IEEE 754 binary16 encoding, as from_bits() takes it
  [[nodiscard]] constexpr std::uint16_t bits() const noexcept { return bits_; }
  /// @brief Bitwise equality, as for bfloat16.
  friend constexpr bool operator==(float16, float16) = default;

 private:
  static constexpr std::uint16_t round(std::uint32_t u) noexcept {
    const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000U);
    u &= 0x7fffffffU;
    if (u > 0x7f800000U) return static_cast<std::uint16_t>(sign | 0x7e00U | ((u >> 13) & 0x3ffU));  // quiet NaN
    if (u >= 0x38800000U) {  // half's normal range (2^-14 and up) or beyond
      // Ties to even at bit 13, as in bfloat16; the carry may run into the exponent, and past
      // half's largest exponent the result is infinity.
      const std::uint32_t h = ((u + 0xfffU + ((u >> 13) & 1U)) >> 13) - (112U << 10);
      return static_cast<std::uint16_t>(sign | (h >= 0x7c00U ? 0x7c00U : h));
    }
    if (u <= 0x33000000U) return sign;  // at most 2^-25 (half the smallest subnormal): rounds to 0
    // A subnormal: round(|f| * 2^24), ties to even; 1024 comes out as the smallest normal.
    const std::uint32_t m = (u & 0x7fffffU) | 0x800000U;
    const std::uint32_t shift = 126U - (u >> 23);  // 14..24
    std::uint32_t r = m >> shift;
    const std::uint32_t rest = m & ((1U << shift) - 1U);
    const std::uint32_t half = 1U << (shift - 1U);
    if (rest > half || (rest == half && (r & 1U) != 0)) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  std::uint16_t bits_ = 0;
};

static_assert(sizeof(bfloat16) == 2 && sizeof(float16) == 2 && std::is_trivially_copyable_v<bfloat16> &&
              std::is_trivially_copyable_v<float16>);

/// @brief The dtype of the C++ element type T: `dtype_of<T>::value` (and dtype_of_v<T>), defined
/// for float, bfloat16, float16, std::int32_t, double and std::int64_t only.
template <class T>
struct dtype_of;
template <>
struct dtype_of<float> : std::integral_constant<dtype, dtype::f32> {};
template <>
struct dtype_of<bfloat16> : std::integral_constant<dtype, dtype::bf16> {};
template <>
struct dtype_of<float16> : std::integral_constant<dtype, dtype::f16> {};
template <>
struct dtype_of<std::int32_t> : std::integral_constant<dtype, dtype::i32> {};
template <>
struct dtype_of<double> : std::integral_constant<dtype, dtype::f64> {};
template <>
struct dtype_of<std::int64_t> : std::integral_constant<dtype, dtype::i64> {};

/// @brief dtype_of<T>::value.
template <class T>
inline constexpr dtype dtype_of_v = dtype_of<std::remove_cv_t<T>>::value;

/// @brief A C++ type that is the element type of some dtype.
template <class T>
concept tensor_element = requires { dtype_of<std::remove_cv_t<T>>::value; };

/// @brief Calls `f(std::type_identity<T>{})` with T the element type of `t`: one generic body
/// per dtype instead of a switch at every use.
/// @param t the dtype
/// @param f a generic callable
/// @return what f returns (the same type for every T)
template <class F>
constexpr decltype(auto) visit_dtype(dtype t, F&& f) {
  switch (t) {
    case dtype::f32: return f(std::type_identity<float>{});
    case dtype::bf16: return f(std::type_identity<bfloat16>{});
    case dtype::f16: return f(std::type_identity<float16>{});
    case dtype::i32: return f(std::type_identity<std::int32_t>{});
    case dtype::f64: return f(std::type_identity<double>{});
    case dtype::i64: break;
  }
  return f(std::type_identity<std::int64_t>{});
}

namespace detail {

/// Refuses typed access to elements of `have` as elements of `want`, naming both.
inline void check_dtype(dtype have, dtype want, const char* what) {
  if (have != want) {
    fail(errc::invalid_argument, what, " holds ", to_string(have), " elements, not ", to_string(want),
         "; access it as the C++ type of ", to_string(have), " (or convert it)");
  }
}

}  // namespace detail
}  // namespace ppipe
