// The CPU-stream backend beyond the backend contract (which runs numerics, memory, failures and
// timeouts on it too): several seeds of random stream delays, the layer kit's split backward, and
// a timeout report that says what every stream was doing.

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <vector>
#include <cmath>
#include <cstdint>
#include <string>
#include <thread>

#include "ppipe/layers/layers.hpp"
#include "ppipe/runtime/cpu_stream_backend.hpp"
#include "ppipe/pipeline/pipeline.hpp"
#include "ppipe/schedule/gpipe.hpp"
#include "ppipe/schedule/interleaved_1f1b.hpp"
#include "ppipe/schedule/zero_bubble.hpp"
#include "reference.hpp"
#include "toy_model.hpp"

namespace {

ppipe::pipeline_options options(int p, int m, int v = 1) {
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.virtual_stages = v;
  o.timeout = std::chrono::seconds(20);
  return o;
}

// Devices whose streams wait a random time (seeded) before every item: orders that only hold by
// luck fall apart.
template <int Seed>
struct shaken {
  static ppipe::cpu_device_options device_options(int rank) {
    ppipe::cpu_device_options o;
    o.seed = static_cast<std::uint64_t>(Seed * 100 + rank);
    o.max_delay = std::chrono::microseconds(200);
    return o;
  }
};

template <class S, class Backend = ppipe::cpu_stream_backend>
void check_bitwise(int p, int m, int v, std::int64_t rows, int layers) {
  toy::model piped(layers);
  toy::model plain(layers);
  const float lr = 0.02f;
  ppipe::pipeline<toy::model, S, ppipe::partitioners::balanced, Backend> pipe(
      piped, options(p, m, v), toy::loss, [&](const ppipe::stage_info& s) { piped.sgd(s.first_layer, s.end_layer, lr); });
  for (int step = 0; step < 3; ++step) {
    const auto x = toy::batch(rows, 3, static_cast<float>(step));
    const auto y = toy::batch(rows, 3, 10.0f + static_cast<float>(step));
    const double got = pipe.train_step(x, y);
    const double want = reference::accumulate(plain, x, y, m, toy::loss);
    plain.sgd(0, layers, lr);
    INFO(S::name << " p=" << p << " m=" << m << " v=" << v << " rows=" << rows << " step " << step);
    REQUIRE(std::isfinite(want));
    CHECK(got == want);
    CHECK(piped.a() == plain.a());
    CHECK(piped.b() == plain.b());
  }
  for (int s = 0; s < pipe.split().num_stages(); ++s) CHECK(pipe.memory(s).live_microbatches == 0);
}

}  // namespace

TEST_CASE("cpu streams: with random stream delays the bits stay the same") {
  check_bitwise<ppipe::schedules::one_f_one_b, ppipe::cpu_stream_backend_with<shaken<1>>>(3, 6, 1, 12, 6);
  check_bitwise<ppipe::schedules::interleaved_1f1b, ppipe::cpu_stream_backend_with<shaken<2>>>(2, 4, 2, 8, 8);
  check_bitwise<ppipe::schedules::gpipe, ppipe::cpu_stream_backend_with<shaken<3>>>(4, 4, 1, 8, 4);
}

TEST_CASE("cpu streams: a trace puts every rank on one clock") {
  // Each rank times its events from an event it records first, which its compute stream reaches
  // a wake-up (and here a random delay) after the host recorded it. Were that host time the
  // origin, a stage's forward could appear to start before the previous stage's ended.
  toy::model model(4);
  auto o = options(4, 8);
  o.record_trace = true;
  ppipe::pipeline<toy::model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced,
                  ppipe::cpu_stream_backend_with<shaken<4>>>
      pipe(model, o, toy::loss);
  const auto x = toy::batch(8, 3, 1.0f);
  const auto y = toy::batch(8, 3, 2.0f);
  for (int step = 0; step < 3; ++step) {
    static_cast<void>(pipe.train_step(x, y));
    const ppipe::run_trace& t = pipe.last_trace();
    const auto find = [&](ppipe::action_kind kind, int stage, int mb) {
      for (const auto& list : t.ranks) {
        for (const auto& e : list) {
          if (e.act.kind == kind && e.act.stage == stage && e.act.microbatch == mb) return e;
        }
      }
      FAIL("no " << ppipe::name(kind) << " of stage " << stage << ", microbatch " << mb << " in the trace");
      return ppipe::trace_event{};
    };
    for (int mb = 0; mb < 8; ++mb) {
      for (int st = 1; st < 4; ++st) {
        INFO("step " << step << ", stage " << st << ", microbatch " << mb);
        CHECK(find(ppipe::action_kind::forward, st, mb).start >= find(ppipe::action_kind::forward, st - 1, mb).end);
        CHECK(find(ppipe::action_kind::backward, st - 1, mb).start >= find(ppipe::action_kind::backward, st, mb).end);
      }
    }
  }
}

