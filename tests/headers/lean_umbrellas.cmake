# The narrower umbrellas stay narrow: <ppipe/runtime.hpp> and <ppipe/schedule.hpp> never pull in
# the CSV reader and writer or the SVG picture, and <ppipe/schedule.hpp> nothing of the runtime.
# The compiler lists what each includes (-M).
#   cmake -DROOT=<source dir> -DCXX=<compiler> -DWORK=<scratch dir> -P lean_umbrellas.cmake
set(_forbidden_runtime "ppipe/schedule/csv.hpp" "ppipe/schedule/svg.hpp")
set(_forbidden_schedule ${_forbidden_runtime} "ppipe/runtime/" "ppipe/pipeline/" "ppipe/model/")
set(problems "")
foreach(umbrella runtime schedule)
  set(tu "${WORK}/lean_${umbrella}.cpp")
  file(WRITE "${tu}" "#include <ppipe/${umbrella}.hpp>\n")
  execute_process(COMMAND "${CXX}" -std=c++20 "-I${ROOT}/include" -M "${tu}"
                  OUTPUT_VARIABLE deps ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "<ppipe/${umbrella}.hpp> does not preprocess: ${err}")
  endif()
  foreach(bad IN LISTS _forbidden_${umbrella})
    if(deps MATCHES "include/${bad}")
      string(APPEND problems "\n  <ppipe/${umbrella}.hpp> includes ${bad}")
    endif()
  endforeach()
endforeach()
if(problems)
  message(FATAL_ERROR "a narrow umbrella grew:${problems}")
endif()
message(STATUS "runtime.hpp and schedule.hpp include none of what they leave out")
