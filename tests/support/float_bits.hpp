#pragma once
// Float values for the layer tests: a test-local generator (independent of the kit's own seeding)
// and a bitwise comparison.

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace support {

/// Values in [-1, 1) from a linear congruential generator seeded with `seed`.
inline std::vector<float> random_values(std::size_t n, std::uint64_t seed) {
  std::vector<float> out(n);
  std::uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (float& v : out) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    v = static_cast<float>(s >> 40) / 8388608.0f - 1.0f;
  }
  return out;
}

/// Whether two spans hold the same bits, value for value.
inline bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

}  // namespace support
