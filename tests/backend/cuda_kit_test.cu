// The CUDA kit's layers with kernels of their own (gelu, layer_norm, mlp_block, linear_bf16,
// mse_loss; nvcc) against their CPU references in ppipe::layers, on the GPU: results equal to
// rounding, and where the kit promises bits (the split backward, the loss gradient) equal bits. Refusals of bad input are
// checked before anything reaches the GPU, so those cases run on every machine.

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <ppipe/cuda_kit.cuh>
#include <ppipe/layers/activation.hpp>
#include <ppipe/layers/layer_norm.hpp>
#include <ppipe/layers/linear.hpp>
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

// What the GPU computes for `x` and `gy`: `whole`'s forward and backward, and `split`'s backward in
// two halves, which must give the input gradient bit for bit; the calls leave nothing of the
// device's pool allocated. Returns the output and the input gradient.
template <class Layer>
std::pair<ppipe::payload, ppipe::payload> whole_and_split(cuda_testing::gpu_stage& g, Layer& whole, Layer& split,
                                                          const ppipe::payload& x, const ppipe::payload& gy) {
  auto dx = g.upload(x);
  auto dg = g.upload(gy);
  auto dy = g.zeros(ppipe::shapes_of(gy));
  auto dgx_whole = g.zeros(ppipe::shapes_of(x));
  auto dgx_split = g.zeros(ppipe::shapes_of(x));
  const std::size_t held = g.d.memory().bytes_in_use;  // the test's tensors, as the pool rounds them
  whole.forward(g.ctx, dx, dy);
  whole.backward(g.ctx, dx, dy, dg, dgx_whole);
  split.backward_input(g.ctx, dx, dy, dg, dgx_split);
  split.backward_weight(g.ctx, dx, dy, dg);
  ppipe::payload y = g.download(dy);
  ppipe::payload gx = g.download(dgx_whole);
  CHECK(g.download(dgx_split)[0] == gx[0]);
  CHECK(g.d.memory().bytes_in_use == held);
  return {std::move(y), std::move(gx)};
}

}  // namespace

