#pragma once
// Shared between the nvcc-compiled kernel and the g++-compiled Catch2 test.
#include <vector>

namespace ppipe_test {

// y = a * x + y on the current CUDA device; throws ppipe::error on any CUDA failure.
void axpy_on_device(float a, const std::vector<float>& x, std::vector<float>& y);

}  // namespace ppipe_test
