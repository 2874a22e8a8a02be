// A nanosecond clock usable from host and device code, for timeouts on spins.
#pragma once

#include <cstdint>

#include "uccl_ep/platform/platform.hpp"

#if !UCCL_EP_DEVICE_PASS
#include <chrono>
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

}  // namespace uccl::ep::platform
