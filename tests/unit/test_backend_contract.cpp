// The backend contract (backend_contract.hpp) on the backends that run in one process: numerics,
// memory, failures and timeouts, each body instantiated once per backend fixture below.

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "ppipe/runtime/cpu_stream_backend.hpp"

#include "ppipe/pipeline/pipeline.hpp"
#include "toy_device.hpp"
#include "toy_enqueuing.hpp"
#include "toy_layers.hpp"

namespace contract {

/// Rank threads of this process over the in-process transport: any p.
struct host_fixture {
  static constexpr const char* name = "host";
  static bool can_run(int p) { return p >= 1; }
  static bool on_any_process(bool b) { return b; }
  template <class Schedule, class Model>
  static ppipe::pipeline<Model, Schedule> make(Model& model, ppipe::pipeline_options o, ppipe::loss_function<> loss = {},
                                               ppipe::optimizer_hook optimizer = {}) {
    return ppipe::pipeline<Model, Schedule>(model, std::move(o), std::move(loss), std::move(optimizer));
  }
};

/// Rank threads that enqueue onto CPU streams (workers ordered by events), with random delays
/// before every stream item and the race checker on: any p.
struct cpu_stream_fixture {
  struct shaken {
    static ppipe::cpu_device_options device_options(int rank) {
      ppipe::cpu_device_options o;
      o.seed = static_cast<std::uint64_t>(rank) + 17;
      o.max_delay = std::chrono::microseconds(100);
      return o;
    }
  };
  using backend = ppipe::cpu_stream_backend_with<shaken>;
  static constexpr const char* name = "cpu_stream";
  static bool can_run(int p) { return p >= 1; }
  static bool on_any_process(bool b) { return b; }
  template <class Schedule, class Model>
  static ppipe::pipeline<Model, Schedule, ppipe::partitioners::balanced, backend> make(
      Model& model, ppipe::pipeline_options o, ppipe::loss_function<> loss = {}, ppipe::optimizer_hook optimizer = {}) {
    return ppipe::pipeline<Model, Schedule, ppipe::partitioners::balanced, backend>(model, std::move(o), std::move(loss),
                                                                                   std::move(optimizer));
  }
};

// The same backends training toy::layered, the toy model's layers composed by ppipe::layer_stack:
// the typed composition passes the bodies the Model concept passes.
struct host_layers_fixture : host_fixture {
  static constexpr const char* name = "host, typed layers";
  using model_type = toy::layered;
};
struct cpu_stream_layers_fixture : cpu_stream_fixture {
  static constexpr const char* name = "cpu_stream, typed layers";
  using model_type = toy::layered;
};

// CPU streams whose layers enqueue their own work, as GPU layers launch kernels: the stage calls
// them on the rank's host thread, which is the CUDA backend's path.
struct cpu_stream_enqueuing_fixture : cpu_stream_fixture {
  static constexpr const char* name = "cpu_stream, layers that enqueue";
  using model_type = toy::enqueuing<toy::model>;
};

// A fixture of CPU streams whose stages hold device tensors, on `Backend`, its loss made from the
// host one by `Adapt` (toy_device.hpp): what the four fixtures below differ in.
template <class Backend, auto Adapt>
struct device_memory_fixture {
  using backend = Backend;
  using model_type = toy::on_device<toy::model>;
  static bool can_run(int p) { return p >= 1; }
  static bool on_any_process(bool b) { return b; }
  template <class Schedule, class Model>
  static ppipe::pipeline<Model, Schedule, ppipe::partitioners::balanced, backend> make(
      Model& model, ppipe::pipeline_options o, ppipe::loss_function<> loss = {}, ppipe::optimizer_hook optimizer = {}) {
    return ppipe::pipeline<Model, Schedule, ppipe::partitioners::balanced, backend>(
        model, std::move(o), Adapt(std::move(loss)), std::move(optimizer));
  }
};
struct shaken_one_device : cpu_stream_fixture::shaken {
  static constexpr bool one_device = true;
};
struct shaken_two_peers : cpu_stream_fixture::shaken {
  static constexpr int peer_devices = 2;
};
// Two devices that exchange events but not memory, whose host work may not wait: GPUs without
// peer access, as the CUDA backend sees them.
struct shaken_two_peers_without_access : shaken_two_peers {
  static constexpr bool peer_access = false;
  static ppipe::cpu_device_options device_options(int rank) {
    ppipe::cpu_device_options o = shaken::device_options(rank);
    o.host_work_may_wait = false;
    return o;
  }
};
// Each rank its own device, payloads carried by the CPU model of NCCL point-to-point on the send
// streams, and host work that may not wait (the transfers are the device's own work).
struct shaken_p2p : cpu_stream_fixture::shaken {
  using transport_type = ppipe::cpu_p2p_transport;
  static ppipe::cpu_device_options device_options(int rank) {
    ppipe::cpu_device_options o = shaken::device_options(rank);
    o.host_work_may_wait = false;
    return o;
  }
};
using per_rank_devices = ppipe::cpu_stream_backend_with<cpu_stream_fixture::shaken, ppipe::device_tensor>;
using p2p_devices = ppipe::cpu_stream_backend_with<shaken_p2p, ppipe::device_tensor>;
using one_device = ppipe::cpu_stream_backend_with<shaken_one_device, ppipe::device_tensor>;
using two_peers = ppipe::cpu_stream_backend_with<shaken_two_peers, ppipe::device_tensor>;
using two_peers_without_access = ppipe::cpu_stream_backend_with<shaken_two_peers_without_access, ppipe::device_tensor>;

// CPU streams with the stages' tensors in the device's memory (the CPU model of a GPU backend):
// the batch, the outputs, the loss's target and value and every transfer cross by copies in
// stream order, with poison on released memory and the race checker watching each copy.
struct cpu_device_memory_fixture : device_memory_fixture<per_rank_devices, &toy::device_loss> {
  static constexpr const char* name = "cpu_stream, device memory";
};
// The same fixture with layers and a loss that enqueue their own work, as GPU layers do.
template <class Backend>
struct enqueuing_device_memory_fixture : device_memory_fixture<Backend, &toy::enqueued_device_loss> {
  using model_type = toy::enqueuing<toy::on_device<toy::model>>;
  static constexpr bool loss_enqueues_work = true;
};
// Device memory, and layers and a loss that enqueue their own work: the CUDA backend's path.
struct cpu_device_memory_enqueuing_fixture : enqueuing_device_memory_fixture<per_rank_devices> {
  static constexpr const char* name = "cpu_stream, device memory, layers that enqueue";
};
// Every rank's streams on one device, as stages that share a GPU: payloads between ranks cross by
// copies on the device (the sender's event, the receiver's copy, the receipt the sender frees
// after), watched by the race checker across all ranks at once.
struct cpu_one_device_fixture : device_memory_fixture<one_device, &toy::device_loss> {
  static constexpr const char* name = "cpu_stream, one device for every rank";
};
// The same with layers and a loss that enqueue their own work: one GPU holding every stage.
struct cpu_one_device_enqueuing_fixture : enqueuing_device_memory_fixture<one_device> {
  static constexpr const char* name = "cpu_stream, one device for every rank, layers that enqueue";
};

// Ranks spread over two devices that are each other's peers, as stages on two GPUs of one
// process: neighbours on one device, and across the two, payloads cross by device copies with
// events of the other device, under one race checker. Layers and the loss enqueue their work.
struct cpu_two_peers_enqueuing_fixture : enqueuing_device_memory_fixture<two_peers> {
  static constexpr const char* name = "cpu_stream, two peer devices, layers that enqueue";
};
// The same on peers without access to each other's memory: payloads between the two devices go
// through staging host memory (a copy into another device's memory fails), and no host work
// waits (a receive by the transport would).
struct cpu_two_peers_without_access_fixture : enqueuing_device_memory_fixture<two_peers_without_access> {
  static constexpr const char* name = "cpu_stream, two peers without peer access, layers that enqueue";
};

// Transfers as NCCL makes them, modelled on CPU streams: each run of a rank's transfers one group
// on its send stream, matched in order per pair, a send held until its receive is posted. Layers
// and the loss enqueue their work: the NCCL backend's path.
struct cpu_p2p_enqueuing_fixture : enqueuing_device_memory_fixture<p2p_devices> {
  static constexpr const char* name = "cpu_stream, NCCL-model transfers, layers that enqueue";
};
// The same transfers between stages that hold host tensors, their layers enqueued by the stage.
struct cpu_p2p_host_tensors_fixture : cpu_stream_fixture {
  static constexpr const char* name = "cpu_stream, NCCL-model transfers, host tensors";
  using backend = ppipe::cpu_stream_backend_with<shaken_p2p>;
  template <class Schedule, class Model>
  static ppipe::pipeline<Model, Schedule, ppipe::partitioners::balanced, backend> make(
      Model& model, ppipe::pipeline_options o, ppipe::loss_function<> loss = {}, ppipe::optimizer_hook optimizer = {}) {
    return ppipe::pipeline<Model, Schedule, ppipe::partitioners::balanced, backend>(model, std::move(o), std::move(loss),
                                                                                   std::move(optimizer));
  }
};

}  // namespace contract

