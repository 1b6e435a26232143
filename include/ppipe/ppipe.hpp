#pragma once
/// @file
/// @brief ppipe's core and its host backend: everything that needs no CUDA, NCCL or MPI. The
/// backends have their own umbrellas (ppipe/cuda.hpp, ppipe/nccl.hpp, ppipe/mpi.hpp); the CPU layer
/// kit for examples and tests is ppipe/layers/layers.hpp.

#include "ppipe/config.hpp"
#include "ppipe/error.hpp"
#include "ppipe/version.hpp"

#include "ppipe/inference/batcher.hpp"
#include "ppipe/inference/generation.hpp"
#include "ppipe/inference/generative_model.hpp"
#include "ppipe/inference/generator.hpp"
#include "ppipe/inference/plan.hpp"
#include "ppipe/inference/sequence_cache.hpp"

#include "ppipe/partition/partition.hpp"
#include "ppipe/partition/partitioner.hpp"
#include "ppipe/partition/predict.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/partition/profile.hpp"
#include "ppipe/partition/report.hpp"

#include "ppipe/schedule/action.hpp"
#include "ppipe/schedule/advice.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/csv.hpp"
#include "ppipe/schedule/generate.hpp"
#include "ppipe/schedule/grid.hpp"
#include "ppipe/schedule/in_flight.hpp"
#include "ppipe/schedule/placement.hpp"
#include "ppipe/schedule/problem.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/simulate.hpp"
#include "ppipe/schedule/svg.hpp"
#include "ppipe/schedule/timeline.hpp"
#include "ppipe/schedule/validate.hpp"

#include "ppipe/tensor/tensor.hpp"
#include "ppipe/tensor/tensor_view.hpp"

#include "ppipe/device/inline_device.hpp"

#include "ppipe/model/layer.hpp"
#include "ppipe/model/layer_stack.hpp"
#include "ppipe/model/model.hpp"

#include "ppipe/runtime/backend.hpp"
#include "ppipe/runtime/buffer_pool.hpp"
#include "ppipe/runtime/executor.hpp"
#include "ppipe/runtime/stage.hpp"
#include "ppipe/runtime/trace.hpp"
#include "ppipe/runtime/watchdog.hpp"

#include "ppipe/pipeline/options.hpp"
#include "ppipe/pipeline/pipeline.hpp"

#include "ppipe/transport/distributed.hpp"
#include "ppipe/transport/host.hpp"
#include "ppipe/transport/transport.hpp"
