#pragma once
/// @file
/// @brief The MPI backend (link ppipe::mpi): pipelines whose ranks are MPI processes. Opt-in:
/// <ppipe/ppipe.hpp> never includes <mpi.h>.

#include <ppipe/config.hpp>
#include <ppipe/error.hpp>
#include <ppipe/version.hpp>

#include <ppipe/backend/mpi/error.hpp>
#include <ppipe/backend/mpi/p2p_transport.hpp>
#include <ppipe/backend/mpi/session.hpp>
#include <ppipe/backend/mpi/transport.hpp>
#include <ppipe/ppipe.hpp>
#include <ppipe/runtime/cpu_stream_backend.hpp>

namespace ppipe::mpi {

/// @brief The MPI backend: host tensors and inline execution, one pipeline rank per process, payloads
/// over ppipe::mpi::transport.
using backend = host_backend_over<transport>;

/// @brief The SPMD pipeline: every process builds it with the same arguments and a transport over
/// its communicator, holds only its own rank's stages, and gets the same results from every call.
template <class Model, schedule_policy Schedule = schedules::one_f_one_b, partitioner Partitioner = partitioners::balanced>
using pipeline = ppipe::pipeline<Model, Schedule, Partitioner, backend>;

/// @brief The CPU-stream devices, with payloads between processes carried by p2p_transport.
struct cpu_p2p_config : default_cpu_stream_config {
  using transport_type = p2p_transport;  ///< Payloads between processes travel over MPI.
};

/// @brief The CPU model of the NCCL backend across processes: one pipeline rank per process, its
/// stages in a CPU device's memory, and every transfer an NCCL-like send or receive on the rank's
/// transfer stream, grouped as the schedule groups them, its bytes over MPI. Built, as every
/// distributed pipeline, with a transport:
/// @code
/// ppipe::pipeline<Model, Schedule, ppipe::partitioners::balanced, ppipe::mpi::cpu_p2p_backend>(
///     model, options, loss, hook, ppipe::mpi::p2p_transport(MPI_COMM_WORLD))
/// @endcode
using cpu_p2p_backend = cpu_stream_backend_with<cpu_p2p_config, device_tensor>;

static_assert(ppipe::backend<cpu_p2p_backend>);

}  // namespace ppipe::mpi