// One line per backend: a new backend's fixture goes here.
#define PPIPE_CONTRACT_BACKENDS                                                                  \
  contract::host_fixture, contract::cpu_stream_fixture, contract::host_layers_fixture, \
      contract::cpu_stream_layers_fixture, contract::cpu_stream_enqueuing_fixture,                    \
      contract::cpu_device_memory_fixture, contract::cpu_device_memory_enqueuing_fixture,            \
      contract::cpu_one_device_fixture, contract::cpu_one_device_enqueuing_fixture,                  \
      contract::cpu_two_peers_enqueuing_fixture, contract::cpu_two_peers_without_access_fixture,            \
      contract::cpu_p2p_enqueuing_fixture, contract::cpu_p2p_host_tensors_fixture

#include "backend_contract.hpp"

// Staged copies go through the device's staging host memory (page-locked on a GPU, so that no copy
// makes the host wait). A step's is given back when the next step starts: it never grows.
TEMPLATE_TEST_CASE("staging host memory: a step's is held until the next one, so it never grows", "[contract]",
                   contract::cpu_device_memory_fixture, contract::cpu_one_device_fixture,
                   contract::cpu_two_peers_enqueuing_fixture, contract::cpu_two_peers_without_access_fixture) {
  using F = TestType;
  for (const int p : {1, 2, 4}) {
    INFO(F::name << ": p=" << p);
    const int m = 2 * p;
    contract::model_t<F> piped(2 * p);
    auto pipe = F::template make<ppipe::schedules::one_f_one_b>(piped, contract::options(p, m), toy::loss);
    const auto x = toy::batch(2 * m + 1, 3, 0.0f);
    const auto y = toy::batch(2 * m + 1, 3, 1.0f);
    (void)pipe.train_step(x, y);
    std::vector<std::size_t> first;
    for (int r = 0; r < p; ++r) first.push_back(pipe.device_memory(r).host_bytes_in_use);
    CHECK(first.front() > 0);  // rank 0 copied the batch in through it
    for (int step = 0; step < 3; ++step) {
      (void)pipe.train_step(x, y);
      for (int r = 0; r < p; ++r) CHECK(pipe.device_memory(r).host_bytes_in_use == first[static_cast<std::size_t>(r)]);
    }
    (void)pipe.infer(x);  // its outputs come out through staging memory as well
    (void)pipe.train_step(x, y);
    for (int r = 0; r < p; ++r) CHECK(pipe.device_memory(r).host_bytes_in_use == first[static_cast<std::size_t>(r)]);
    // A failed step's copies may still have been in flight: its staging memory goes back at the
    // next step too.
    piped.set_fault({p > 1 ? 1 : 0, 1, true, std::chrono::milliseconds(0)});
    CHECK_THROWS_AS(pipe.train_step(x, y), ppipe::error);
    piped.set_fault({});
    piped.zero_grad();
    (void)pipe.train_step(x, y);
    for (int r = 0; r < p; ++r) CHECK(pipe.device_memory(r).host_bytes_in_use == first[static_cast<std::size_t>(r)]);
  }
}

