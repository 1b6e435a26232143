// The CPU layer kit on OpenBLAS (built with ppipe::blas), each case against its reference in the
// same run, the two interleaved within every iteration so that both see the same state of a shared
// machine:
//   linear/<rows>x<in>x<out>: the kit's linear layer, forward then backward (input and weight
//       gradients), against the three cblas_sgemm calls it makes, made directly: y = x W^T,
//       gx = gy W, and gw += gy^T x (beta 1, into an accumulator, as the layer adds each call's
//       weight gradient). Target: the layer within 10% of the direct calls (`layer_vs_sgemm`).
//       The layer does a little more than the products: it copies the bias into y first, and sums
//       the bias gradient.
//   mlp_step/one_stage: ppipe-train's model and batch trained on one stage (one rank thread,
//       m=16 microbatches of 32 rows, 1F1B), the kit on OpenBLAS against the kit's own loops, both
//       in this binary (the loops from layers_bench_loops.cpp, a translation unit built without
//       ppipe::blas). `loops_vs_blas` is the loops' step time over OpenBLAS's.
// OpenBLAS runs on one thread (the kit sets it so); the label names the kernels it chose for this
// CPU (openblas_get_corename; OPENBLAS_CORETYPE overrides the choice). Run:
//   build/release/benchmarks/ppipe_bench_layers --benchmark_repetitions=5
// (PPIPE_BENCHES=layers bash scripts/bench.sh records docs/benchmarks/layers.json).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <ppipe/layers/layers.hpp>
#include <ppipe/ppipe.hpp>

#include "support/mlp_step.hpp"

static_assert(ppipe::layers::uses_cblas, "layers_bench.cpp must be built with ppipe::blas");

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::vector<float> values(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = scale * (static_cast<float>((i * 7919) % 2001) / 1000.0f - 1.0f);
  return v;
}

std::string corename() {
  return openblas_get_corename();
}

void linear(benchmark::State& state) {
  const auto rows = static_cast<std::size_t>(state.range(0));
  const auto in = static_cast<std::size_t>(state.range(1));
  const auto out = static_cast<std::size_t>(state.range(2));
  const int block =
      static_cast<int>(state.range(3));  // calls per timed block: a few milliseconds or more
  const auto r = static_cast<int>(rows), i = static_cast<int>(in), o = static_cast<int>(out);

  ppipe::layers::linear layer(i, o, 1);
  const ppipe::layer_context ctx{};
  const ppipe::payload x{ppipe::host_tensor(ppipe::shape{r, i}, values(rows * in, 1.0f))};
  const ppipe::payload gy{ppipe::host_tensor(ppipe::shape{r, o}, values(rows * out, 0.01f))};
  ppipe::payload y{ppipe::host_tensor(ppipe::shape{r, o})};
  ppipe::payload gx{ppipe::host_tensor(ppipe::shape{r, i})};
  const float* w = layer.weight().data();
  std::vector<float> y2(rows * out), gx2(rows * in), accumulator(out * in, 0.0f);

  const auto layer_once = [&] {
    layer.forward(ctx, x, y);
    layer.backward(ctx, x, y, gy, gx);
  };
  const auto sgemm_once = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, o, i, 1.0f, x[0].data(), i, w, i, 0.0f,
                y2.data(), o);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, i, o, 1.0f, gy[0].data(), o, w, i,
                0.0f, gx2.data(), i);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o, i, r, 1.0f, gy[0].data(), o,
                x[0].data(), i, 1.0f, accumulator.data(), i);
  };
  layer_once();  // the first call sets OpenBLAS to one thread and sizes the layer's buffers
  sgemm_once();

  double layer_s = 0, sgemm_s = 0;
  const auto timed = [&](bool layer_block) {
    const auto t0 = clock_type::now();
    for (int k = 0; k < block; ++k) {
      if (layer_block) {
        layer_once();
      } else {
        sgemm_once();
      }
    }
    return seconds_since(t0);
  };
  bool layer_first = true;
  for (auto _ : state) {
    // The two blocks take turns at going first, so that neither gains from the cache the other
    // left. The accumulators are never reset: the additions cost the same whatever they hold,
    // and a reset would warm the cache for one block only.
    double layer_block = 0, direct = 0;
    if (layer_first) {
      layer_block = timed(true);
      direct = timed(false);
    } else {
      direct = timed(false);
      layer_block = timed(true);
    }
    layer_first = !layer_first;
    state.SetIterationTime(layer_block);
    layer_s += layer_block;
    sgemm_s += direct;
  }
  const double calls = static_cast<double>(state.iterations()) * block;
  const double flops =
      6.0 * static_cast<double>(rows) * static_cast<double>(in) * static_cast<double>(out);
  state.counters["layer_ms"] = layer_s / calls * 1e3;
  state.counters["sgemm_ms"] = sgemm_s / calls * 1e3;
  state.counters["layer_vs_sgemm"] = layer_s / sgemm_s;
  state.counters["layer_gflops"] = flops * calls / layer_s / 1e9;
  state.counters["sgemm_gflops"] = flops * calls / sgemm_s / 1e9;
  state.SetLabel("OpenBLAS " + corename() + ", 1 thread");
}

void mlp_step(benchmark::State& state) {
  auto blas = std::make_unique<bench::mlp_step_on_one_stage>();
  const std::unique_ptr<bench::mlp_step> loops = bench::make_mlp_step_loops();
  double blas_s = 0, loops_s = 0;
  bool blas_first = true;
  const auto timed = [](bench::mlp_step& s) {
    const auto t0 = clock_type::now();
    benchmark::DoNotOptimize(s.step());
    return seconds_since(t0);
  };
  for (auto _ : state) {
    double b = 0, l = 0;
    if (blas_first) {  // the two take turns at going first
      b = timed(*blas);
      l = timed(*loops);
    } else {
      l = timed(*loops);
      b = timed(*blas);
    }
    blas_first = !blas_first;
    state.SetIterationTime(b);
    blas_s += b;
    loops_s += l;
  }
  const double steps = static_cast<double>(state.iterations());
  const double rows = static_cast<double>(bench::mlp_step_on_one_stage::rows);
  state.counters["blas_ms"] = blas_s / steps * 1e3;
  state.counters["loops_ms"] = loops_s / steps * 1e3;
  state.counters["loops_vs_blas"] = loops_s / blas_s;
  state.counters["blas_samples_per_s"] = rows * steps / blas_s;
  state.counters["loops_samples_per_s"] = rows * steps / loops_s;
  state.SetLabel("OpenBLAS " + corename() + ", 1 thread; 1 rank thread");
}

}  // namespace

// About 1 to 3 s per repetition on the project's 2-core VM.
BENCHMARK(linear)
    ->ArgNames({"rows", "in", "out", "block"})
    ->Args({512, 256, 256, 20})
    ->Args({64, 4096, 4096, 1})
    ->Iterations(9)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(mlp_step)
    ->Name("mlp_step/one_stage")
    ->Iterations(20)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
