#pragma once
/// @file
/// @brief The schedule core alone: the action IR, placements, the built-in schedules, the
/// validator, the simulator, the text timeline and advice. For planning programs that run nothing;
/// the CSV reader and writer (<ppipe/schedule/csv.hpp>) and the SVG picture
/// (<ppipe/schedule/svg.hpp>) are included on their own.

#include "ppipe/config.hpp"
#include "ppipe/error.hpp"
#include "ppipe/version.hpp"

#include "ppipe/schedule/action.hpp"
#include "ppipe/schedule/advice.hpp"
#include "ppipe/schedule/communication.hpp"
#include "ppipe/schedule/generate.hpp"
#include "ppipe/schedule/grid.hpp"
#include "ppipe/schedule/in_flight.hpp"
#include "ppipe/schedule/placement.hpp"
#include "ppipe/schedule/problem.hpp"
#include "ppipe/schedule/recompute.hpp"
#include "ppipe/schedule/schedule.hpp"
#include "ppipe/schedule/simulate.hpp"
#include "ppipe/schedule/timeline.hpp"
#include "ppipe/schedule/validate.hpp"
