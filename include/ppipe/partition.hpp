#pragma once
/// @file
/// @brief The partitioners alone: splitting a layer stack into stages by cost, device speed and
/// memory, the predicted step, bubble and peak memory, layer profiling and the split's report.

#include "ppipe/config.hpp"
#include "ppipe/error.hpp"
#include "ppipe/version.hpp"

#include "ppipe/partition/partition.hpp"
#include "ppipe/partition/partitioner.hpp"
#include "ppipe/partition/predict.hpp"
#include "ppipe/partition/problem.hpp"
#include "ppipe/partition/recompute_plan.hpp"
#include "ppipe/partition/profile.hpp"
#include "ppipe/partition/report.hpp"
