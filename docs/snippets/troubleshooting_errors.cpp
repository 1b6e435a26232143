// troubleshooting_errors: the failures docs/troubleshooting.md shows, each one caught as a
// ppipe::error and printed: bad input, a layer that throws, a layer that stalls (the watchdog),
// too few microbatches (ppipe::advise), a split that fits no device, and a split by measured
// layer costs. The page's C++ blocks are copied from this file; it fails unless each case ends
// as the page says.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <ppipe/ppipe.hpp>

using ppipe::layer_context;
using ppipe::payload;
using ppipe::shape;

// What the next call of stage 1's forward on microbatch 0 does: nothing special, throw, or stall.
enum class trouble { none, throws, stalls };
std::atomic<trouble> next_trouble{trouble::none};

// y = x + 1, no weights.
struct add_one {
  std::vector<shape> output_shapes(const std::vector<shape>& in) const { return in; }
  void forward(const layer_context& ctx, const payload& in, payload& out) {
    if (ctx.stage == 1 && ctx.microbatch == 0) {
      const trouble t = next_trouble.exchange(trouble::none);
      if (t == trouble::throws) throw std::runtime_error("my kernel failed");
      if (t == trouble::stalls) std::this_thread::sleep_for(std::chrono::milliseconds(400));
    }
    for (std::size_t i = 0; i < in[0].size(); ++i) out[0][i] = in[0][i] + 1.0f;
  }
  void backward(const layer_context&, const payload&, const payload&, const payload& g, payload& g_in) {
    if (g_in.empty()) return;  // the model's first layer
    for (std::size_t i = 0; i < g[0].size(); ++i) g_in[0][i] = g[0][i];
  }
};

double mse(const payload& out, const payload& target, payload& grad, double scale) {
  double sum = 0.0;
  const auto n = static_cast<double>(out[0].size());
  for (std::size_t i = 0; i < out[0].size(); ++i) {
    const double d = static_cast<double>(out[0][i]) - static_cast<double>(target[0][i]);
    sum += d * d;
    grad[0][i] = static_cast<float>(scale * 2.0 * d / n);
  }
  return sum / n;
}

// Runs `f` and prints the ppipe::error it throws: its id, its message, and any nested exception.
// Returns the error's kind, or nothing when `f` succeeded.
template <class F>
std::optional<ppipe::errc> show(const char* what, F&& f) {
  std::cout << "--- " << what << "\n";
  try {
    f();
    std::cout << "(no error)\n";
    return std::nullopt;
  } catch (const ppipe::error& e) {
    std::cout << e.what() << "\n";
    if (e.code() == ppipe::errc::stage_failed) {
      try {
        std::rethrow_if_nested(e);  // the layer's own exception
      } catch (const std::exception& inner) {
        std::cout << "the layer threw: " << inner.what() << "\n";
      }
    }
    return e.code();
  }
}

int failures = 0;
void expect(std::optional<ppipe::errc> got, std::optional<ppipe::errc> want, const char* what) {
  if (got == want) return;
  std::cerr << "troubleshooting_errors: " << what << " ended as "
            << (got ? ppipe::to_id(*got) : "no error") << ", not as the page says\n";
  ++failures;
}

int main() {
  auto model = ppipe::layer_stack(add_one{}, add_one{}, add_one{}, add_one{});
  ppipe::pipeline_options options;
  options.ranks = 2;
  options.microbatches = 4;
  options.timeout = std::chrono::milliseconds(100);  // the watchdog: the longest any rank waits
  ppipe::pipeline<decltype(model)> pipe(model, options, mse);
  payload x{ppipe::host_tensor(shape{8, 2})};
  payload y{ppipe::host_tensor(shape{8, 2})};

  const auto bad = show("bad input", [&] { pipe.train_step(payload{ppipe::host_tensor(shape{2, 2})}, y); });
  const auto thrown = show("a layer that throws", [&] {
    next_trouble = trouble::throws;
    pipe.train_step(x, y);
  });
  const auto stalled = show("a layer that stalls", [&] {
    next_trouble = trouble::stalls;
    pipe.train_step(x, y);
  });
  const auto next = show("the next step", [&] { pipe.train_step(x, y); });
  expect(bad, ppipe::errc::invalid_argument, "bad input");
  expect(thrown, ppipe::errc::stage_failed, "a layer that throws");
  expect(stalled, ppipe::errc::timeout, "a layer that stalls");
  expect(next, std::nullopt, "the next step");

  // Too few microbatches: what the simulator and ppipe::advise say before anything runs.
  const ppipe::schedule plan = ppipe::make_schedule("1f1b", {4, 2, 1});
  const ppipe::simulation sim = ppipe::simulate(plan, ppipe::cost_model::uniform(1.0, 2.0));
  std::printf("bubble %.1f%% (textbook %.1f%%); m for a bubble under 20%%: %d\n", 100.0 * sim.bubble_fraction(),
              100.0 * ppipe::ideal_bubble_fraction(4, 2), ppipe::microbatches_for_bubble(4, 0.2));
  for (const std::string& advice : ppipe::advise(plan, sim)) std::cout << "advice: " << advice << "\n";

  // A split that fits no device: 32 layers of 0.4 GiB of weights on two 4 GiB devices.
  const auto oom = show("out of memory", [&] {
    const std::vector<ppipe::layer_cost> layers(32, ppipe::layer_cost{1.0, 2.0, 0.4, 0.35});
    const std::vector<ppipe::device_spec> devices{{1.0, 4.0, "gpu0"}, {1.0, 4.0, "gpu1"}};
    const ppipe::schedule two = ppipe::make_schedule("1f1b", {2, 8, 1});
    ppipe::plan_partition(ppipe::partitioners::heterogeneous{},
                          ppipe::partition_problem::for_schedule(two, layers, devices));
  });
  expect(oom, ppipe::errc::out_of_memory, "a split that fits no device");

  // Unbalanced stages: time the layers (here layer i does i + 1 units of work), then split by cost.
  volatile double sink = 0.0;
  const auto work = [&](int layer) {
    const int n = 100000 * (layer + 1);
    for (int i = 0; i < n; ++i) sink = sink + 1e-9 * i;
  };
  const std::vector<ppipe::layer_cost> costs = ppipe::profile_layers(8, work, work);
  const ppipe::schedule four = ppipe::make_schedule("1f1b", {4, 16, 1});
  const auto problem = ppipe::partition_problem::for_schedule(four, costs);
  const ppipe::partition_report even = ppipe::plan_partition(ppipe::partitioners::uniform{}, problem);
  const ppipe::partition_report split = ppipe::plan_partition(ppipe::partitioners::balanced{}, problem);
  std::cout << "uniform " << even.sizes() << ": step " << ppipe::predict(four, problem, even.split).step_time()
            << "; balanced " << split.sizes() << ": step " << ppipe::predict(four, problem, split.split).step_time()
            << "\n" << split.summary() << "\n";
  ppipe::pipeline_options balanced = options;
  balanced.split = split.split;  // or give each layer a cost() and let the pipeline split
  if (ppipe::predict(four, problem, split.split).step_time() > ppipe::predict(four, problem, even.split).step_time()) {
    std::cerr << "troubleshooting_errors: the balanced split is slower than the uniform one\n";
    ++failures;
  }
  return failures == 0 ? 0 : 1;
}
