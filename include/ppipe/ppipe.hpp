#pragma once
/// @file
/// @brief ppipe's core: everything that needs no CUDA, NCCL or MPI. The backends have their own
/// umbrellas (ppipe/cuda.hpp, ppipe/nccl.hpp, ppipe/mpi.hpp).

#include "ppipe/config.hpp"
#include "ppipe/error.hpp"
#include "ppipe/version.hpp"

#include "ppipe/partition/partition.hpp"
#include "ppipe/partition/partitioner.hpp"
#include "ppipe/partition/predict.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/partition/profile.hpp"
#include "ppipe/partition/report.hpp"

#include "ppipe/schedule/action.hpp"
#include "ppipe/schedule/advice.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/generate.hpp"
#include "ppipe/schedule/grid.hpp"
#include "ppipe/schedule/in_flight.hpp"
#include "ppipe/schedule/placement.hpp"
#include "ppipe/schedule/problem.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/simulate.hpp"
#include "ppipe/schedule/timeline.hpp"
#include "ppipe/schedule/validate.hpp"
