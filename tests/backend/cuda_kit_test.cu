// The CUDA kit's layers with kernels of their own (gelu, layer_norm, mse_loss; nvcc) against their
// CPU references in ppipe::layers, on the GPU: results equal to rounding, and where the kit
// promises bits (the split backward, the loss gradient) equal bits. Refusals of bad input are
// checked before anything reaches the GPU, so those cases run on every machine.

#include <cstring>
#include <string>
#include <vector>

#include <ppipe/cuda_kit.cuh>
#include <ppipe/layers/activation.hpp>
#include <ppipe/layers/layer_norm.hpp>
#include <ppipe/layers/mse_loss.hpp>

#include "catch.hpp"
#include "cuda_layer_testing.hpp"

using cuda_testing::close;
using cuda_testing::values;

namespace {

#define SKIP_WITHOUT_GPU()              \
  if (!cuda_testing::have_gpu()) {      \
    WARN("SKIPPED: no CUDA device");    \
    return;                             \
  }

// A device payload that names shapes only: enough for the checks that run before any launch.
ppipe::basic_payload<ppipe::device_tensor> shaped(std::initializer_list<ppipe::shape> shapes) {
  ppipe::basic_payload<ppipe::device_tensor> p;
  for (const ppipe::shape& s : shapes) p.emplace_back(s, nullptr);
  return p;
}

}  // namespace

TEST_CASE("cuda::gelu computes what layers::activation's gelu computes", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  cuda_testing::gpu_stage g;
  ppipe::cuda::gelu gpu(300);  // wider than a block: the grid-stride loop is exercised
  const ppipe::layers::activation cpu(ppipe::layers::activation_kind::gelu);
  const ppipe::payload x = values(5, 300, 0.3f);
  const ppipe::payload gy = values(5, 300, 1.1f);
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{5, 300})};
  ppipe::payload gx{ppipe::host_tensor(ppipe::shape{5, 300})};
  cpu.forward(ppipe::layer_context{}, x, y);
  cpu.backward(ppipe::layer_context{}, x, y, gy, gx);

  auto dx = g.upload(x);
  auto dy = g.zeros({ppipe::shape{5, 300}});
  auto dg = g.upload(gy);
  auto dgx = g.zeros({ppipe::shape{5, 300}});
  gpu.forward(g.ctx, dx, dy);
  gpu.backward(g.ctx, dx, dy, dg, dgx);
  close(g.download(dy)[0].values(), y[0].values());
  close(g.download(dgx)[0].values(), gx[0].values());
}

TEST_CASE("cuda::layer_norm computes what layers::layer_norm computes, split or not", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  cuda_testing::gpu_stage g;
  const int width = 300;
  ppipe::cuda::layer_norm whole(width);
  ppipe::cuda::layer_norm split(width);
  ppipe::layers::layer_norm cpu(width);
  whole.materialize(g.ctx);
  split.materialize(g.ctx);
  const float lr = 0.05f;
  for (int call = 0; call < 2; ++call) {  // the gradients accumulate over calls
    INFO("call " << call);
    const ppipe::payload x = values(7, width, 0.2f + static_cast<float>(call));
    const ppipe::payload gy = values(7, width, 0.9f + static_cast<float>(call));
    ppipe::payload y{ppipe::host_tensor(ppipe::shape{7, width})};
    ppipe::payload gx{ppipe::host_tensor(ppipe::shape{7, width})};
    cpu.forward(ppipe::layer_context{}, x, y);
    cpu.backward(ppipe::layer_context{}, x, y, gy, gx);

    auto dx = g.upload(x);
    auto dg = g.upload(gy);
    auto dy = g.zeros({ppipe::shape{7, width}});
    auto dgx_whole = g.zeros({ppipe::shape{7, width}});
    auto dgx_split = g.zeros({ppipe::shape{7, width}});
    whole.forward(g.ctx, dx, dy);
    whole.backward(g.ctx, dx, dy, dg, dgx_whole);
    split.backward_input(g.ctx, dx, dy, dg, dgx_split);
    split.backward_weight(g.ctx, dx, dy, dg);
    close(g.download(dy)[0].values(), y[0].values());
    const ppipe::payload got = g.download(dgx_whole);
    close(got[0].values(), gx[0].values());
    CHECK(g.download(dgx_split)[0] == got[0]);
  }
  whole.sgd(g.dc, lr);
  split.sgd(g.dc, lr);
  std::vector<float> want;
  for (std::size_t k = 0; k < cpu.gamma().size(); ++k) want.push_back(cpu.gamma()[k] - lr * cpu.grad_gamma()[k]);
  for (std::size_t k = 0; k < cpu.beta().size(); ++k) want.push_back(cpu.beta()[k] - lr * cpu.grad_beta()[k]);
  const std::vector<float> got = whole.download();
  close(got, want);
  CHECK(split.download() == got);
}