namespace {

std::vector<float> parameters(ppipe::layers::sequential& model) {
  std::vector<float> all;
  model.for_each_parameter(0, model.num_layers(), [&](ppipe::tensor_view value, ppipe::tensor_view) {
    const auto v = value.as<float>();
    all.insert(all.end(), v.begin(), v.end());
  });
  return all;
}

}  // namespace

TEST_CASE("cpu streams: a stalled kernel times out, naming the waiting rank, its peer and the action") {
  // Rank 1 stalls in its first forward; rank 0's receive stream, waiting for that microbatch's
  // gradient, is the one that times out.
  toy::model model(4);
  toy::fault f;
  f.layer = 2;
  f.microbatch = 0;
  f.stall = std::chrono::milliseconds(600);
  model.set_fault(f);
  ppipe::pipeline_options o = options(2, 2);
  o.timeout = std::chrono::milliseconds(150);
  ppipe::pipeline<toy::model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, ppipe::cpu_stream_backend> pipe(
      model, o, toy::loss);
  try {
    pipe.train_step(toy::batch(4, 3, 0.0f), toy::batch(4, 3, 1.0f));
    FAIL("the step did not time out");
  } catch (const ppipe::error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(e.id() == "ppipe.timeout");
    CHECK(what.find("rank 0 waited 150 ms in 0B0 (backward of stage 0, microbatch 0) for 0RECV_B0") != std::string::npos);
    CHECK(what.find("from rank 1 (on its receive stream)") != std::string::npos);
    CHECK(what.find("stream 'rank 1 compute' runs 'forward of layer 2, microbatch 0 (stage 1)'") != std::string::npos);
  }
}

TEST_CASE("cpu streams: the layer kit's split backward (ZB-H1, ZB-V) gives the host backend's bits") {
  const auto check = [](auto tag, int p, int m, int v, bool recompute = false) {
    using S = decltype(tag);
    const ppipe::layers::sgd opt(0.05f);
    auto here = ppipe::layers::sequential::mlp({6, 16, 16, 16, 16, 3}, 7);
    auto there = ppipe::layers::sequential::mlp({6, 16, 16, 16, 16, 3}, 7);
    ppipe::pipeline_options o = options(p, m, v);
    if (recompute) o.recompute = {ppipe::recompute_policy::full};
    ppipe::pipeline<ppipe::layers::sequential, S, ppipe::partitioners::balanced, ppipe::cpu_stream_backend_with<shaken<4>>>
        streams(here, o, ppipe::layers::mse_loss{}, [&](const ppipe::stage_info& s) { opt.step(here, s); });
    ppipe::pipeline<ppipe::layers::sequential, S> host(there, o, ppipe::layers::mse_loss{},
                                                       [&](const ppipe::stage_info& s) { opt.step(there, s); });
    for (int step = 0; step < 3; ++step) {
      const auto x = toy::batch(2 * m, 6, static_cast<float>(step));
      ppipe::payload y{ppipe::host_tensor(ppipe::shape{2 * m, 3})};
      for (std::size_t i = 0; i < y[0].size(); ++i) y[0][i] = 0.1f * static_cast<float>(i % 7);
      const ppipe::payload x0{x[0]};
      INFO(S::name << (recompute ? ", recompute" : "") << " step " << step);
      CHECK(streams.train_step(x0, y) == host.train_step(x0, y));
    }
    CHECK(parameters(here) == parameters(there));
  };
  check(ppipe::schedules::zb_h1{}, 2, 4, 1);
  check(ppipe::schedules::zb_v{}, 2, 4, 2);
  check(ppipe::schedules::dualpipe_v{}, 2, 4, 2);
  check(ppipe::schedules::one_f_one_b{}, 3, 6, 1);
  // With recomputation: R on the streams, before I, the activations kept until the deferred W.
  check(ppipe::schedules::zb_h1{}, 2, 4, 1, true);
  check(ppipe::schedules::zb_v{}, 2, 4, 2, true);
}

