# ppipe's optional components. Each is a header-only INTERFACE target over the core:
#   ppipe::cuda   CUDA runtime + cuBLAS             (PPIPE_ENABLE_CUDA, needs CUDAToolkit)
#   ppipe::nccl   NCCL, on top of ppipe::cuda       (PPIPE_ENABLE_NCCL, needs NCCL and ppipe::cuda)
#   ppipe::mpi    MPI's C API                        (PPIPE_ENABLE_MPI, needs MPI)
#   ppipe::blas   the CPU layer kit on OpenBLAS      (PPIPE_ENABLE_BLAS, needs OpenBLAS)
# A component defaults to ON when its dependency is found, so a plain configure builds everything the
# machine can; asking for one explicitly (=ON) without its dependency is an error rather than a
# silent OFF, because the caller clearly meant to get it.
include_guard(GLOBAL)

# _ppipe_component_option(<VAR> <doc> <found>): the option defaults to <found> on first configure.
macro(_ppipe_component_option var doc found)
  if(${found})
    option(${var} "${doc}" ON)
  else()
    option(${var} "${doc}" OFF)
  endif()
endmacro()

# --- cuda ----------------------------------------------------------------------------------------
# An explicit OFF skips the search: a user turning CUDA off may have a broken toolkit around.
if(NOT DEFINED PPIPE_ENABLE_CUDA OR PPIPE_ENABLE_CUDA)
  find_package(CUDAToolkit QUIET)
endif()
_ppipe_component_option(PPIPE_ENABLE_CUDA "Provide ppipe::cuda (needs the CUDA toolkit)" CUDAToolkit_FOUND)
if(PPIPE_ENABLE_CUDA AND NOT CUDAToolkit_FOUND)
  message(FATAL_ERROR
    "ppipe: PPIPE_ENABLE_CUDA is ON but the CUDA toolkit (CUDAToolkit) was not found. "
    "Set CUDAToolkit_ROOT to its prefix (e.g. -DCUDAToolkit_ROOT=/usr/local/cuda), "
    "or configure with -DPPIPE_ENABLE_CUDA=OFF.")
endif()
if(PPIPE_ENABLE_CUDA AND NOT TARGET CUDA::cublas)
  message(FATAL_ERROR
    "ppipe: PPIPE_ENABLE_CUDA is ON but the CUDA toolkit at '${CUDAToolkit_LIBRARY_ROOT}' has no "
    "cuBLAS (CUDA::cublas). Install cuBLAS, point CUDAToolkit_ROOT at a full toolkit, "
    "or configure with -DPPIPE_ENABLE_CUDA=OFF.")
endif()

# --- nccl ----------------------------------------------------------------------------------------
if(PPIPE_ENABLE_CUDA AND (NOT DEFINED PPIPE_ENABLE_NCCL OR PPIPE_ENABLE_NCCL))
  find_package(NCCL QUIET)
endif()
_ppipe_component_option(PPIPE_ENABLE_NCCL "Provide ppipe::nccl (needs NCCL and PPIPE_ENABLE_CUDA)" NCCL_FOUND)
if(PPIPE_ENABLE_NCCL AND NOT PPIPE_ENABLE_CUDA)
  message(FATAL_ERROR
    "ppipe: PPIPE_ENABLE_NCCL is ON but PPIPE_ENABLE_CUDA is OFF; ppipe::nccl builds on ppipe::cuda. "
    "Enable CUDA, or configure with -DPPIPE_ENABLE_NCCL=OFF.")
endif()
if(PPIPE_ENABLE_NCCL AND NOT NCCL_FOUND)
  message(FATAL_ERROR
    "ppipe: PPIPE_ENABLE_NCCL is ON but NCCL (nccl.h, libnccl) was not found. "
    "Set NCCL_ROOT to its prefix (e.g. -DNCCL_ROOT=/opt/nccl), or configure with -DPPIPE_ENABLE_NCCL=OFF.")
endif()

# --- mpi -----------------------------------------------------------------------------------------
# ppipe uses MPI's C API only; the deprecated C++ bindings would add a library and warnings.
set(MPI_CXX_SKIP_MPICXX ON)
if(NOT DEFINED PPIPE_ENABLE_MPI OR PPIPE_ENABLE_MPI)
  find_package(MPI QUIET COMPONENTS CXX)
endif()
_ppipe_component_option(PPIPE_ENABLE_MPI "Provide ppipe::mpi (needs MPI)" MPI_CXX_FOUND)
if(PPIPE_ENABLE_MPI AND NOT MPI_CXX_FOUND)
  message(FATAL_ERROR
    "ppipe: PPIPE_ENABLE_MPI is ON but MPI (C++ component) was not found. "
    "Set MPI_HOME to the MPI installation's prefix (e.g. -DMPI_HOME=/usr/lib/x86_64-linux-gnu/openmpi), "
    "or configure with -DPPIPE_ENABLE_MPI=OFF.")
endif()

