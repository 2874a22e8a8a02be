// Loads with a cache policy, for the copy loops of the kernels (device code only).
//
// loadInput: memory that no agent writes while the kernel runs (the caller's x, top-k ids and weights). Read
//   through the read-only path without allocating in L1: each byte is read once, so caching it only evicts.
// loadFresh: memory that another agent (a peer GPU over NVLink) writes while the kernel runs, read after an
//   acquire of the flag that published it. It bypasses L1, which is not coherent: an L1 line filled earlier in the
//   kernel (by a neighbouring row that shares the line) would otherwise return stale bytes. L2 is the coherence
//   point of a GPU's own memory, peer writes included.
// Both take 16-byte vectors (int4; 16-byte aligned) and 4- and 8-byte scalars.
#pragma once

#include <cstdint>

#include "uccl_ep/platform/platform.hpp"

#if defined(UCCL_EP_CUDA) || defined(UCCL_EP_HIP)
namespace uccl::ep::platform {

#if defined(UCCL_EP_CUDA)
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE int4 loadInput(const int4* p) {
  int4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
template <typename T>
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE T loadInput(const T* p) {
  return __ldg(p);
}
template <typename T>
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE T loadFresh(const T* p) {
  return __ldcg(p);
}
#else
// CDNA: a nontemporal load is issued with the cache-bypass bits (no stale vector-cache line), for both kinds.
template <typename T>
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE T loadFresh(const T* p) {
  if constexpr (sizeof(T) == 16) {
    using V4 = __attribute__((ext_vector_type(4))) int;
    const V4 v = __builtin_nontemporal_load(reinterpret_cast<const V4*>(p));
    T out;
    out.x = v[0];
    out.y = v[1];
    out.z = v[2];
    out.w = v[3];
    return out;
  } else {
    return __builtin_nontemporal_load(p);
  }
}
template <typename T>
UCCL_EP_DEVICE UCCL_EP_FORCEINLINE T loadInput(const T* p) {
  return loadFresh(p);
}
#endif

}  // namespace uccl::ep::platform
#endif
