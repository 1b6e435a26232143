#pragma once
/// @file
/// @brief The CPU layer kit, for examples and tests: linear, relu/tanh/gelu, layer normalization,
/// the mean squared error, a sequential model with an mlp() builder, plain SGD, a small
/// decoder-only transformer with a KV cache (a generative model) and its greedy sampler. It is not part of ppipe/ppipe.hpp; include
/// this header to use it.

#include "ppipe/layers/activation.hpp"
#include "ppipe/layers/layer_norm.hpp"
#include "ppipe/layers/linear.hpp"
#include "ppipe/layers/mse_loss.hpp"
#include "ppipe/layers/sampling.hpp"
#include "ppipe/layers/sequential.hpp"
#include "ppipe/layers/sgd.hpp"
#include "ppipe/layers/transformer.hpp"
