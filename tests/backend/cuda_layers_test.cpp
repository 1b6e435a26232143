// The cuBLAS layer kit against its CPU references (ppipe::layers), on the GPU: the same weights
// for the same seed, results equal to rounding (cuBLAS sums in its own order). Skipped without a GPU.

#include <cmath>
#include <cstddef>
#include <vector>

#include <cuda_runtime_api.h>

#include <ppipe/cuda.hpp>
#include <ppipe/layers/linear.hpp>

#include "catch.hpp"

namespace {

bool have_gpu() { return ppipe::cuda::device_count() > 0; }

// Device tensors of the host tensors' shapes and values, freed with the holder.
struct on_device {
  ppipe::cuda::device* d;
  ppipe::cuda::device::stream s;
  std::vector<void*> held;
  ppipe::basic_payload<ppipe::device_tensor> upload(const ppipe::payload& host) {
    ppipe::basic_payload<ppipe::device_tensor> out;
    for (const ppipe::host_tensor& t : host) {
      auto* p = static_cast<std::byte*>(d->allocate(t.bytes(), s));
      held.push_back(p);
      ppipe::cuda::check(cudaMemcpyAsync(p, t.byte_data(), t.bytes(), cudaMemcpyHostToDevice, s.handle()), "upload");
      out.emplace_back(t.shape(), p);
    }
    return out;
  }
  ppipe::payload download(const ppipe::basic_payload<ppipe::device_tensor>& dev) {
    REQUIRE(d->synchronize(s, ppipe::deadline_after(std::chrono::seconds(10))) == ppipe::wait_status::ready);
    ppipe::payload out;
    for (const ppipe::device_tensor& t : dev) {
      out.emplace_back(t.shape());
      ppipe::cuda::check(cudaMemcpy(out.back().byte_data(), t.byte_data(), t.bytes(), cudaMemcpyDeviceToHost), "download");
    }
    return out;
  }
  ~on_device() {
    for (void* p : held) d->release(p, s);
    static_cast<void>(d->synchronize(s, ppipe::deadline_after(std::chrono::seconds(10))));
  }
};

ppipe::payload values(std::int64_t rows, std::int64_t cols, float salt) {
  ppipe::payload p{ppipe::host_tensor(ppipe::shape{rows, cols})};
  for (std::size_t i = 0; i < p[0].size(); ++i) p[0][i] = std::sin(0.37f * static_cast<float>(i) + salt);
  return p;
}

void close(std::span<const float> got, std::span<const float> want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    CHECK(got[i] == Approx(want[i]).epsilon(1e-5).margin(1e-6));
  }
}

}  // namespace

TEST_CASE("cuda::linear computes what layers::linear computes, forward, backward and sgd", "[cuda][gpu]") {
  if (!have_gpu()) {
    WARN("SKIPPED: no CUDA device");
    return;
  }
  ppipe::cuda::device d;
  d.bind();
  ppipe::device_context<ppipe::cuda::device> dc;
  dc.device = &d;
  dc.stream = d.create_stream("test compute");
  ppipe::basic_layer_context<ppipe::cuda::device> ctx;
  ctx.device = &dc;
  on_device mem{&d, dc.stream, {}};

  ppipe::cuda::linear gpu(5, 4, 7);
  ppipe::layers::linear cpu(5, 4, 7);
  gpu.materialize(ctx);
  const ppipe::payload x = values(3, 5, 0.1f);
  const ppipe::payload g = values(3, 4, 0.7f);

  ppipe::payload y{ppipe::host_tensor(ppipe::shape{3, 4})};
  cpu.forward(ppipe::layer_context{}, x, y);
  auto dx = mem.upload(x);
  auto dy = mem.upload(ppipe::payload{ppipe::host_tensor(ppipe::shape{3, 4})});
  gpu.forward(ctx, dx, dy);
  const ppipe::payload got_y = mem.download(dy);
  close(got_y[0].values(), y[0].values());

  ppipe::payload gin{ppipe::host_tensor(ppipe::shape{3, 5})};
  cpu.backward(ppipe::layer_context{}, x, y, g, gin);
  auto dg = mem.upload(g);
  auto dgin = mem.upload(ppipe::payload{ppipe::host_tensor(ppipe::shape{3, 5})});
  gpu.backward(ctx, dx, dy, dg, dgin);
  close(mem.download(dgin)[0].values(), gin[0].values());

  const float lr = 0.1f;
  gpu.sgd(dc, lr);
  REQUIRE(d.synchronize(dc.stream, ppipe::deadline_after(std::chrono::seconds(10))) == ppipe::wait_status::ready);
  std::vector<float> want;
  for (std::size_t i = 0; i < cpu.weight().size(); ++i) want.push_back(cpu.weight()[i] - lr * cpu.grad_weight()[i]);
  for (std::size_t i = 0; i < cpu.bias().size(); ++i) want.push_back(cpu.bias()[i] - lr * cpu.grad_bias()[i]);
  close(gpu.download(), want);
}
