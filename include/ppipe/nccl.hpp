#pragma once
/// @file
/// @brief The NCCL backend (link ppipe::nccl, which brings ppipe::cuda). Opt-in: <ppipe/ppipe.hpp>
/// never includes NCCL headers.

#include <ppipe/config.hpp>
#include <ppipe/error.hpp>
#include <ppipe/version.hpp>

#include <ppipe/cuda.hpp>

#include <ppipe/backend/nccl/error.hpp>
