# FindNCCL
# --------
# Finds NVIDIA's NCCL, which ships no CMake package of its own.
#
# Hints, first match wins:
#   NCCL_ROOT (CMake or environment variable)   a prefix holding include/nccl.h and lib/libnccl.so
#   the CUDA toolkit found by FindCUDAToolkit    CUDAToolkit_INCLUDE_DIRS / CUDAToolkit_LIBRARY_DIR
#   /usr/local/cuda                              where the CUDA installers put NCCL beside the toolkit
#   the system's default search paths            e.g. Debian's libnccl-dev
#
# Result variables:
#   NCCL_FOUND, NCCL_VERSION (MAJOR.MINOR.PATCH, read from nccl.h), NCCL_INCLUDE_DIRS, NCCL_LIBRARIES
# Cache variables:
#   NCCL_INCLUDE_DIR, NCCL_LIBRARY
# Imported target:
#   NCCL::NCCL
#
# This file is installed beside ppipeConfig.cmake, so a consumer of ppipe::nccl finds NCCL the same
# way ppipe's own build did.

set(_nccl_hint_prefixes)
if(DEFINED NCCL_ROOT)
  list(APPEND _nccl_hint_prefixes "${NCCL_ROOT}")
endif()
if(DEFINED ENV{NCCL_ROOT})
  list(APPEND _nccl_hint_prefixes "$ENV{NCCL_ROOT}")
endif()

set(_nccl_hint_include_dirs)
set(_nccl_hint_library_dirs)
if(CUDAToolkit_INCLUDE_DIRS)
  list(APPEND _nccl_hint_include_dirs ${CUDAToolkit_INCLUDE_DIRS})
endif()
if(CUDAToolkit_LIBRARY_DIR)
  list(APPEND _nccl_hint_library_dirs "${CUDAToolkit_LIBRARY_DIR}")
endif()

# NCCL_ROOT is searched before everything else (CMP0074 gives <Pkg>_ROOT priority too); the toolkit
# and /usr/local/cuda come after it but before the system paths, which may hold an older NCCL.
find_path(NCCL_INCLUDE_DIR
  NAMES nccl.h
  HINTS ${_nccl_hint_prefixes}
  PATH_SUFFIXES include
  NO_DEFAULT_PATH)
find_path(NCCL_INCLUDE_DIR
  NAMES nccl.h
  HINTS ${_nccl_hint_include_dirs} /usr/local/cuda/include
  PATH_SUFFIXES include)

find_library(NCCL_LIBRARY
  NAMES nccl
  HINTS ${_nccl_hint_prefixes}
  PATH_SUFFIXES lib64 lib lib/x86_64-linux-gnu lib/aarch64-linux-gnu
  NO_DEFAULT_PATH)
find_library(NCCL_LIBRARY
  NAMES nccl
  HINTS ${_nccl_hint_library_dirs} /usr/local/cuda/lib64 /usr/local/cuda/lib
  PATH_SUFFIXES lib64 lib)

unset(NCCL_VERSION)
if(NCCL_INCLUDE_DIR AND EXISTS "${NCCL_INCLUDE_DIR}/nccl.h")
  file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _nccl_version_lines
       REGEX "^#define NCCL_(MAJOR|MINOR|PATCH)[ \t]+[0-9]+")
  foreach(_nccl_part MAJOR MINOR PATCH)
    string(REGEX MATCH "NCCL_${_nccl_part}[ \t]+([0-9]+)" _nccl_match "${_nccl_version_lines}")
    set(NCCL_VERSION_${_nccl_part} "${CMAKE_MATCH_1}")
  endforeach()
  if(NOT NCCL_VERSION_MAJOR STREQUAL "" AND NOT NCCL_VERSION_MINOR STREQUAL ""
     AND NOT NCCL_VERSION_PATCH STREQUAL "")
    set(NCCL_VERSION "${NCCL_VERSION_MAJOR}.${NCCL_VERSION_MINOR}.${NCCL_VERSION_PATCH}")
  endif()
  unset(_nccl_version_lines)
  unset(_nccl_match)
  unset(_nccl_part)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NCCL
  REQUIRED_VARS NCCL_LIBRARY NCCL_INCLUDE_DIR
  VERSION_VAR NCCL_VERSION
  REASON_FAILURE_MESSAGE "set NCCL_ROOT to the prefix that holds include/nccl.h and lib/libnccl.so")

if(NCCL_FOUND)
  set(NCCL_INCLUDE_DIRS "${NCCL_INCLUDE_DIR}")
  set(NCCL_LIBRARIES "${NCCL_LIBRARY}")
  if(NOT TARGET NCCL::NCCL)
    add_library(NCCL::NCCL UNKNOWN IMPORTED)
    set_target_properties(NCCL::NCCL PROPERTIES
      IMPORTED_LOCATION "${NCCL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
  endif()
endif()

mark_as_advanced(NCCL_INCLUDE_DIR NCCL_LIBRARY)
unset(_nccl_hint_prefixes)
unset(_nccl_hint_include_dirs)
unset(_nccl_hint_library_dirs)
