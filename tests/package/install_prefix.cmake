# Installs ppipe into a fresh prefix:
#   cmake -DBUILD_DIR=<build tree> -DPREFIX=<dir> [-DSOURCE_DIR=<ppipe> -DCONFIGURE_ARGS=<a|b|..>]
#         -P install_prefix.cmake
# With SOURCE_DIR, BUILD_DIR is first configured from it (CONFIGURE_ARGS separated by '|'); without,
# BUILD_DIR is an existing build tree (the one running the tests). The prefix is emptied first, so
# that files dropped from the install rules cannot linger and hide a bug.
cmake_minimum_required(VERSION 3.25)

if(DEFINED SOURCE_DIR)
  string(REPLACE "|" ";" args "${CONFIGURE_ARGS}")
  file(REMOVE_RECURSE "${BUILD_DIR}")
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BUILD_DIR}" ${args}
    RESULT_VARIABLE rc
    OUTPUT_VARIABLE out
    ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "configuring ${SOURCE_DIR} failed (exit ${rc}):\n${out}")
  endif()
endif()

file(REMOVE_RECURSE "${PREFIX}")
execute_process(
  COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (exit ${rc}):\n${out}")
endif()
foreach(required include/ppipe/version.hpp share/cmake/ppipe/ppipeConfig.cmake
        share/cmake/ppipe/ppipeConfigVersion.cmake share/cmake/ppipe/ppipeTargets.cmake
        share/cmake/ppipe/FindNCCL.cmake share/cmake/ppipe/ppipeFindOpenBLAS.cmake share/pkgconfig/ppipe.pc)
  if(NOT EXISTS "${PREFIX}/${required}")
    message(FATAL_ERROR "the install lacks ${required}:\n${out}")
  endif()
endforeach()
message(STATUS "installed into ${PREFIX}")