TEST_CASE("cpu streams: the optimizer hook runs on its stage's compute stream, told its device context") {
  toy::model model(4);
  std::mutex mutex;
  std::vector<std::string> seen;
  ppipe::pipeline<toy::model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, ppipe::cpu_stream_backend> pipe(
      model, options(2, 2), toy::loss, [&](const ppipe::basic_stage_info<ppipe::cpu_stream_device>& info) {
        // (No Catch2 assertion here: this runs on a stream's thread.)
        const std::lock_guard lock(mutex);
        // The stream's status names the item running now: this hook, on the stage's compute stream.
        seen.push_back(info.device == nullptr ? "no device context" : info.device->device->status(info.device->stream));
      });
  pipe.train_step(toy::batch(4, 3, 0.0f), toy::batch(4, 3, 1.0f));
  REQUIRE(seen.size() == 2);
  std::sort(seen.begin(), seen.end());
  CHECK(seen[0].find("stream 'rank 0 compute' runs 'the optimizer hook'") != std::string::npos);
  CHECK(seen[1].find("stream 'rank 1 compute' runs 'the optimizer hook'") != std::string::npos);
}

namespace {

// Every call waits 25 ms: a step of many such kernels outlasts twice the timeout without any one
// wait coming near it.
struct slow_model {
  int num_layers() const { return 2; }
  std::vector<ppipe::shape> output_shapes(int, const std::vector<ppipe::shape>& in) const { return in; }
  void forward(int, const ppipe::layer_context&, const ppipe::payload& in, ppipe::payload& out) const {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    out[0] = in[0];
  }
  void backward(int, const ppipe::layer_context&, const ppipe::payload&, const ppipe::payload&, const ppipe::payload& g,
                ppipe::payload& grad_in) const {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    if (!grad_in.empty()) grad_in[0] = g[0];
  }
};

}  // namespace

TEST_CASE("cpu streams: a step longer than the timeout runs, as long as its streams make progress") {
  slow_model model;
  ppipe::pipeline_options o = options(2, 8);
  o.timeout = std::chrono::milliseconds(150);  // a rank's step: 16 kernels of 25 ms, and waits
  ppipe::pipeline<slow_model, ppipe::schedules::gpipe, ppipe::partitioners::balanced, ppipe::cpu_stream_backend> pipe(
      model, o, [](const ppipe::payload&, const ppipe::payload&, ppipe::payload&, double) { return 0.0; });
  const ppipe::payload x{ppipe::host_tensor(ppipe::shape{8, 2})};
  CHECK_NOTHROW(pipe.train_step(x, x));
  CHECK(pipe.last_trace().makespan() > 2 * 150'000.0);  // longer than the watchdog's limit
}

namespace {
// Each rank on a device of its own that shares nothing with the others, and whose host work may
// not wait, as GPUs in different processes: payloads would cross by the transport, in host work.
struct separate_gpu_like {
  static ppipe::cpu_device_options device_options(int rank) {
    ppipe::cpu_device_options o;
    o.seed = static_cast<std::uint64_t>(rank);
    o.host_work_may_wait = false;
    return o;
  }
};
}  // namespace

TEST_CASE("cpu streams: devices whose host work may not wait never carry payloads by the transport") {
  using backend = ppipe::cpu_stream_backend_with<separate_gpu_like>;
  toy::model model(4);
  ppipe::pipeline<toy::model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, backend> pipe(
      model, options(2, 4), toy::loss);
  const auto x = toy::batch(8, 3, 0.0f);
  const auto y = toy::batch(8, 3, 1.0f);
  const auto a = model.a();
  CHECK_THROWS_WITH(pipe.train_step(x, y), Catch::Contains("rank 0 and rank 1 pass payloads between stages 0 and 1") &&
                                                Catch::Contains("does not let host work wait") &&
                                                Catch::Contains("devices of one process (peers)"));
  CHECK(model.a() == a);  // refused before anything ran
  // One rank has no transfers to make: it runs.
  ppipe::pipeline<toy::model, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, backend> alone(
      model, options(1, 4), toy::loss);
  CHECK_NOTHROW(alone.train_step(x, y));
}
