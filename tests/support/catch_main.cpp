// Catch2's runner, compiled once and shared by every test executable (it takes ~8 s to compile).
#if __has_include(<catch2/catch_test_macros.hpp>)
#error "Catch2 v3 ships its own main: link Catch2::Catch2WithMain instead of this file"
#else
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
