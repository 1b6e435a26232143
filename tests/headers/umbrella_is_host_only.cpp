// <ppipe/ppipe.hpp> is the host-only core: a program that never asked for a backend must build
// on a machine without CUDA, NCCL, MPI or OpenBLAS. Each guard below is the include guard (or a
// macro only that header defines) of one backend header, as spelled in CUDA 13, NCCL 2.28, Open
// MPI 4.1 / MPICH and OpenBLAS 0.3.
#include <ppipe/ppipe.hpp>

#if defined(__CUDA_RUNTIME_H__) || defined(__CUDA_RUNTIME_API_H__) || defined(CUDART_VERSION)
#error "<ppipe/ppipe.hpp> includes the CUDA runtime; move that include behind <ppipe/cuda.hpp>"
#endif
#if defined(CUBLAS_API_H_) || defined(CUBLAS_V2_H_)
#error "<ppipe/ppipe.hpp> includes cuBLAS; move that include behind <ppipe/cuda.hpp>"
#endif
#if defined(NCCL_H_) || defined(NCCL_VERSION_CODE)
#error "<ppipe/ppipe.hpp> includes NCCL; move that include behind <ppipe/nccl.hpp>"
#endif
#if defined(MPI_VERSION) || defined(OMPI_MPI_H) || defined(MPI_INCLUDED)
#error "<ppipe/ppipe.hpp> includes MPI; move that include behind <ppipe/mpi.hpp>"
#endif
#if defined(CBLAS_H) || defined(OPENBLAS_VERSION) || defined(PPIPE_LAYERS_KERNELS)
#error "<ppipe/ppipe.hpp> includes the layer kit or OpenBLAS; keep them behind <ppipe/layers/layers.hpp>"
#endif
