// The barrier of clean_low_latency_buffer (low_latency.hpp: launchCleanBarrier; ll_layout.hpp: the clean epoch
// words). One block, one kernel named `clean_barrier`:
//
// arrive   each thread takes peers p != rank (masked ones skipped) and adds 1 to this rank's clean epoch word at p:
//          over NVLink a system-scope add into p's GPU signal words, else a SIGNAL descriptor through the ring (the
//          proxy adds it to p's host-mapped words). The caller zeroed this rank's call words and scratch before the
//          launch (stream order, and a host write before it for the proxy words), so a peer that sees the arrival and
//          goes on to its next dispatch adds into zeroed words.
// wait     each thread takes sources s != rank (masked ones skipped) and polls s's clean epoch word here (GPU words for
//          NVLink sources, host-mapped ones for proxy sources) until it reaches `call` (cleanJoined), every wait by one
//          deadline, the timeout after the start (ll_clean.hpp: the protocol). A source that does not join is masked
//          with enable_shrink; without it it is flagged in `absent` and the block records one kTimeout naming the
//          lowest such rank, the call number and how many did not join (the host reads `absent` once the kernel has
//          ended, to name them all).
#include "kernels/launch.hpp"
#include "kernels/ll_clean.hpp"
#include "kernels/ll_device.cuh"

namespace uccl::ep::kernels::ll {
namespace {

using namespace device;

inline constexpr int kCleanThreads = 256;

__global__ void __launch_bounds__(kCleanThreads) clean_barrier(Context ctx, CleanArgs args) {
  const uint64_t call = args.call;
  const int R = ctx.layout.num_ranks;
  __shared__ int first_missing;
  __shared__ int num_missing;
  if (threadIdx.x == 0) {
    first_missing = R;
    num_missing = 0;
  }
  const uint64_t deadline = platform::nowNs() + ctx.timeout_ns;  // every wait below ends by it
  cleanBeforeArrivals();
  for (int p = threadIdx.x; p < R; p += blockDim.x) {
    if (p == ctx.rank || masked(ctx, p)) continue;
    const size_t w = cleanEpochIndex(ctx.rank);
    if (ctx.peer_gpu_signals[p] != nullptr) {
      cleanArrive(word(ctx.peer_gpu_signals[p] + w));
    } else {
      proxySend(ctx, p, p, 0, 0, 0, w, 1, kOpClean, -1);  // no WRITE: the SIGNAL alone
    }
  }
  __syncthreads();  // also orders the shared initial values before the atomics below
  for (int s = threadIdx.x; s < R; s += blockDim.x) {
    if (s == ctx.rank || masked(ctx, s)) continue;
    const bool nvl = ctx.peer_gpu_base[s] != nullptr;
    const uint64_t* w = word((nvl ? ctx.gpu_signals : ctx.rdma_signals) + cleanEpochIndex(s));
    if (cleanWaitJoined(w, call, deadline)) continue;
    if (ctx.enable_shrink) {
      atomicExch(&ctx.mask[s], 1);
    } else {
      args.absent[s] = 1;
      atomicMin(&first_missing, s);
      atomicAdd(&num_missing, 1);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0 && num_missing > 0) {
    recordError(ctx.error, kTimeout, kOpClean, first_missing, -1, (call << 32) | static_cast<uint32_t>(num_missing));
  }
}

}  // namespace

void launchCleanBarrier(const Context& ctx, const CleanArgs& args, void* stream) {
  static SharedMemoryLimit limit(reinterpret_cast<const void*>(&clean_barrier));  // the common carveout
  clean_barrier<<<1, kCleanThreads, 0, static_cast<gpuStream_t>(stream)>>>(ctx, args);
  checkLaunch(gpuGetLastError(), "clean_barrier");
}

}  // namespace uccl::ep::kernels::ll
