// The backend contract (backend_contract.hpp) over MPI: every process of the job (2 or 4 of them)
// runs the same bodies as the host backend, with p the job's size.

#include <chrono>
#include <utility>

#include <ppipe/mpi.hpp>

#include "toy_device.hpp"
#include "toy_enqueuing.hpp"
#include "toy_layers.hpp"
#include "world.hpp"

namespace contract {

/// One pipeline rank per MPI process over MPI_COMM_WORLD: p is the job's size.
struct mpi_fixture {
  static constexpr const char* name = "mpi";
  static bool can_run(int p) { return p == mpi_test::world_size(); }
  static bool on_any_process(bool b) {
    int mine = b ? 1 : 0;
    int any = 0;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    return any != 0;
  }
  template <class Schedule, class Model>
  static ppipe::mpi::pipeline<Model, Schedule> make(Model& model, ppipe::pipeline_options o,
                                                    ppipe::loss_function<> loss = {}, ppipe::optimizer_hook optimizer = {}) {
    // A timeout throws here rather than ending the job, so that every process reports it to
    // Catch2; inquiries are kept short because the timeout case stalls a rank on purpose.
    ppipe::mpi::transport_options net;
    net.on_timeout = ppipe::mpi::timeout_policy::throw_error;
    net.inquiry = std::chrono::milliseconds(200);
    return ppipe::mpi::pipeline<Model, Schedule>(model, std::move(o), std::move(loss), std::move(optimizer),
                                                 ppipe::mpi::transport(MPI_COMM_WORLD, MPI_COMM_NULL, net));
  }
};

// The same processes training toy::layered, the toy model's layers composed by ppipe::layer_stack.
struct mpi_layers_fixture : mpi_fixture {
  static constexpr const char* name = "mpi, typed layers";
  using model_type = toy::layered;
};

// One pipeline rank per process on CPU streams, its stages in the device's memory, and every
// transfer an NCCL-like send or receive on its transfer stream, grouped as the schedule groups
// them, over MPI: the NCCL backend's protocol without a GPU. Layers and the loss enqueue their work.
struct mpi_p2p_fixture {
  static constexpr const char* name = "mpi, NCCL-model transfers on CPU streams";
  using backend = ppipe::mpi::cpu_p2p_backend;
  using model_type = toy::enqueuing<toy::on_device<toy::model>>;
  static constexpr bool loss_enqueues_work = true;
  static bool can_run(int p) { return mpi_fixture::can_run(p); }
  static bool on_any_process(bool b) { return mpi_fixture::on_any_process(b); }
  template <class Schedule, class Model>
  static ppipe::pipeline<Model, Schedule, ppipe::partitioners::balanced, backend> make(
      Model& model, ppipe::pipeline_options o, ppipe::loss_function<> loss = {}, ppipe::optimizer_hook optimizer = {}) {
    ppipe::mpi::transport_options net;
    net.on_timeout = ppipe::mpi::timeout_policy::throw_error;
    net.inquiry = std::chrono::milliseconds(200);
    return ppipe::pipeline<Model, Schedule, ppipe::partitioners::balanced, backend>(
        model, std::move(o), toy::enqueued_device_loss(std::move(loss)), std::move(optimizer),
        ppipe::mpi::p2p_transport(MPI_COMM_WORLD, net));
  }
};

}  // namespace contract

// One line per backend: a new distributed backend's fixture goes here.
#define PPIPE_CONTRACT_BACKENDS contract::mpi_fixture, contract::mpi_layers_fixture, contract::mpi_p2p_fixture

#include "backend_contract.hpp"

// Data-parallel replicas, one body for each way a backend averages gradients: the MPI transport on
// the host; the MPI model of NCCL with layers that run as host work on the stream (the hook, on the
// stream, averages through the host); and with layers that enqueue their work, where the average
// is an all-reduce enqueued on the stage's stream before the hook's update, as NCCL's is.
namespace replicas {

ppipe::mpi::transport_options net_options() {
  ppipe::mpi::transport_options net;
  net.on_timeout = ppipe::mpi::timeout_policy::throw_error;
  return net;
}

struct host_mpi {
  static constexpr const char* name = "mpi";
  using backend = ppipe::mpi::backend;
  using model_type = toy::model;
  static ppipe::mpi::transport transport() { return ppipe::mpi::replicated(MPI_COMM_WORLD, 2, net_options()); }
  static ppipe::loss_function<> loss() { return toy::loss; }
};

struct p2p_host_tensors {
  static constexpr const char* name = "mpi, NCCL-model transfers on CPU streams, host tensors";
  using backend = ppipe::cpu_stream_backend_with<ppipe::mpi::cpu_p2p_config>;
  using model_type = toy::model;
  static ppipe::mpi::p2p_transport transport() {
    return ppipe::mpi::replicated<ppipe::mpi::p2p_transport>(MPI_COMM_WORLD, 2, net_options());
  }
  static ppipe::loss_function<> loss() { return toy::loss; }
};

struct p2p_enqueuing {
  static constexpr const char* name = "mpi, NCCL-model transfers on CPU streams, enqueuing layers";
  using backend = ppipe::mpi::cpu_p2p_backend;
  using model_type = toy::enqueuing<toy::on_device<toy::model>>;
  static ppipe::mpi::p2p_transport transport() {
    return ppipe::mpi::replicated<ppipe::mpi::p2p_transport>(MPI_COMM_WORLD, 2, net_options());
  }
  static auto loss() { return toy::enqueued_device_loss(toy::loss); }
};

}  // namespace replicas

