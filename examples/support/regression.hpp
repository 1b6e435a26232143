#pragma once
// The examples' training tasks, synthetic regressions: the MLP demos (ppipe-train, ppipe-mpi-train)
// learn one, the residual-block demos (ppipe-cuda-train, ppipe-nccl-train) the other, and every
// process of an MPI job makes the same data.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include <ppipe/tensor/dtype.hpp>
#include <ppipe/tensor/tensor.hpp>

namespace examples {

// The task: y = sin(x.u) + 0.5 cos(x.w) for fixed random u, w (x.u and x.w have variance 1/3);
// inputs uniform in [-1, 1].
struct regression {
  ppipe::payload inputs;
  ppipe::payload targets;
};

inline regression make_regression(std::int64_t rows, int width, std::uint64_t seed) {
  std::uint64_t state = seed;
  const auto uniform = [&] {  // splitmix64 to a float in [-1, 1)
    state += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<float>(static_cast<double>(z >> 11) * 0x1.0p-53 * 2.0 - 1.0);
  };
  std::vector<float> u(static_cast<std::size_t>(width)), w(u.size());
  for (auto& v : u) v = uniform() * std::sqrt(3.0f / static_cast<float>(width));
  for (auto& v : w) v = uniform() * std::sqrt(3.0f / static_cast<float>(width));
  regression d{{ppipe::host_tensor(ppipe::shape{rows, width})}, {ppipe::host_tensor(ppipe::shape{rows, 1})}};
  for (std::int64_t r = 0; r < rows; ++r) {
    float a = 0.0f, b = 0.0f;
    for (std::size_t j = 0; j < u.size(); ++j) {
      const float x = uniform();
      d.inputs[0][static_cast<std::size_t>(r) * u.size() + j] = x;
      a += x * u[j];
      b += x * w[j];
    }
    d.targets[0][static_cast<std::size_t>(r)] = std::sin(a) + 0.5f * std::cos(b);
  }
  return d;
}

// The residual blocks' task, rows of `width` in and out: each target row is a smooth function of
// its input row (0.5 tanh(2 x) of the next column). In f32, or in bf16 (rounded to nearest even).
inline regression make_row_regression(std::int64_t rows, int width, ppipe::dtype type = ppipe::dtype::f32) {
  regression d{{ppipe::host_tensor(ppipe::shape({rows, width}, type))},
               {ppipe::host_tensor(ppipe::shape({rows, width}, type))}};
  const auto w = static_cast<std::size_t>(width);
  std::vector<float> x(static_cast<std::size_t>(rows) * w), t(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i % 9973) + 0.1f);
  for (std::size_t r = 0; r < x.size() / w; ++r) {
    for (std::size_t j = 0; j < w; ++j) t[r * w + j] = 0.5f * std::tanh(2.0f * x[r * w + (j + 1) % w]);
  }
  for (auto [from, to] : {std::pair{&x, &d.inputs[0]}, std::pair{&t, &d.targets[0]}}) {
    if (type == ppipe::dtype::bf16) {
      std::transform(from->begin(), from->end(), to->values<ppipe::bfloat16>().begin(),
                     [](float v) { return ppipe::bfloat16(v); });
    } else {
      std::copy(from->begin(), from->end(), to->values().begin());
    }
  }
  return d;
}

}  // namespace examples
