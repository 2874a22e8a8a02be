// The GPU runtime API for host code. Kernel launch code writes the gpu* names below, spelled once for CUDA and HIP.
// The runtime (src/runtime) writes cuda* names; a HIP build maps them to hip* ones (cuda_compat_hip.hpp), so that
// one source serves both. Plain C++ built with -D__HIP_PLATFORM_AMD__ (the HIP build's runtime and _C) takes the
// HIP branch too.
#pragma once

#include "uccl_ep/platform/platform.hpp"

#if defined(UCCL_EP_HIP)
#include <hip/hip_runtime.h>

#include "uccl_ep/platform/cuda_compat_hip.hpp"
using gpuStream_t = hipStream_t;
using gpuError_t = hipError_t;
#define gpuSuccess hipSuccess
#define gpuGetLastError hipGetLastError
#define gpuGetErrorString hipGetErrorString
#define gpuMemsetAsync hipMemsetAsync
#else
#include <cuda_runtime.h>
using gpuStream_t = cudaStream_t;
using gpuError_t = cudaError_t;
#define gpuSuccess cudaSuccess
#define gpuGetLastError cudaGetLastError
#define gpuGetErrorString cudaGetErrorString
#define gpuMemsetAsync cudaMemsetAsync
#endif
