#pragma once
/// @file
/// @brief What a program that trains or runs a model needs: ppipe::pipeline with its options,
/// models and typed layers (ppipe::layer_stack), tensors, the host backend and transports. It
/// leaves out what only planning and pictures use (the CSV reader and writer, the SVG timeline,
/// the schedule advice), which <ppipe/ppipe.hpp> adds.

#include "ppipe/config.hpp"
#include "ppipe/error.hpp"
#include "ppipe/version.hpp"

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
