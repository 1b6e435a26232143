#pragma once
/// @file
/// @brief The CUDA backend (link ppipe::cuda). Opt-in: <ppipe/ppipe.hpp> never includes CUDA headers.
/// Plain C++: the kit's layers with kernels of their own are in <ppipe/cuda_kit.cuh>, for nvcc.

#include <ppipe/config.hpp>
#include <ppipe/error.hpp>
#include <ppipe/version.hpp>

#include <ppipe/backend/cuda/backend.hpp>
#include <ppipe/backend/cuda/cublas.hpp>
#include <ppipe/backend/cuda/cuda_device.hpp>
#include <ppipe/backend/cuda/device.hpp>
#include <ppipe/backend/cuda/error.hpp>
#include <ppipe/backend/cuda/linear.hpp>
#include <ppipe/backend/cuda/parameter.hpp>
#include <ppipe/backend/cuda/sgd.hpp>
