#pragma once
/// @file
/// @brief The NCCL backend (link ppipe::nccl, which brings ppipe::cuda): ppipe::nccl::transport and
/// ppipe::nccl::backend, one pipeline rank per process over an NCCL communicator, with a control
/// transport of the caller's (ppipe::mpi::transport, from <ppipe/mpi.hpp>). Opt-in:
/// <ppipe/ppipe.hpp> never includes NCCL headers.

#include <ppipe/config.hpp>
#include <ppipe/error.hpp>
#include <ppipe/version.hpp>

#include <ppipe/cuda.hpp>

#include <ppipe/backend/nccl/backend.hpp>
#include <ppipe/backend/nccl/error.hpp>
#include <ppipe/backend/nccl/transport.hpp>
