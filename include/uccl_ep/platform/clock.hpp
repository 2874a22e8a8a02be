// A nanosecond clock usable from host and device code, for timeouts on spins.
#pragma once

#include <cstdint>

#include "uccl_ep/platform/platform.hpp"

#if !UCCL_EP_DEVICE_PASS
#include <sched.h>

#include <chrono>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#endif

namespace uccl::ep::platform {

UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint64_t nowNs() {
#if UCCL_EP_DEVICE_PASS && defined(UCCL_EP_CUDA)
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
#elif UCCL_EP_DEVICE_PASS && defined(UCCL_EP_HIP)
  // The constant wall clock of CDNA GPUs ticks at 100 MHz. s_memrealtime reads it directly: HIP before 5.4
  // (Debian's hipcc) has no wall_clock64().
  return __builtin_amdgcn_s_memrealtime() * 10;
#else
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
#endif
}

// One step of a spin-wait. A GPU keeps spinning (the wait is its whole job); a host thread pauses and, after a
// while, yields its core: host producers and consumers often outnumber the cores (tests, small machines), and
// a spinner that never yields can starve the very thread it waits for.
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE void spinRelax(uint32_t& spins) {
#if UCCL_EP_DEVICE_PASS
  (void)spins;
#else
  if (++spins < 64) {
#if defined(__x86_64__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
  } else {
    sched_yield();
  }
#endif
}

}  // namespace uccl::ep::platform
