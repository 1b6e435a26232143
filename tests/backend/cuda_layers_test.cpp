// ppipe::cuda::linear (cuBLAS, plain C++) against its CPU reference, ppipe::layers::linear, on the
// GPU: the same weights for the same seed, results equal to rounding (cuBLAS sums in its own
// order). Skipped without a GPU. The kit's layers with kernels of their own: cuda_kit_test.cu.

#include <vector>

#include <ppipe/cuda.hpp>
#include <ppipe/layers/linear.hpp>

#include "catch.hpp"
#include "cuda_layer_testing.hpp"

using cuda_testing::close;
using cuda_testing::values;

TEST_CASE("cuda::linear computes what layers::linear computes, forward, backward and sgd", "[cuda][gpu]") {
  if (!cuda_testing::have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  cuda_testing::gpu_stage g;
  ppipe::cuda::linear gpu(5, 4, 7);
  ppipe::layers::linear cpu(5, 4, 7);
  gpu.materialize(g.ctx);
  const ppipe::payload x = values(3, 5, 0.1f);
  const ppipe::payload gy = values(3, 4, 0.7f);

  ppipe::payload y{ppipe::host_tensor(ppipe::shape{3, 4})};
  cpu.forward(ppipe::layer_context{}, x, y);
  auto dx = g.upload(x);
  auto dy = g.zeros({ppipe::shape{3, 4}});
  gpu.forward(g.ctx, dx, dy);
  close(g.download(dy)[0].values(), y[0].values());

  ppipe::payload gin{ppipe::host_tensor(ppipe::shape{3, 5})};
  cpu.backward(ppipe::layer_context{}, x, y, gy, gin);
  auto dg = g.upload(gy);
  auto dgin = g.zeros({ppipe::shape{3, 5}});
  gpu.backward(g.ctx, dx, dy, dg, dgin);
  close(g.download(dgin)[0].values(), gin[0].values());

  const float lr = 0.1f;
  gpu.sgd(g.dc, lr);
  std::vector<float> want;
  for (std::size_t i = 0; i < cpu.weight().size(); ++i) want.push_back(cpu.weight()[i] - lr * cpu.grad_weight()[i]);
  for (std::size_t i = 0; i < cpu.bias().size(); ++i) want.push_back(cpu.bias()[i] - lr * cpu.grad_bias()[i]);
  close(gpu.download(), want);
}
