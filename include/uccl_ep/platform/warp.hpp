// Warp-level primitives with one spelling for CUDA (32 lanes) and HIP (64 lanes). Device code only.
#pragma once

#include <cstdint>

#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::platform {

#if defined(UCCL_EP_CUDA) || defined(UCCL_EP_HIP)

UCCL_EP_DEVICE UCCL_EP_FORCEINLINE int laneId() { return static_cast<int>(threadIdx.x) % kWarpSize; }
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE int warpId() { return static_cast<int>(threadIdx.x) / kWarpSize; }
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE int numWarps() { return static_cast<int>(blockDim.x) / kWarpSize; }

// Bit i set when lane i's predicate holds (all lanes of the warp must call).
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE uint64_t ballot(bool pred) {
#if defined(UCCL_EP_HIP)
  return __ballot(pred);
#else
  return __ballot_sync(0xffffffffu, pred);
#endif
}

UCCL_EP_DEVICE UCCL_EP_FORCEINLINE int popcount64(uint64_t v) { return __popcll(v); }

template <typename T>
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE T shflXor(T v, int mask) {
#if defined(UCCL_EP_HIP)
  return __shfl_xor(v, mask);
#else
  return __shfl_xor_sync(0xffffffffu, v, mask);
#endif
}

// Lane (lane - delta)'s value, own value for lanes below delta (all lanes of the warp must call).
template <typename T>
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE T shflUp(T v, int delta) {
#if defined(UCCL_EP_HIP)
  return __shfl_up(v, delta);
#else
  return __shfl_up_sync(0xffffffffu, v, delta);
#endif
}

// Lane `src`'s value (all lanes of the warp must call).
template <typename T>
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE T shfl(T v, int src) {
#if defined(UCCL_EP_HIP)
  return __shfl(v, src);
#else
  return __shfl_sync(0xffffffffu, v, src);
#endif
}

UCCL_EP_DEVICE UCCL_EP_FORCEINLINE void syncWarp() {
#if defined(UCCL_EP_HIP)
  __builtin_amdgcn_wave_barrier();
#else
  __syncwarp();
#endif
}

// Reductions inside aligned groups of `width` lanes (a power of two dividing the warp).
template <int width>
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE float groupMax(float v) {
#pragma unroll
  for (int m = width / 2; m > 0; m /= 2) v = fmaxf(v, shflXor(v, m));
  return v;
}
template <int width>
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE float groupMin(float v) {
#pragma unroll
  for (int m = width / 2; m > 0; m /= 2) v = fminf(v, shflXor(v, m));
  return v;
}

#endif

}  // namespace uccl::ep::platform