TEST_CASE("cuda::mse_loss: the host's gradient bits, its value to rounding", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  cuda_testing::gpu_stage g;
  const ppipe::payload y = values(9, 70, 0.4f);
  const ppipe::payload t = values(9, 70, 2.0f);
  ppipe::payload grad{ppipe::host_tensor(ppipe::shape{9, 70})};
  const double want = ppipe::layers::mse_loss{}(y, t, grad, 0.25);

  auto dy = g.upload(y);
  auto dt = g.upload(t);
  auto dgrad = g.zeros({ppipe::shape{9, 70}});
  auto dvalue = g.zeros({ppipe::shape{{1}, ppipe::dtype::f64}});
  ppipe::cuda::mse_loss()(g.ctx, dy, dt, dgrad, 0.25, dvalue[0]);
  CHECK(g.download(dgrad)[0] == grad[0]);
  double got = 0.0;
  const ppipe::payload v = g.download(dvalue);
  std::memcpy(&got, v[0].byte_data(), sizeof got);
  CHECK(got == Approx(want).epsilon(1e-12));
}

TEST_CASE("the CUDA kit refuses bad input before launching anything", "[cuda]") {
  // No GPU is touched: these run on every machine.
  const ppipe::basic_layer_context<ppipe::cuda::device> ctx;
  ppipe::cuda::gelu gelu(4);
  auto out = shaped({ppipe::shape{2, 4}});
  CHECK_THROWS_WITH(gelu.forward(ctx, shaped({ppipe::shape{2, 3}}), out),
                    ppipe_test::contains("gelu 4: `in` has shapes") && ppipe_test::contains("[rows, 4]"));
  CHECK_THROWS_WITH(gelu.output_shapes({ppipe::shape{2, 4}, ppipe::shape{2}}),
                    ppipe_test::contains("gelu 4 takes one f32 tensor [rows, 4]"));
  CHECK_THROWS_WITH(ppipe::cuda::gelu(0), ppipe_test::contains("gelu of width 0"));

  ppipe::cuda::layer_norm norm(4);
  CHECK_THROWS_WITH(norm.forward(ctx, shaped({ppipe::shape{2, 4}}), out),
                    ppipe_test::contains("layer_norm 4 holds no weights on the GPU"));
  CHECK_THROWS_WITH(ppipe::cuda::layer_norm(4, 0.0f), ppipe_test::contains("give a width >= 1 and an eps > 0"));

  auto grad = shaped({ppipe::shape{2, 4}});
  const ppipe::device_tensor value(ppipe::shape{{1}, ppipe::dtype::f64}, nullptr);
  CHECK_THROWS_WITH(ppipe::cuda::mse_loss()(ctx, shaped({ppipe::shape{2, 4}}), shaped({ppipe::shape{2, 5}}), grad, 1.0,
                                            value),
                    ppipe_test::contains("the target has shape"));
}
