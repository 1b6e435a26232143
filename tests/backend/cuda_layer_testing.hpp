#pragma once
// What the CUDA kit's layer tests share: one stage's context on GPU 0, host payloads copied to
// and from the GPU, test values, and the comparison to rounding with a CPU reference.

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <cuda_runtime_api.h>

#include <ppipe/cuda.hpp>

#include "catch.hpp"

namespace cuda_testing {

inline bool have_gpu() { return ppipe::cuda::device_count() > 0; }

// A stage's device context on GPU 0, and device copies of host payloads, freed with it.
class gpu_stage {
 public:
  gpu_stage() {
    d.bind();
    dc.device = &d;
    dc.stream = d.create_stream("test compute");
    ctx.device = &dc;
  }
  ~gpu_stage() {
    for (void* p : held_) d.release(p, dc.stream);
    static_cast<void>(d.synchronize(dc.stream, ppipe::deadline_after(std::chrono::seconds(10))));
  }
  gpu_stage(const gpu_stage&) = delete;
  gpu_stage& operator=(const gpu_stage&) = delete;

  ppipe::basic_payload<ppipe::device_tensor> upload(const ppipe::payload& host) {
    ppipe::basic_payload<ppipe::device_tensor> out;
    for (const ppipe::host_tensor& t : host) {
      auto* p = static_cast<std::byte*>(d.allocate(t.bytes(), dc.stream));
      held_.push_back(p);
      ppipe::cuda::check(cudaMemcpyAsync(p, t.byte_data(), t.bytes(), cudaMemcpyHostToDevice, dc.stream.handle()),
                         "upload");
      out.emplace_back(t.shape(), p);
    }
    return out;
  }
  // Zeroed device tensors of these shapes.
  ppipe::basic_payload<ppipe::device_tensor> zeros(const std::vector<ppipe::shape>& shapes) {
    ppipe::payload host;
    for (const ppipe::shape& s : shapes) host.emplace_back(s);
    return upload(host);
  }
  ppipe::payload download(const ppipe::basic_payload<ppipe::device_tensor>& dev) {
    sync();
    ppipe::payload out;
    for (const ppipe::device_tensor& t : dev) {
      out.emplace_back(t.shape());
      ppipe::cuda::check(cudaMemcpy(out.back().byte_data(), t.byte_data(), t.bytes(), cudaMemcpyDeviceToHost),
                         "download");
    }
    return out;
  }
  void sync() {
    REQUIRE(d.synchronize(dc.stream, ppipe::deadline_after(std::chrono::seconds(10))) == ppipe::wait_status::ready);
  }

  ppipe::cuda::device d;
  ppipe::device_context<ppipe::cuda::device> dc;
  ppipe::basic_layer_context<ppipe::cuda::device> ctx;

 private:
  std::vector<void*> held_;
};

inline ppipe::payload values(std::int64_t rows, std::int64_t cols, float salt) {
  ppipe::payload p{ppipe::host_tensor(ppipe::shape{rows, cols})};
  for (std::size_t i = 0; i < p[0].size(); ++i) p[0][i] = std::sin(0.37f * static_cast<float>(i) + salt);
  return p;
}

// `f32` rounded to bf16, element by element, as a bf16 tensor.
inline ppipe::payload to_bf16(const ppipe::payload& f32) {
  ppipe::payload out;
  for (const ppipe::host_tensor& t : f32) {
    out.emplace_back(ppipe::shape(t.shape().dims(), ppipe::dtype::bf16));
    const std::span<const float> from = t.values();
    const std::span<ppipe::bfloat16> to = out.back().values<ppipe::bfloat16>();
    for (std::size_t i = 0; i < from.size(); ++i) to[i] = ppipe::bfloat16(from[i]);
  }
  return out;
}

// A bf16 tensor's values as floats (exact).
inline std::vector<float> floats(const ppipe::host_tensor& bf16) {
  std::vector<float> out;
  for (const ppipe::bfloat16 v : bf16.values<ppipe::bfloat16>()) out.push_back(static_cast<float>(v));
  return out;
}

// Equal to rounding: the GPU sums and rounds in orders of its own.
inline void close(std::span<const float> got, std::span<const float> want, double margin = 1e-6) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    CHECK(got[i] == Approx(want[i]).epsilon(1e-5).margin(margin));
  }
}

// Equal to bf16's rounding (8 bits of mantissa), with some slack for sums rounded once in bf16.
inline void close_bf16(std::span<const float> got, std::span<const float> want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    CHECK(got[i] == Approx(want[i]).epsilon(1e-2).margin(1e-2));
  }
}

}  // namespace cuda_testing
