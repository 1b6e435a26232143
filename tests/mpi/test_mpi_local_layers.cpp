// Each process builds only its own layers: an MLP made deferred is materialized stage by stage,
// so a process's memory grows by its own layers' weights, not the model's. The test sets a
// limit of 60% of the whole model per process, which a process holding every weight
// would break, checks each process's growth against what its split predicts (so it falls with
// p), and then checks the losses and this process's weights bit for bit against the host
// backend's run of the same model, built whole after the measurement.

#include <fstream>
#include <sstream>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <string>
#include <vector>

#include <ppipe/layers/layers.hpp>
#include <ppipe/mpi.hpp>

#include "catch.hpp"
#include "world.hpp"

namespace {

using ppipe::layers::sequential;
using mpi_test::world_size;

// Six linears of 1024 x 1024 between two small ones (ReLUs between): 4 MB of weights each, about
// 12.6 MB with their gradient and, on the kit's loops, the buffer a backward sums into; 76 MB in all.
const std::vector<int> widths{64, 1024, 1024, 1024, 1024, 1024, 1024, 1024, 64};
constexpr std::uint64_t seed = 2024;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;  // the sanitizer's allocator and shadow memory blur the figures
#else
constexpr bool sanitized = false;
#endif

// The most resident memory this process has had since reset_peak(), in bytes (Linux's VmHWM).
double peak_resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      double kb = 0.0;
      fields >> kb;
      return kb * 1024.0;
    }
  }
  return 0.0;
}
// Sets the peak to the present (writing 5 to clear_refs, Linux 4.0 and later); false if refused.
bool reset_peak() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  return static_cast<bool>(clear.flush());
}

ppipe::payload batch(std::int64_t rows, std::int64_t cols, float salt) {
  ppipe::payload p{ppipe::host_tensor(ppipe::shape{rows, cols})};
  for (std::size_t i = 0; i < p[0].size(); ++i) p[0][i] = 0.001f * static_cast<float>(i % 97) + salt;
  return p;
}

std::vector<std::vector<float>> copy(const std::vector<std::span<const float>>& spans) {
  std::vector<std::vector<float>> out;
  for (const auto& s : spans) out.emplace_back(s.begin(), s.end());
  return out;
}

}  // namespace

TEST_CASE("mpi: each process materializes only its own stages' layers, and trains the host backend's bits") {
  const int p = world_size();
  const int m = 4;
  const int steps = 2;
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  const ppipe::layers::sgd sgd(0.01f);

  double whole = 0.0;  // the model's parameter memory, as the partitioner counts it
  {
    const sequential spec = sequential::mlp(widths, seed, ppipe::layers::activation_kind::relu, ppipe::layers::deferred);
    for (int l = 0; l < spec.num_layers(); ++l) whole += spec.cost(l).parameter_memory;
  }
  const double limit = 0.6 * whole;

  // The SPMD pipeline, measured from before the model exists to the end of its steps.
  std::vector<double> losses;
  std::vector<std::vector<float>> mine;  // this process's layers' weights after the steps
  int first = 0;
  int end = 0;
  double predicted = 0.0;
  double grown = 0.0;
  {
#if defined(__GLIBC__)
    // Every weight block a fresh mapping: with its default, glibc raises the threshold after a
    // free and may serve a block from pages already resident, which the peak would not see.
    mallopt(M_MMAP_THRESHOLD, 64 * 1024);
#endif
    const bool resettable = reset_peak() && !sanitized;
    const double before = peak_resident_bytes();
    sequential model = sequential::mlp(widths, seed, ppipe::layers::activation_kind::relu, ppipe::layers::deferred);
    ppipe::mpi::pipeline<sequential> pipe(model, o, ppipe::layers::mse_loss{},
                                          [&](const ppipe::stage_info& s) { sgd.step(model, s); },
                                          ppipe::mpi::transport(MPI_COMM_WORLD));
    for (int k = 0; k < steps; ++k) {
      losses.push_back(pipe.train_step(batch(8, widths.front(), 0.1f * static_cast<float>(k)), batch(8, widths.back(), 0.5f)));
    }
    grown = peak_resident_bytes() - before;
    for (int s = 0; s < pipe.split().num_stages(); ++s) {
      if (!pipe.is_local(s)) continue;
      first = pipe.split().first(s);
      end = pipe.split().end(s);
      for (int l = first; l < end; ++l) predicted += model.cost(l).parameter_memory;
    }
    mine = copy(model.parameters(first, end));
    INFO("process of stages [" << first << ", " << end << ") of " << p << ": grew " << grown / 1e6 << " MB, its layers "
                               << predicted / 1e6 << " MB, the whole model " << whole / 1e6 << " MB");
    if (resettable) {
      CHECK(grown < limit);
      // Its own layers, and not much else: activations and buffers of 8 rows are small.
      CHECK(grown > 0.8 * predicted);
      CHECK(grown < 1.2 * predicted + 8e6);
    } else {
      WARN("SKIPPED: memory not measured (a sanitizer's allocator, or /proc/self/clear_refs refused a reset)");
    }
  }

  // The host backend's run of the whole model, eager, after the measurement.
  sequential whole_model = sequential::mlp(widths, seed);
  ppipe::pipeline<sequential> host(whole_model, o, ppipe::layers::mse_loss{},
                                   [&](const ppipe::stage_info& s) { sgd.step(whole_model, s); });
  for (int k = 0; k < steps; ++k) {
    INFO("step " << k);
    CHECK(host.train_step(batch(8, widths.front(), 0.1f * static_cast<float>(k)), batch(8, widths.back(), 0.5f)) == losses[static_cast<std::size_t>(k)]);
  }
  const bool same_weights = copy(whole_model.parameters(first, end)) == mine;  // (not printed: megabytes)
  CHECK(same_weights);
}
