#pragma once
// Sizes the example tools work out from their command lines, checked before anything is
// allocated: products that stop at the largest 64-bit count instead of wrapping round, and a
// comparison with the machine's memory that names what asked for too much.

#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>
#include <unistd.h>

#include <ppipe/error.hpp>

namespace examples {

// A byte count past what 64 bits hold; it reads "more than 16 EiB".
inline constexpr std::uint64_t too_many = std::numeric_limits<std::uint64_t>::max();

// a * b and a + b, saturated at too_many.
inline std::uint64_t times(std::uint64_t a, std::uint64_t b) {
  std::uint64_t out = 0;
  return __builtin_mul_overflow(a, b, &out) ? too_many : out;
}
inline std::uint64_t plus(std::uint64_t a, std::uint64_t b) {
  std::uint64_t out = 0;
  return __builtin_add_overflow(a, b, &out) ? too_many : out;
}

// The product of counts that the command line checked to be >= 0.
template <class... Counts>
std::uint64_t product(Counts... counts) {
  std::uint64_t out = 1;
  ((out = times(out, static_cast<std::uint64_t>(counts))), ...);
  return out;
}

// The machine's physical memory in bytes, or too_many where the system does not say.
inline std::uint64_t physical_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return too_many;
  return product(pages, page_size);
}

// "512 B", "1.5 GiB", "more than 16 EiB".
inline std::string human_bytes(std::uint64_t bytes) {
  if (bytes == too_many) return "more than 16 EiB";
  constexpr const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  auto value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(units)) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

// Throws ppipe::error (out_of_memory) when `need` bytes are more than `have` (by default the
// machine's memory): "<what> needs about <need>, more than this machine's <have> of memory; <fix>".
inline void check_memory(std::uint64_t need, std::string_view what, std::string_view fix,
                         std::uint64_t have = physical_memory()) {
  if (need <= have) return;
  ppipe::detail::fail(ppipe::errc::out_of_memory, what,
                      need == too_many ? " needs " : " needs about ", human_bytes(need),
                      ", more than this machine's ", human_bytes(have), " of memory; ", fix);
}

}  // namespace examples
