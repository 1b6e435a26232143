#pragma once
/// @file
/// @brief The CUDA backend and its whole layer kit, for translation units that nvcc compiles:
/// <ppipe/cuda.hpp> plus the layers whose kernels are ppipe's own (gelu, layer_norm, linear_bf16,
/// mlp_block, mse_loss).

#include <ppipe/cuda.hpp>

#include <ppipe/backend/cuda/gelu.cuh>
#include <ppipe/backend/cuda/kernels.cuh>
#include <ppipe/backend/cuda/layer_norm.cuh>
#include <ppipe/backend/cuda/linear_bf16.cuh>
#include <ppipe/backend/cuda/mlp_block.cuh>
#include <ppipe/backend/cuda/mse_loss.cuh>
