// Normal-mode kernels within one memory domain, the steps both calls share: get_dispatch_layout and the 1-block
// waits (see intranode.hpp for the protocol and the layout; intranode_dispatch.cu and intranode_combine.cu hold
// the grid kernels of each call).
//
// layout       blocks over tokens; per-block shared-memory histograms of experts, ranks and nodes, flushed with
//              one atomic per nonzero bin.
// reuse        1 block: seq += 1, then wait for every peer's done word to reach the previous epoch.
// publish      1 block: ready = epoch; wait for every source's ready; the prefix matrix and the counts.
// arrive       1 block: pushed[self] = epoch at every peer; wait for every source's pushed word (staged path).
// finish       1 block: done[self] = epoch at every peer.
#include "kernels/intranode_device.cuh"
#include "kernels/intranode_steps.hpp"
#include "kernels/launch.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"

namespace uccl::ep::kernels::intranode {
namespace {

using namespace dev;

// ---- get_dispatch_layout ----------------------------------------------------------------------------------
__global__ void layoutKernel(LayoutArgs a) {
  extern __shared__ int32_t hist[];  // [E] experts, [R] ranks, [nodes]
  const int nodes = a.num_tokens_per_rdma_rank ? (a.num_ranks + a.ranks_per_node - 1) / a.ranks_per_node : 0;
  int32_t* h_expert = hist;
  int32_t* h_rank = hist + a.num_experts;
  int32_t* h_node = h_rank + a.num_ranks;
  const int bins = a.num_experts + a.num_ranks + nodes;
  for (int i = threadIdx.x; i < bins; i += blockDim.x) hist[i] = 0;
  __syncthreads();
  const int per_rank = a.num_experts / a.num_ranks;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < a.num_tokens; t += gridDim.x * blockDim.x) {
    const int64_t* row = a.topk_idx + static_cast<size_t>(t) * a.num_topk;
    for (int k = 0; k < a.num_topk; ++k) {
      const int64_t e = row[k];
      if (e < -1 || e >= a.num_experts) {
        if (a.error) recordError(a.error, kBadExpertId, kOpLayout, -1, -1, static_cast<uint64_t>(e), t, k);
        continue;
      }
      if (e < 0) continue;
      bool seen_expert = false, seen_rank = false, seen_node = false;
      const int r = static_cast<int>(e / per_rank);
      for (int j = 0; j < k; ++j) {
        const int64_t f = row[j];
        if (f < 0 || f >= a.num_experts) continue;
        seen_expert |= f == e;
        const int rf = static_cast<int>(f / per_rank);
        seen_rank |= rf == r;
        seen_node |= rf / a.ranks_per_node == r / a.ranks_per_node;
      }
      if (!seen_expert) atomicAdd(&h_expert[e], 1);
      if (!seen_rank) {
        atomicAdd(&h_rank[r], 1);
        a.is_token_in_rank[static_cast<size_t>(t) * a.num_ranks + r] = true;
      }
      if (nodes > 0 && !seen_node) atomicAdd(&h_node[r / a.ranks_per_node], 1);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < bins; i += blockDim.x) {
    if (hist[i] == 0) continue;
    int32_t* dst = i < a.num_experts                 ? &a.num_tokens_per_expert[i]
                   : i < a.num_experts + a.num_ranks ? &a.num_tokens_per_rank[i - a.num_experts]
                                                     : &a.num_tokens_per_rdma_rank[i - a.num_experts - a.num_ranks];
    atomicAdd(dst, hist[i]);
  }
}

// ---- the 1-block steps --------------------------------------------------------------------------------------
__global__ void reuseKernel(Context ctx) {
  __shared__ uint64_t epoch;
  if (threadIdx.x == 0) {
    epoch = epochOf(ctx) + 1;
    platform::storeRelaxed<Scope::kDevice>(word(ctx.self, kSeqOff), epoch);
    platform::storeRelaxed<Scope::kDevice>(word(ctx.self, kClaimSendOff), 0);
    platform::storeRelaxed<Scope::kDevice>(word(ctx.self, kClaimRecvOff), 0);
  }
  __syncthreads();
  if (blockFailed(ctx)) return;
  const uint64_t target = epoch - 1;
  waitAll(
      ctx, [&](int r) { return word(ctx.self, kHeaderBytes + size_t(r) * 8); }, target, kOpReuse);
}

// Dispatch (count=true): also the prefix matrix, the receive total and the per-expert counts.
__global__ void publishKernel(Context ctx, Layout l, bool count, bool report_to_host, int32_t* prefix,
                              bool have_expert_counts) {
  const uint64_t e = epochOf(ctx);
  __threadfence_system();
  __syncthreads();
  if (threadIdx.x == 0) platform::storeRelease<Scope::kSystem>(word(ctx.self, kReadyOff), e);
  if (blockFailed(ctx)) return;
  if (!waitAll(
          ctx, [&](int r) { return word(ctx.peers[r], kReadyOff); }, e, kOpReady))
    return;
  if (!count) return;
  // Every source's counts were written before its release of ready, which waitAll acquired. The loads are relaxed
  // at system scope: the words live in peer GPUs' memory, written by those GPUs.
  const int R = ctx.num_ranks;
  for (int j = threadIdx.x; j < R; j += blockDim.x) {
    int32_t acc = 0;
    for (int i = 0; i < R; ++i) {
      acc += platform::loadRelaxed<Scope::kSystem>(ints(ctx.peers[i], l.counts_off) + j);
      prefix[i * R + j] = acc;
    }
  }
  __syncthreads();
  const int32_t total = prefix[(R - 1) * R + ctx.rank];
  const int per_rank = l.num_experts / R;
  if (!report_to_host) return;
  for (int le = threadIdx.x; le < per_rank; le += blockDim.x) {
    int32_t acc = 0;
    if (have_expert_counts) {
      for (int s = 0; s < R; ++s) {
        acc += platform::loadRelaxed<Scope::kSystem>(ints(ctx.peers[s], l.expert_counts_off) + ctx.rank * per_rank + le);
      }
    }
    ctx.host_counts->per_expert[le] = acc;
  }
  // HostCounts publication (intranode.hpp): the barrier makes every thread's per_expert stores observed by thread 0,
  // the system fence orders them (and num_recv) before the release store of ready that the host acquires.
  __syncthreads();
  if (threadIdx.x == 0) {
    ctx.host_counts->num_recv = total;
    platform::fenceAcqRel<Scope::kSystem>();
    platform::storeRelease<Scope::kSystem>(reinterpret_cast<uint64_t*>(&ctx.host_counts->ready), e);
  }
}

__global__ void finishKernel(Context ctx) {
  const uint64_t e = epochOf(ctx);
  __threadfence_system();
  for (int s = threadIdx.x; s < ctx.num_ranks; s += blockDim.x) {
    platform::storeRelease<Scope::kSystem>(word(ctx.peers[s], kHeaderBytes + size_t(ctx.rank) * 8), e);
  }
}

__global__ void arriveKernel(Context ctx, size_t pushed_off) {
  const uint64_t e = epochOf(ctx);
  // The push kernel's remote stores completed with it; the fence orders them before the pushed words at system scope.
  __threadfence_system();
  __syncthreads();
  for (int p = threadIdx.x; p < ctx.num_ranks; p += blockDim.x) {
    platform::storeRelease<Scope::kSystem>(word(ctx.peers[p], pushed_off + size_t(ctx.rank) * 8), e);
  }
  if (blockFailed(ctx)) return;
  waitAll(
      ctx, [&](int s) { return word(ctx.self, pushed_off + size_t(s) * 8); }, e, kOpArrive);
}

// One carveout for every kernel, low-latency and normal alike (launch.hpp says why).
void setCarveout() {
  static const bool once = [] {
    preferMaxShared({reinterpret_cast<const void*>(&layoutKernel), reinterpret_cast<const void*>(&reuseKernel),
                     reinterpret_cast<const void*>(&publishKernel), reinterpret_cast<const void*>(&finishKernel),
                     reinterpret_cast<const void*>(&arriveKernel)});
    return true;
  }();
  (void)once;
}

}  // namespace

void launchLayout(const LayoutArgs& a, void* stream) {
  auto s = static_cast<gpuStream_t>(stream);
  setCarveout();
  const int nodes = a.num_tokens_per_rdma_rank ? (a.num_ranks + a.ranks_per_node - 1) / a.ranks_per_node : 0;
  checkLaunch(gpuMemsetAsync(a.num_tokens_per_rank, 0, sizeof(int32_t) * a.num_ranks, s), "layout (zero)");
  checkLaunch(gpuMemsetAsync(a.num_tokens_per_expert, 0, sizeof(int32_t) * a.num_experts, s), "layout (zero)");
  if (nodes > 0) checkLaunch(gpuMemsetAsync(a.num_tokens_per_rdma_rank, 0, sizeof(int32_t) * nodes, s), "layout (zero)");
  if (a.num_tokens > 0) {
    checkLaunch(gpuMemsetAsync(a.is_token_in_rank, 0, static_cast<size_t>(a.num_tokens) * a.num_ranks, s),
                "layout (zero)");
  }
  const size_t shm = sizeof(int32_t) * (a.num_experts + a.num_ranks + nodes);
  int blocks = (a.num_tokens + 255) / 256;
  blocks = blocks < 1 ? 1 : (blocks > 132 ? 132 : blocks);
  layoutKernel<<<blocks, 256, shm, s>>>(a);
  checkLaunch(gpuGetLastError(), "get_dispatch_layout");
}

void launchReuse(const Context& ctx, gpuStream_t s, const char* call) {
  setCarveout();
  reuseKernel<<<1, kWaitThreads, 0, s>>>(ctx);
  checkLaunch(gpuGetLastError(), call);
}

void launchPublish(const Context& ctx, const Layout& l, bool count, bool report_to_host, int32_t* prefix,
                   bool have_expert_counts, gpuStream_t s) {
  setCarveout();
  publishKernel<<<1, kWaitThreads, 0, s>>>(ctx, l, count, report_to_host, prefix, have_expert_counts);
  checkLaunch(gpuGetLastError(), "dispatch (publish)");
}

void launchArrive(const Context& ctx, size_t pushed_off, gpuStream_t s, const char* call) {
  setCarveout();
  arriveKernel<<<1, kWaitThreads, 0, s>>>(ctx, pushed_off);
  checkLaunch(gpuGetLastError(), call);
}

void launchFinish(const Context& ctx, gpuStream_t s, const char* call) {
  setCarveout();
  finishKernel<<<1, kWaitThreads, 0, s>>>(ctx);
  checkLaunch(gpuGetLastError(), call);
}

}  // namespace uccl::ep::kernels::intranode