// Device memory is the device pool's, not the host's: what a step allocates is back in the pool
// once it returns, and once it throws (the boxes a failed step dropped are freed when the stages
// let go of it), so a failing step cannot leak a GPU's memory.
TEMPLATE_TEST_CASE("device memory: a step, failed or not, leaves nothing allocated on any device", "[contract]",
                   contract::cpu_device_memory_fixture, contract::cpu_device_memory_enqueuing_fixture,
                   contract::cpu_one_device_fixture, contract::cpu_one_device_enqueuing_fixture,
                   contract::cpu_two_peers_enqueuing_fixture, contract::cpu_two_peers_without_access_fixture) {
  using F = TestType;
  for (const int p : {1, 2, 4}) {
    INFO(F::name << ": p=" << p);
    const int m = 2 * p;
    contract::model_t<F> piped(2 * p);
    auto pipe = F::template make<ppipe::schedules::one_f_one_b>(piped, contract::options(p, m), toy::loss);
    const auto x = toy::batch(2 * m, 3, 0.0f);
    const auto y = toy::batch(2 * m, 3, 1.0f);
    const auto nothing_in_use = [&] {
      for (int r = 0; r < p; ++r) {
        INFO("rank " << r);
        CHECK(pipe.device_memory(r).bytes_in_use == 0);
        CHECK(pipe.device_memory(r).peak_bytes_in_use > 0);
      }
    };
    (void)pipe.train_step(x, y);
    nothing_in_use();
    (void)pipe.infer(x);
    nothing_in_use();
    piped.set_fault({p > 1 ? 1 : 0, 1, true, std::chrono::milliseconds(0)});  // a backward, mid-step
    CHECK_THROWS_AS(pipe.train_step(x, y), ppipe::error);
    nothing_in_use();
    piped.set_fault({});
    piped.zero_grad();
    (void)pipe.train_step(x, y);
    nothing_in_use();
  }
}

