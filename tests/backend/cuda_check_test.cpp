#include <string>

#include <ppipe/cuda.hpp>

#include "catch.hpp"

namespace {

// The ppipe::error thrown by `f`, or a failed test if it throws nothing or something else.
template <class F>
ppipe::error error_from(F&& f) {
  try {
    f();
  } catch (const ppipe::error& e) {
    return e;
  }
  FAIL("expected a ppipe::error");
  return ppipe::error(ppipe::errc::invalid_argument, "not reached");
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("cuda::check accepts cudaSuccess", "[cuda]") {
  REQUIRE_NOTHROW(ppipe::cuda::check(cudaSuccess, "cudaSetDevice"));
}

TEST_CASE("cuda::check throws a backend error carrying the code and its name", "[cuda]") {
  const ppipe::error e =
      error_from([] { ppipe::cuda::check(cudaErrorMemoryAllocation, "cudaMalloc(stage 3 activations)"); });
  const std::string what = e.what();
  INFO(what);
  CHECK(e.code() == ppipe::errc::backend);
  CHECK(e.id() == "ppipe.backend");
  CHECK(what.rfind("[ppipe.backend] cudaMalloc(stage 3 activations) failed", 0) == 0);
  CHECK(contains(what, "CUDA error 2 cudaErrorMemoryAllocation"));
  CHECK(contains(what, cudaGetErrorString(cudaErrorMemoryAllocation)));
  CHECK(contains(what, "out of memory"));  // the hint
}

TEST_CASE("PPIPE_CUDA_CHECK names the expression, the file and the line", "[cuda]") {
  int line = 0;
  const ppipe::error e = error_from([&line] {
    line = __LINE__ + 1;
    PPIPE_CUDA_CHECK(cudaErrorInvalidValue);
  });
  const std::string what = e.what();
  INFO(what);
  CHECK(e.code() == ppipe::errc::backend);
  CHECK(contains(what, "cuda_check_test.cpp:" + std::to_string(line) + ": cudaErrorInvalidValue failed"));
  CHECK(contains(what, "CUDA error 1 cudaErrorInvalidValue"));
}

TEST_CASE("PPIPE_CUDA_CHECK evaluates its argument once and is silent on success", "[cuda]") {
  int calls = 0;
  const auto call = [&calls] {
    ++calls;
    return cudaSuccess;
  };
  PPIPE_CUDA_CHECK(call());
  CHECK(calls == 1);
}

TEST_CASE("cuda::device_count reports no device rather than throwing on a machine without a GPU",
          "[cuda]") {
  int first = -1;
  REQUIRE_NOTHROW(first = ppipe::cuda::device_count());
  CHECK(first >= 0);
  // Without a driver every runtime call fails again (the error is not a one-off), so asking twice
  // must give the same answer rather than a throw.
  int second = -1;
  REQUIRE_NOTHROW(second = ppipe::cuda::device_count());
  CHECK(second == first);
}
