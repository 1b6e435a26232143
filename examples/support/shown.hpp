#pragma once
// Text from a file or a command line, made safe to echo in a message: a terminal must not act on
// its control bytes, and a 10 MB line must not flood the screen.

#include <cstddef>
#include <string>
#include <string_view>

namespace examples {

namespace detail {

// How many bytes of `text` from `i` form one valid UTF-8 character (printable or not), or 0.
inline std::size_t utf8_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  std::size_t n = 0;
  unsigned char low = 0x80;  // the second byte's range, narrower after E0, ED, F0 and F4
  unsigned char high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    n = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    n = 3;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    n = 4;
  }
  if (n == 0 || i + n > text.size()) return 0;
  if (lead == 0xE0) low = 0xA0;
  if (lead == 0xED) high = 0x9F;
  if (lead == 0xF0) low = 0x90;
  if (lead == 0xF4) high = 0x8F;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

}  // namespace detail

// `text` with every control byte and every byte that is not valid UTF-8 written as \xNN, and
// newlines kept when `keep_newlines`; at most `limit` characters of it, then "..." when it is
// longer. A backslash stays as it is, so that text shown twice reads the same.
inline std::string shown(std::string_view text, std::size_t limit = 80,
                         bool keep_newlines = false) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  std::size_t characters = 0;
  for (std::size_t i = 0; i < text.size(); ++characters) {
    if (characters == limit) return out + "...";
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      if (const std::size_t n = detail::utf8_length(text, i); n > 0) {
        out.append(text.substr(i, n));
        i += n;
        continue;
      }
    }
    if ((c < 0x20 && !(c == '\n' && keep_newlines)) || c >= 0x7F) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
    ++i;
  }
  return out;
}

// A whole message for stderr: escaped like shown(), newlines kept, nothing cut.
inline std::string printable(std::string_view message) {
  return shown(message, std::string_view::npos, true);
}

}  // namespace examples
