#pragma once
/// @file
/// @brief The CUDA backend (link ppipe::cuda). Opt-in: <ppipe/ppipe.hpp> never includes CUDA headers.

#include <ppipe/config.hpp>
#include <ppipe/error.hpp>
#include <ppipe/version.hpp>

#include <ppipe/backend/cuda/backend.hpp>
#include <ppipe/backend/cuda/cublas.hpp>
#include <ppipe/backend/cuda/cuda_device.hpp>
#include <ppipe/backend/cuda/device.hpp>
#include <ppipe/backend/cuda/error.hpp>
#include <ppipe/backend/cuda/linear.hpp>
