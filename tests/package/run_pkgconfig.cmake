# Builds and runs a program with the flags that pkg-config gives for the installed ppipe.pc:
#   cmake -DPKG_CONFIG=<exe> -DPREFIX=<prefix> -DCXX=<compiler> -DSOURCE=<main.cpp>
#         -DBINARY_DIR=<dir> -DVERSION=<x.y.z> -P run_pkgconfig.cmake
cmake_minimum_required(VERSION 3.25)

set(ENV{PKG_CONFIG_PATH} "${PREFIX}/share/pkgconfig")

execute_process(COMMAND "${PKG_CONFIG}" --modversion ppipe
  RESULT_VARIABLE rc OUTPUT_VARIABLE found_version ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0 OR NOT found_version STREQUAL VERSION)
  message(FATAL_ERROR "pkg-config --modversion ppipe: exit ${rc}, '${found_version}' (want ${VERSION}) ${err}")
endif()

execute_process(COMMAND "${PKG_CONFIG}" --cflags --libs ppipe
  RESULT_VARIABLE rc OUTPUT_VARIABLE flags ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config --cflags --libs ppipe failed (exit ${rc}): ${err}")
endif()
# The include directory must be the prefix's, resolved from the .pc file's own location.
file(REAL_PATH "${PREFIX}/include" include_dir)
if(NOT flags MATCHES "-I([^ ]+)")
  message(FATAL_ERROR "pkg-config gave no -I flag: '${flags}'")
endif()
file(REAL_PATH "${CMAKE_MATCH_1}" given_include_dir)
if(NOT given_include_dir STREQUAL include_dir)
  message(FATAL_ERROR "pkg-config's include dir '${CMAKE_MATCH_1}' is not '${include_dir}'")
endif()
message(STATUS "pkg-config --cflags --libs ppipe: ${flags}")

separate_arguments(flag_list UNIX_COMMAND "${flags}")
file(MAKE_DIRECTORY "${BINARY_DIR}")
execute_process(
  COMMAND "${CXX}" -std=c++20 "${SOURCE}" ${flag_list} -o "${BINARY_DIR}/consumer_pkgconfig"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "compiling with pkg-config's flags failed (exit ${rc}):\n${out}")
endif()
execute_process(COMMAND "${BINARY_DIR}/consumer_pkgconfig"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "consumer_pkgconfig exited with ${rc}:\n${out}")
endif()
message(STATUS "consumer_pkgconfig: ${out}")
