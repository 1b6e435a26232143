// The backend contract (backend_contract.hpp) on the backends that run in one process: numerics,
// memory, failures and timeouts, each body instantiated once per backend fixture below.

#include <chrono>
#include <cstdint>
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
using per_rank_devices = ppipe::cpu_stream_backend_with<cpu_stream_fixture::shaken, ppipe::device_tensor>;
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

}  // namespace contract

// One line per backend: a new backend's fixture goes here.
#define PPIPE_CONTRACT_BACKENDS                                                                  \
  contract::host_fixture, contract::cpu_stream_fixture, contract::host_layers_fixture, \
      contract::cpu_stream_layers_fixture, contract::cpu_stream_enqueuing_fixture,                    \
      contract::cpu_device_memory_fixture, contract::cpu_device_memory_enqueuing_fixture,            \
      contract::cpu_one_device_fixture, contract::cpu_one_device_enqueuing_fixture,                  \
      contract::cpu_two_peers_enqueuing_fixture, contract::cpu_two_peers_without_access_fixture

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
