#pragma once
/// @file
/// @brief The MPI backend (link ppipe::mpi): pipelines whose ranks are MPI processes. Opt-in:
/// <ppipe/ppipe.hpp> never includes <mpi.h>.

#include <ppipe/config.hpp>
#include <ppipe/error.hpp>
#include <ppipe/version.hpp>

#include <ppipe/backend/mpi/error.hpp>
#include <ppipe/backend/mpi/session.hpp>
#include <ppipe/backend/mpi/transport.hpp>
#include <ppipe/ppipe.hpp>

namespace ppipe::mpi {

/// @brief The MPI backend: host tensors and inline execution, one pipeline rank per process, payloads
/// over ppipe::mpi::transport.
using backend = host_backend_over<transport>;

/// @brief The SPMD pipeline: every process builds it with the same arguments and a transport over
/// its communicator, holds only its own rank's stages, and gets the same results from every call.
template <class Model, schedule_policy Schedule = schedules::one_f_one_b, partitioner Partitioner = partitioners::balanced>
using pipeline = ppipe::pipeline<Model, Schedule, Partitioner, backend>;

}  // namespace ppipe::mpi