// Steps captured into one graph and launched again (pipeline_options::capture_graphs) on ranks
// that share a device: the first step with new shapes runs as usual, the next is captured and run,
// the ones after are launched; every one trains bitwise as the unpipelined model does, with the
// hook's update between launches seen by the next one.
TEMPLATE_TEST_CASE("graphs: steps launched from a captured graph train bitwise", "[contract]",
                   contract::cpu_one_device_fixture, contract::cpu_one_device_enqueuing_fixture) {
  using F = TestType;
  using namespace ppipe::schedules;
  for (const int p : {1, 2, 4}) {
    const int m = p + 2;
    const int layers = 2 * p + 1;
    INFO(F::name << ": p=" << p);
    contract::model_t<F> piped(layers);
    contract::model_t<F> plain(layers);
    const float lr = 0.02f;
    ppipe::pipeline_options o = contract::options(p, m);
    o.capture_graphs = true;
    auto pipe = F::template make<one_f_one_b>(piped, o, toy::loss,
                                              [&](const ppipe::stage_info& s) { piped.sgd(s.first_layer, s.end_layer, lr); });
    for (int step = 0; step < 6; ++step) {
      INFO("step " << step);
      const std::int64_t rows = step < 3 ? 2 * m + 1 : 3 * m;  // new shapes from step 3: captured again
      const auto x = toy::batch(rows, 3, static_cast<float>(step));
      const auto y = toy::batch(rows, 3, 10.0f + static_cast<float>(step));
      const double got = pipe.train_step(x, y);
      const double want = reference::accumulate(plain, x, y, m, toy::loss);
      plain.sgd(0, layers, lr);
      REQUIRE(std::isfinite(want));
      CHECK(got == want);
      if (step == 1) {  // inference between launches runs as usual and keeps the graph
        CHECK(pipe.infer(x) == reference::forward(plain, x, 0, ppipe::pass_mode::inference).back());
      }
    }
    CHECK(pipe.graph_steps() == 4);  // steps 1, 2, 4 and 5
    contract::check_local_parameters(pipe, piped, plain);
    for (int r = 0; r < p; ++r) CHECK(pipe.device_memory(r).bytes_in_use == 0);
  }
}

TEST_CASE("graphs: asked of stages that cannot be captured, or of ranks on several devices, is refused") {
  ppipe::pipeline_options o = contract::options(2, 4);
  o.capture_graphs = true;
  toy::model host_model(4);
  CHECK_THROWS_WITH((ppipe::pipeline<toy::model>(host_model, o, toy::loss)),
                    Catch::Contains("capture_graphs is on, but these stages cannot be captured") &&
                        Catch::Contains("turn capture_graphs off"));
  contract::model_t<contract::cpu_two_peers_enqueuing_fixture> peers_model(4);
  auto pipe = contract::cpu_two_peers_enqueuing_fixture::make<ppipe::schedules::one_f_one_b>(peers_model, o, toy::loss);
  CHECK_THROWS_WITH(pipe.train_step(toy::batch(8, 3, 0.0f), toy::batch(8, 3, 1.0f)),
                    Catch::Contains("the ranks run on several devices"));
}

namespace {
// Trains step k (2m rows) on `pipe`; with `check`, also on `plain`, unpipelined, and compares.
template <class Pipe>
void graph_step(Pipe& pipe, toy::model& plain, int m, float lr, int k, bool check) {
  const auto x = toy::batch(2 * m, 3, static_cast<float>(k));
  const auto y = toy::batch(2 * m, 3, 10.0f + static_cast<float>(k));
  const double got = pipe.train_step(x, y);
  if (!check) return;
  const double want = reference::accumulate(plain, x, y, m, toy::loss);
  plain.sgd(0, plain.num_layers(), lr);
  CHECK(got == want);
}
}  // namespace

