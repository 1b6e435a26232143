#pragma once
// One include for Catch2 v2 (Debian's) and v3, so the tests build against either.
#include <string>

#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
using Catch::Approx;
namespace ppipe_test {
/// A matcher for messages that contain `text` (v3 spells it ContainsSubstring).
inline auto contains(const std::string& text) { return Catch::Matchers::ContainsSubstring(text); }
}  // namespace ppipe_test
#else
#include <catch2/catch.hpp>
namespace ppipe_test {
/// A matcher for messages that contain `text`.
inline auto contains(const std::string& text) { return Catch::Matchers::Contains(text); }
}  // namespace ppipe_test
#endif
