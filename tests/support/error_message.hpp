#pragma once
// The message of the ppipe::error(invalid_argument) that `f` throws; a test failure if it throws
// none or another kind.

#include <functional>
#include <string>

#include <catch.hpp>

#include "ppipe/error.hpp"

namespace support {

inline std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ppipe::error& e) {
    CHECK(e.id() == "ppipe.invalid_argument");
    return std::string(e.message());
  }
  FAIL("no ppipe::error was thrown");
  return {};
}

}  // namespace support