// Two replicas of a 2-rank pipeline with v stages per rank (v = 2: each rank averages two stages,
// one after the other), against each replica's half of the batch on the host.
template <class F>
void replicas_train_as_one(int v) {
  using model_t = typename F::model_type;
  using device_t = typename F::backend::device_type;
  INFO(F::name << ", v=" << v);
  REQUIRE(mpi_test::world_size() == 4);
  const int layers = 4;
  const float lr = 0.05f;
  auto tr = F::transport();
  REQUIRE(tr.replicas() == 2);
  REQUIRE(tr.num_ranks() == 2);
  const int replica = tr.replica();
  CHECK(replica == mpi_test::world_rank() % 2);

  model_t model(layers);
  // Where layers enqueue their work, so does the update: it follows the all-reduce on the stream.
  ppipe::basic_optimizer_hook<device_t> hook = [&model, lr](const ppipe::basic_stage_info<device_t>& s) {
    if constexpr (ppipe::enqueues_own_work<model_t>) {
      s.device->device->enqueue(s.device->stream, [&model, s, lr] { model.sgd(s.first_layer, s.end_layer, lr); },
                                "the SGD update");
    } else {
      model.sgd(s.first_layer, s.end_layer, lr);
    }
  };
  ppipe::pipeline<model_t, ppipe::schedules::interleaved_1f1b, ppipe::partitioners::balanced, typename F::backend>
      net(model, contract::options(0, 4, v), F::loss(), std::move(hook), std::move(tr));
  REQUIRE(net.split().num_stages() == 2 * v);

  // The reference: each replica's half of the batch through a host pipeline, the gradients
  // averaged as (a + b) * 0.5 (an all-reduce of two values, then a scale by 1/2, bit for bit).
  toy::model a(layers);
  toy::model b(layers);
  ppipe::pipeline<toy::model, ppipe::schedules::interleaved_1f1b> host_a(a, contract::options(2, 4, v), toy::loss);
  ppipe::pipeline<toy::model, ppipe::schedules::interleaved_1f1b> host_b(b, contract::options(2, 4, v), toy::loss);
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    const ppipe::payload x = toy::batch(16, 3, static_cast<float>(step));
    const ppipe::payload y = toy::batch(16, 3, 10.0f + static_cast<float>(step));
    const ppipe::payload xa = ppipe::slice_rows(x, 0, 8);
    const ppipe::payload xb = ppipe::slice_rows(x, 8, 8);
    const ppipe::payload ya = ppipe::slice_rows(y, 0, 8);
    const ppipe::payload yb = ppipe::slice_rows(y, 8, 8);
    const double loss_a = host_a.train_step(xa, ya);
    const double loss_b = host_b.train_step(xb, yb);
    std::vector<float> other;
    b.for_each_parameter(0, layers, [&](ppipe::tensor_view, ppipe::tensor_view g) { other.push_back(g.as<float>()[0]); });
    std::size_t k = 0;
    a.for_each_parameter(0, layers, [&](ppipe::tensor_view, ppipe::tensor_view g) {
      g.as<float>()[0] = (g.as<float>()[0] + other[k++]) * 0.5f;
    });
    a.sgd(0, layers, lr);
    b = a;  // both replicas hold the same weights after the step

    const double got = net.train_step(replica == 0 ? xa : xb, replica == 0 ? ya : yb);
    CHECK(got == (replica == 0 ? loss_a : loss_b));
  }
  for (int s = 0; s < net.split().num_stages(); ++s) {
    if (!net.is_local(s)) continue;
    for (int l = net.split().first(s); l < net.split().end(s); ++l) {
      CHECK(model.a()[static_cast<std::size_t>(l)] == a.a()[static_cast<std::size_t>(l)]);
      CHECK(model.b()[static_cast<std::size_t>(l)] == a.b()[static_cast<std::size_t>(l)]);
    }
  }
}

TEMPLATE_TEST_CASE("two replicas of a 2-rank pipeline train as one on the global batch", "[replicas]",
                   replicas::host_mpi, replicas::p2p_host_tensors, replicas::p2p_enqueuing) {
  for (const int v : {1, 2}) replicas_train_as_one<TestType>(v);
}