// A layer that throws inside a launched graph fails that step, naming the layer; the graph goes,
// and the steps after run as usual, are captured again and train bitwise.
TEST_CASE("graphs: a failure in a launched graph fails the step, and training goes on") {
  using F = contract::cpu_one_device_fixture;  // its layers run inside the graph's host work
  const int p = 2;
  const int m = 4;
  const int layers = 4;
  contract::model_t<F> piped(layers);
  contract::model_t<F> plain(layers);
  const float lr = 0.02f;
  ppipe::pipeline_options o = contract::options(p, m);
  o.capture_graphs = true;
  auto pipe = F::make<ppipe::schedules::one_f_one_b>(piped, o, toy::loss,
                                                      [&](const ppipe::stage_info& s) { piped.sgd(s.first_layer, s.end_layer, lr); });
  const auto step = [&](int k, bool check) { graph_step(pipe, plain, m, lr, k, check); };
  for (int k = 0; k < 3; ++k) step(k, true);
  REQUIRE(pipe.graph_steps() == 2);
  piped.set_fault({3, 1, false, std::chrono::milliseconds(0)});  // layer 3 (rank 1), microbatch 1
  // The graph's host work names what failed, as a step enqueued action by action does.
  CHECK_THROWS_WITH(step(3, false), Catch::Contains("rank 1 in 1F1") && Catch::Contains("injected fault in layer 3"));
  piped.set_fault({});
  piped.zero_grad();
  for (int k = 4; k < 8; ++k) step(k, true);
  CHECK(pipe.graph_steps() == 5);  // step 4 runs as usual, 5 is captured, 6 and 7 launched
  contract::check_local_parameters(pipe, piped, plain);
  for (int r = 0; r < p; ++r) CHECK(pipe.device_memory(r).bytes_in_use == 0);
}

namespace {
// Layers that enqueue their own work, one of which can be made to fail on the host while it is
// called (as a GPU layer that checks its arguments before it launches anything).
struct host_checked : toy::enqueuing<toy::on_device<toy::model>> {
  using enqueuing::enqueuing;
  int refuse_layer = -1;
  template <class Device, class Tensor>
  void forward(int layer, const ppipe::basic_layer_context<Device>& ctx, const ppipe::basic_payload<Tensor>& in,
               ppipe::basic_payload<Tensor>& out) {
    if (layer == refuse_layer) throw std::runtime_error("layer " + std::to_string(layer) + " refused its arguments");
    enqueuing::forward(layer, ctx, in, out);
  }
  using enqueuing::forward;
};
}  // namespace

// A layer that fails on the host while the step is being captured: the capture is discarded with
// its memory, the step fails naming the layer, and the steps after run as usual, are captured
// again and train bitwise. An optimizer hook slower than the end-of-step watchdog's slice does not
// trip over the capture's events.
TEST_CASE("graphs: a failure while capturing, and a slow hook") {
  const int p = 2;
  const int m = 4;
  const int layers = 4;
  host_checked piped(layers);
  toy::model plain(layers);
  const float lr = 0.02f;
  ppipe::pipeline_options o = contract::options(p, m);
  o.capture_graphs = true;
  ppipe::pipeline<host_checked, ppipe::schedules::one_f_one_b, ppipe::partitioners::balanced, contract::one_device> pipe(
      piped, o, toy::enqueued_device_loss(toy::loss),
      [&](const ppipe::basic_stage_info<ppipe::cpu_stream_device>& s) {
        // Work on the stage's stream that outlasts the watchdog's 20 ms slices, so the rank's
        // end-of-hook wait looks at what the step left it to watch.
        s.device->device->enqueue(s.device->stream, [] { std::this_thread::sleep_for(std::chrono::milliseconds(60)); },
                                  "a slow update");
        piped.sgd(s.first_layer, s.end_layer, lr);
      });
  const auto step = [&](int k, bool check) { graph_step(pipe, plain, m, lr, k, check); };
  step(0, true);
  piped.refuse_layer = 2;  // rank 1's first layer, as step 1 is captured
  CHECK_THROWS_WITH(step(1, false), Catch::Contains("layer 2 refused its arguments"));
  CHECK(pipe.graph_steps() == 0);
  piped.refuse_layer = -1;
  piped.zero_grad();
  for (int k = 2; k < 6; ++k) step(k, true);
  CHECK(pipe.graph_steps() == 3);  // step 2 runs as usual, 3 is captured, 4 and 5 launched
  CHECK(piped.a() == plain.a());
  CHECK(piped.b() == plain.b());
  for (int r = 0; r < p; ++r) CHECK(pipe.device_memory(r).bytes_in_use == 0);
}
