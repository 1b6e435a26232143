#pragma once
/// @file
/// @brief The MPI backend (link ppipe::mpi). Opt-in: <ppipe/ppipe.hpp> never includes <mpi.h>.

#include <ppipe/config.hpp>
#include <ppipe/error.hpp>
#include <ppipe/version.hpp>

#include <ppipe/backend/mpi/error.hpp>