TEST_CASE("cuda::gelu computes what layers::activation's gelu computes", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  cuda_testing::gpu_stage g;
  ppipe::cuda::gelu gpu(300);  // rows wider than a block
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

    const auto [got_y, got_gx] = whole_and_split(g, whole, split, x, gy);
    close(got_y[0].values(), y[0].values());
    close(got_gx[0].values(), gx[0].values(), 1e-5);  // three sums of 300 terms in another order
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

TEST_CASE("cuda::mlp_block computes its parts' CPU references plus the input, split or not", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  cuda_testing::gpu_stage g;
  const int width = 20;
  const int hidden = 72;
  ppipe::cuda::mlp_block whole(width, hidden, 11);
  ppipe::cuda::mlp_block split(width, hidden, 11);
  whole.materialize(g.ctx);
  split.materialize(g.ctx);
  ppipe::layers::layer_norm norm(width);
  ppipe::layers::linear up(width, hidden, 11);
  const ppipe::layers::activation act(ppipe::layers::activation_kind::gelu);
  ppipe::layers::linear down(hidden, width, 12);
  const ppipe::layer_context host;
  const std::int64_t rows = 6;
  auto zeros = [](std::int64_t r, int c) { return ppipe::payload{ppipe::host_tensor(ppipe::shape{r, c})}; };

  const ppipe::payload x = values(rows, width, 0.6f);
  const ppipe::payload gy = values(rows, width, 1.7f);
  ppipe::payload n = zeros(rows, width), h = zeros(rows, hidden), a = zeros(rows, hidden), y = zeros(rows, width);
  norm.forward(host, x, n);
  up.forward(host, n, h);
  act.forward(host, h, a);
  down.forward(host, a, y);
  for (std::size_t i = 0; i < y[0].size(); ++i) y[0][i] += x[0][i];
  ppipe::payload ga = zeros(rows, hidden), gh = zeros(rows, hidden), gn = zeros(rows, width), gx = zeros(rows, width);
  down.backward(host, a, y, gy, ga);
  act.backward(host, h, a, ga, gh);
  up.backward(host, n, h, gh, gn);
  norm.backward(host, x, n, gn, gx);
  for (std::size_t i = 0; i < gx[0].size(); ++i) gx[0][i] += gy[0][i];

  // The block's recomputed activations go back to the pool (whole_and_split checks it).
  const auto [got_y, got_gx] = whole_and_split(g, whole, split, x, gy);
  close(got_y[0].values(), y[0].values());
  close(got_gx[0].values(), gx[0].values());

  const float lr = 0.1f;
  whole.sgd(g.dc, lr);
  split.sgd(g.dc, lr);
  std::vector<float> want;
  auto updated = [&](std::span<const float> value, std::span<const float> grad) {
    for (std::size_t k = 0; k < value.size(); ++k) want.push_back(value[k] - lr * grad[k]);
  };
  updated(norm.gamma(), norm.grad_gamma());
  updated(norm.beta(), norm.grad_beta());
  updated(up.weight(), up.grad_weight());
  updated(up.bias(), up.grad_bias());
  updated(down.weight(), down.grad_weight());
  updated(down.bias(), down.grad_bias());
  const std::vector<float> weights = whole.download();
  close(weights, want);
  CHECK(split.download() == weights);
}

TEST_CASE("cuda::linear_bf16 computes layers::linear's results for bf16 values, to bf16's rounding", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  cuda_testing::gpu_stage g;
  const int ins = 40;
  const int outs = 24;
  const std::int64_t rows = 6;
  ppipe::cuda::linear_bf16 gpu(ins, outs, 5);
  ppipe::cuda::linear_bf16 split(ins, outs, 5);
  gpu.materialize(g.ctx);
  split.materialize(g.ctx);
  // The GEMMs read the weights rounded to bf16, so the reference does too; the update applies to
  // the fp32 master, the weights as drawn.
  ppipe::layers::linear ref(ins, outs, 5);
  const std::vector<float> w0(ref.weight().begin(), ref.weight().end());
  const std::vector<float> b0(ref.bias().begin(), ref.bias().end());
  for (float& w : ref.weight()) w = static_cast<float>(ppipe::bfloat16(w));
  for (float& b : ref.bias()) b = static_cast<float>(ppipe::bfloat16(b));

  const ppipe::payload x16 = cuda_testing::to_bf16(values(rows, ins, 0.8f));
  const ppipe::payload g16 = cuda_testing::to_bf16(values(rows, outs, 1.9f));
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{rows, ins})}, gy{ppipe::host_tensor(ppipe::shape{rows, outs})};
  const std::vector<float> xf = cuda_testing::floats(x16[0]), gf = cuda_testing::floats(g16[0]);
  std::copy(xf.begin(), xf.end(), x[0].values().begin());
  std::copy(gf.begin(), gf.end(), gy[0].values().begin());
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{rows, outs})}, gx{ppipe::host_tensor(ppipe::shape{rows, ins})};
  ref.forward(ppipe::layer_context{}, x, y);
  ref.backward(ppipe::layer_context{}, x, y, gy, gx);

  const auto [got_y, got_gx] = whole_and_split(g, gpu, split, x16, g16);
  cuda_testing::close_bf16(cuda_testing::floats(got_y[0]), y[0].values());
  cuda_testing::close_bf16(cuda_testing::floats(got_gx[0]), gx[0].values());

  const float lr = 0.1f;
  gpu.sgd(g.dc, lr);
  split.sgd(g.dc, lr);
  std::vector<float> want;
  for (std::size_t i = 0; i < w0.size(); ++i) want.push_back(w0[i] - lr * ref.grad_weight()[i]);
  for (std::size_t i = 0; i < b0.size(); ++i) want.push_back(b0[i] - lr * ref.grad_bias()[i]);
  const std::vector<float> weights = gpu.download();
  close(weights, want);  // fp32 gradients of exact bf16 products: to fp32's rounding
  CHECK(split.download() == weights);
}

TEST_CASE("cuda::gelu on bf16 computes layers::activation's gelu, to bf16's rounding", "[cuda][gpu]") {
  SKIP_WITHOUT_GPU();
  cuda_testing::gpu_stage g;
  ppipe::cuda::gelu gpu(33, ppipe::dtype::bf16);
  const ppipe::layers::activation cpu(ppipe::layers::activation_kind::gelu);
  const ppipe::payload x16 = cuda_testing::to_bf16(values(4, 33, 0.1f));
  ppipe::payload x{ppipe::host_tensor(ppipe::shape{4, 33})}, y{ppipe::host_tensor(ppipe::shape{4, 33})};
  const std::vector<float> xf = cuda_testing::floats(x16[0]);
  std::copy(xf.begin(), xf.end(), x[0].values().begin());
  cpu.forward(ppipe::layer_context{}, x, y);
  auto dx = g.upload(x16);
  auto dy = g.zeros({ppipe::shape({4, 33}, ppipe::dtype::bf16)});
  gpu.forward(g.ctx, dx, dy);
  cuda_testing::close_bf16(cuda_testing::floats(g.download(dy)[0]), y[0].values());
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

  ppipe::cuda::linear_bf16 half(4, 3, 1);
  CHECK_THROWS_WITH(half.output_shapes({ppipe::shape{2, 4}}), ppipe_test::contains("linear_bf16 4->3 takes one bf16"));
  CHECK_THROWS_WITH(half.forward(ctx, shaped({ppipe::shape({2, 4}, ppipe::dtype::bf16)}), out),
                    ppipe_test::contains("linear_bf16 4->3 holds no weights on the GPU"));
  CHECK_THROWS_WITH(ppipe::cuda::gelu(4, ppipe::dtype::i32), ppipe_test::contains("gelu of i32; give f32 or bf16"));

  CHECK_THROWS_WITH(ppipe::cuda::sgd(-1.0f), ppipe_test::contains("sgd learning rate -1 is not a finite number >= 0"));

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
