# The folders of include/ppipe depend one way: a header includes headers of its own folder or of
# folders below it in LAYERS, never above, so the folder graph has no cycle. A detail/ folder is
# its owner's: only headers of the owning folder include it.
#   cmake -DROOT=<source dir> -P layering.cmake
#
# Bottom to top. "base" is error.hpp, config.hpp and version.hpp; "umbrella" the top-level headers
# that gather a component (ppipe.hpp, cuda.hpp, nccl.hpp, mpi.hpp).
set(LAYERS base tensor io device schedule partition model transport runtime inference pipeline layers
    backend/cuda backend/nccl backend/mpi umbrella)

function(_folder_of header out)
  # header is relative to include/, e.g. ppipe/runtime/stage.hpp or ppipe/schedule/detail/replay.hpp
  string(REGEX REPLACE "^ppipe/" "" rel "${header}")
  string(REGEX REPLACE "/detail/.*$" "/x" rel "${rel}")
  get_filename_component(dir "${rel}" DIRECTORY)
  if(dir STREQUAL "")
    if(rel MATCHES "^(error|config|version)\\.hpp$")
      set(dir base)
    else()
      set(dir umbrella)
    endif()
  endif()
  set(${out} "${dir}" PARENT_SCOPE)
endfunction()

file(GLOB_RECURSE headers RELATIVE "${ROOT}/include" "${ROOT}/include/ppipe/*.hpp")
list(SORT headers)
set(problems "")
foreach(header IN LISTS headers)
  _folder_of("${header}" from)
  list(FIND LAYERS "${from}" from_rank)
  if(from_rank LESS 0)
    string(APPEND problems "\n  ${header}: folder '${from}' is not in LAYERS (tests/headers/layering.cmake); place it there")
    continue()
  endif()
  file(STRINGS "${ROOT}/include/${header}" includes REGEX "^#include [\"<]ppipe/")
  foreach(line IN LISTS includes)
    string(REGEX REPLACE "^#include [\"<](ppipe/[^\">]+)[\">].*$" "\\1" target "${line}")
    _folder_of("${target}" to)
    list(FIND LAYERS "${to}" to_rank)
    if(to_rank GREATER from_rank)
      string(APPEND problems "\n  ${header} (${from}) includes ${target} (${to}), a folder above it")
    endif()
    if(target MATCHES "/detail/" AND NOT to STREQUAL from)
      string(APPEND problems "\n  ${header} (${from}) includes ${target}, the detail of ${to}")
    endif()
  endforeach()
endforeach()

list(LENGTH headers count)
if(problems)
  message(FATAL_ERROR "folder dependencies that do not run one way:${problems}")
endif()
message(STATUS "${count} headers: every include runs down LAYERS")