# --- blas ----------------------------------------------------------------------------------------
# OpenBLAS for the layer kit's linear layer (cblas_sgemm instead of its loops). OpenBLAS only:
# ppipe keeps it to one thread per rank with openblas_set_num_threads.
include(ppipeFindOpenBLAS)
if(NOT DEFINED PPIPE_ENABLE_BLAS OR PPIPE_ENABLE_BLAS)
  ppipe_find_openblas(_ppipe_openblas)
  if(_ppipe_openblas_FOUND)
    # The header and the library must belong together: compile and link one call of each function
    # ppipe uses, so that a mismatch stops the configure rather than the build.
    include(CheckCXXSourceCompiles)
    include(CMakePushCheckState)
    cmake_push_check_state(RESET)
    set(CMAKE_REQUIRED_INCLUDES "${_ppipe_openblas_INCLUDE_DIR}")
    set(CMAKE_REQUIRED_LIBRARIES BLAS::BLAS)
    set(CMAKE_REQUIRED_QUIET ON)
    check_cxx_source_compiles([=[
#include <cblas.h>
int main() {
  openblas_set_num_threads(1);
  float a = 1.0f, b = 2.0f, c = 0.0f;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);
  return c == 2.0f ? 0 : 1;
}]=] PPIPE_OPENBLAS_LINKS)
    cmake_pop_check_state()
    if(NOT PPIPE_OPENBLAS_LINKS)
      set(_ppipe_openblas_FOUND FALSE)
      string(CONCAT _ppipe_openblas_REASON "OpenBLAS's cblas.h in '${_ppipe_openblas_INCLUDE_DIR}' and the "
             "library '${BLAS_LIBRARIES}' do not build a call of cblas_sgemm and openblas_set_num_threads "
             "together (see CMakeFiles/CMakeError.log); point PPIPE_OPENBLAS_INCLUDE_DIR and "
             "CMAKE_PREFIX_PATH at one OpenBLAS")
    endif()
  endif()
endif()
_ppipe_component_option(PPIPE_ENABLE_BLAS "Provide ppipe::blas, the layer kit on OpenBLAS (needs OpenBLAS)"
                        _ppipe_openblas_FOUND)
if(PPIPE_ENABLE_BLAS AND NOT _ppipe_openblas_FOUND)
  message(FATAL_ERROR "ppipe: PPIPE_ENABLE_BLAS is ON but ${_ppipe_openblas_REASON}; "
                      "or configure with -DPPIPE_ENABLE_BLAS=OFF.")
endif()

# --- the targets ---------------------------------------------------------------------------------
set(PPIPE_COMPONENTS "")
# _ppipe_add_component(<name> <links...>): the INTERFACE target ppipe_<name>, exported as
# ppipe::<name> and linking <links>.
function(_ppipe_add_component name)
  add_library(ppipe_${name} INTERFACE)
  add_library(ppipe::${name} ALIAS ppipe_${name})
  set_target_properties(ppipe_${name} PROPERTIES EXPORT_NAME ${name})
  target_link_libraries(ppipe_${name} INTERFACE ${ARGN})
endfunction()

if(PPIPE_ENABLE_CUDA)
  # Only host API (runtime + cuBLAS): no cuda_std_* feature, which would force CUDA as a language on
  # every consumer, and CMake 3.25.1 does not know cuda_std_20 anyway.
  _ppipe_add_component(cuda ppipe::ppipe CUDA::cudart CUDA::cublas)
  list(APPEND PPIPE_COMPONENTS cuda)
endif()
if(PPIPE_ENABLE_NCCL)
  _ppipe_add_component(nccl ppipe::cuda NCCL::NCCL)
  list(APPEND PPIPE_COMPONENTS nccl)
endif()
if(PPIPE_ENABLE_MPI)
  _ppipe_add_component(mpi ppipe::ppipe MPI::MPI_CXX)
  list(APPEND PPIPE_COMPONENTS mpi)
endif()
if(PPIPE_ENABLE_BLAS)
  _ppipe_add_component(blas ppipe::ppipe BLAS::BLAS)
  # The header directory is this machine's; an installed ppipe::blas gets the consumer's from
  # ppipeConfig.cmake, which finds OpenBLAS again there.
  target_include_directories(ppipe_blas INTERFACE "$<BUILD_INTERFACE:${_ppipe_openblas_INCLUDE_DIR}>")
  target_compile_definitions(ppipe_blas INTERFACE PPIPE_WITH_CBLAS=1)
  list(APPEND PPIPE_COMPONENTS blas)
endif()

set(_ppipe_summary "")
foreach(_ppipe_c cuda nccl mpi blas)
  string(TOUPPER "${_ppipe_c}" _ppipe_C)
  if(PPIPE_ENABLE_${_ppipe_C})
    set(_ppipe_state "ON")
    if(_ppipe_c STREQUAL "cuda")
      string(APPEND _ppipe_state " (CUDA ${CUDAToolkit_VERSION})")
    elseif(_ppipe_c STREQUAL "nccl")
      string(APPEND _ppipe_state " (NCCL ${NCCL_VERSION})")
    elseif(_ppipe_c STREQUAL "blas")
      string(APPEND _ppipe_state " (OpenBLAS)")
    else()
      string(APPEND _ppipe_state " (MPI ${MPI_CXX_VERSION})")
    endif()
  else()
    set(_ppipe_state "OFF")
  endif()
  string(APPEND _ppipe_summary " ${_ppipe_c}=${_ppipe_state}")
endforeach()
message(STATUS "ppipe ${PROJECT_VERSION} components: core=ON${_ppipe_summary}")
