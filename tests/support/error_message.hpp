#pragma once
// What a ppipe::error that `f` throws says: its message (invalid_argument expected) or its what()
// (any kind); a test failure if it throws none.

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

/// The what() of the ppipe::error that `f` throws, whatever its kind ("[ppipe.<id>] message"); a
/// test failure if it throws none.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ppipe::error& e) {
    return e.what();
  }
  FAIL("no ppipe::error was thrown");
  return {};
}

}  // namespace support
