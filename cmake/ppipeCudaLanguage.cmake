# ppipe_enable_cuda_language(): CUDA as a language for ppipe's own nvcc-compiled tests, examples
# and benchmarks, the way that works on CMake 3.25.1 (see shared/ENVIRONMENT.md). A macro: the
# variables it sets start each CUDA target's properties in the calling directory.
macro(ppipe_enable_cuda_language)
  # Without a GPU, 'native' cannot be detected: pin the architectures unless the user chose some.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  # nvcc need not be on PATH: take the one of the toolkit that ppipe::cuda uses.
  if(NOT CMAKE_CUDA_COMPILER AND CUDAToolkit_NVCC_EXECUTABLE)
    set(CMAKE_CUDA_COMPILER "${CUDAToolkit_NVCC_EXECUTABLE}")
  endif()
  # One runtime for the whole executable: ppipe::cuda links the shared cudart.
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  # CMake 3.25.1 does not know the CUDA20 dialect: do not require one, pass the flag ourselves.
  set(CMAKE_CUDA_STANDARD_REQUIRED OFF)
  enable_language(CUDA)
  add_compile_options($<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>)
endmacro()
