#pragma once
/// @file
/// @brief ppipe's core and its host backend: everything that needs no CUDA, NCCL or MPI. The
/// backends have their own umbrellas (ppipe/cuda.hpp, ppipe/nccl.hpp, ppipe/mpi.hpp); the CPU layer
/// kit for examples and tests is ppipe/layers/layers.hpp. Narrower umbrellas parse less:
/// ppipe/runtime.hpp (training and inference), ppipe/schedule.hpp and ppipe/partition.hpp
/// (planning).

#include "ppipe/partition.hpp"
#include "ppipe/runtime.hpp"
#include "ppipe/schedule.hpp"

#include "ppipe/inference/batcher.hpp"
#include "ppipe/inference/generation.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/inference/generator.hpp"
#include "ppipe/inference/plan.hpp"
#include "ppipe/inference/sequence_cache.hpp"

#include "ppipe/schedule/csv.hpp"
#include "ppipe/schedule/svg.hpp"
