// A diagnostic phase timeline of the low-latency kernels, compiled in only with -DUCCL_EP_LL_TIMELINE (a build for
// profiling: `CUDAFLAGS=-DUCCL_EP_LL_TIMELINE ./build.sh`; without it every call below is empty).
//
// Thread 0 of each block stamps the GPU's global timer at the end of each phase it runs (mark). The last block of
// a launch to finish prints one line per launch: for each phase, when the first and the last block reached it, in
// us after the earliest block started, then resets. A profiler gives a kernel's total; this says which phase of
// which part (send, receive) the time goes to, and how far the blocks spread, without replaying the kernel (a replay
// would re-send to the peers).
#pragma once

#if defined(UCCL_EP_LL_TIMELINE)
#include <cstdio>

#include "uccl_ep/platform/clock.hpp"
#endif

namespace uccl::ep::kernels::ll::timeline {

inline constexpr int kPhases = 8;

#if defined(UCCL_EP_LL_TIMELINE)
namespace {
// Per phase: the bitwise complement of the earliest stamp (so that a zero-initialized atomicMax finds the minimum)
// and the latest stamp; the blocks that finished. One set per translation unit, i.e. per kernel.
__device__ unsigned long long g_first_not[kPhases];
__device__ unsigned long long g_last[kPhases];
__device__ unsigned g_blocks_done;
}  // namespace

__device__ inline void mark(int phase) {
  if (threadIdx.x != 0) return;
  const unsigned long long t = platform::nowNs();
  atomicMax(&g_first_not[phase], ~t);
  atomicMax(&g_last[phase], t);
}

// Every block of the launch calls this once, at its end. `names` holds kPhases names (nullptr: unused).
__device__ inline void finish(const char* kernel, const char* const names[kPhases]) {
  __syncthreads();
  if (threadIdx.x != 0) return;
  __threadfence();
  if (atomicAdd(&g_blocks_done, 1u) + 1u != gridDim.x) return;
  __threadfence();
  const unsigned long long t0 = ~g_first_not[0];
  for (int p = 0; p < kPhases; ++p) {
    if (names[p] != nullptr && g_last[p] != 0) {
      printf("timeline %s grid %u phase %d %s first %.2f last %.2f us\n", kernel, gridDim.x, p, names[p],
             1e-3 * static_cast<double>(~g_first_not[p] - t0), 1e-3 * static_cast<double>(g_last[p] - t0));
    }
    g_first_not[p] = 0;
    g_last[p] = 0;
  }
  g_blocks_done = 0;
  __threadfence();
}
#else
__device__ __forceinline__ void mark(int) {}
__device__ __forceinline__ void finish(const char*, const char* const*) {}
#endif

}  // namespace uccl::ep::kernels::ll::timeline
