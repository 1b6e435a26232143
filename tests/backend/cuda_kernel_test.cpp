#include <cstddef>
#include <vector>

#include <ppipe/cuda.hpp>

#include "catch.hpp"
#include "cuda_kernel.hpp"

TEST_CASE("a CUDA kernel built with ppipe::cuda runs and computes a*x + y", "[cuda][gpu]") {
  if (ppipe::cuda::device_count() == 0) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  constexpr std::size_t n = 1000;  // not a multiple of the block size: the tail must be guarded
  std::vector<float> x(n);
  std::vector<float> y(n);
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = static_cast<float>(i);
    y[i] = 1.0F;
  }
  ppipe_test::axpy_on_device(2.0F, x, y);
  for (std::size_t i = 0; i < n; ++i) {
    INFO("i = " << i);
    REQUIRE(y[i] == Approx(2.0 * static_cast<double>(i) + 1.0));
  }
}
