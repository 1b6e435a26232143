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
