// Portability between CUDA, HIP and plain host C++.
//
// Everything above this layer writes UCCL_EP_HOST_DEVICE / UCCL_EP_DEVICE and kWarpSize and never tests
// __CUDACC__ or __HIPCC__ itself. A header compiled by g++ sees the host branch, so the ring protocol builds
// and runs in host threads (tests, ThreadSanitizer) from the same source the kernels use.
#pragma once

#include <cstdint>

#if defined(__HIPCC__) || defined(__HIP_PLATFORM_AMD__)
#define UCCL_EP_HIP 1
#include <hip/hip_runtime.h>  // __forceinline__, threadIdx, atomics: what nvcc provides implicitly
#elif defined(__CUDACC__)
#define UCCL_EP_CUDA 1
#endif

#if defined(UCCL_EP_HIP) || defined(UCCL_EP_CUDA)
#define UCCL_EP_HOST_DEVICE __host__ __device__
#define UCCL_EP_DEVICE __device__
#define UCCL_EP_FORCEINLINE __forceinline__
#else
#define UCCL_EP_HOST_DEVICE
#define UCCL_EP_DEVICE
#define UCCL_EP_FORCEINLINE inline __attribute__((always_inline))
#endif

// True only in the device pass of a GPU compile; host passes and plain C++ see 0.
#if (defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__))
#define UCCL_EP_DEVICE_PASS 1
#else
#define UCCL_EP_DEVICE_PASS 0
#endif

namespace uccl::ep::platform {

#if defined(UCCL_EP_HIP)
// AMD wavefronts are 64 lanes on CDNA (gfx90a, gfx94x), the targets we build for.
inline constexpr int kWarpSize = 64;
#else
inline constexpr int kWarpSize = 32;
#endif

}  // namespace uccl::ep::platform
