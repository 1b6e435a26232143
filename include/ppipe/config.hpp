#pragma once
/// @file
/// @brief Compiler and language checks, and the few macros the rest of ppipe relies on.

#if !defined(__cplusplus) || (__cplusplus < 202002L && (!defined(_MSVC_LANG) || _MSVC_LANG < 202002L))
#error "ppipe needs C++20: compile with -std=c++20 (CMake: target_compile_features(... cxx_std_20))"
#endif

/// @brief True while nvcc (or clang in CUDA mode) compiles device-capable code. Function-like, so a
/// misspelled use fails to compile instead of silently reading as 0.
#if defined(__CUDACC__)
#define PPIPE_CUDA_COMPILATION() 1
#else
#define PPIPE_CUDA_COMPILATION() 0
#endif

/// @brief Marks a function callable from host and device code under a CUDA compiler; empty otherwise.
#if PPIPE_CUDA_COMPILATION()
#define PPIPE_HOST_DEVICE __host__ __device__
#else
#define PPIPE_HOST_DEVICE
#endif
