// Normal-mode kernels within one memory domain (see intranode.hpp for the protocol and the layout).
//
// layout       blocks over tokens; per-block shared-memory histograms of experts, ranks and nodes, flushed with
//              one atomic per nonzero bin.
// reuse        1 block: seq += 1, then wait for every peer's done word to reach the previous epoch.
// plan         grid: blocks scan is_token_in_rank per destination (ballot prefix sums) into the ordered lists and
//              send_pos; counts per destination and per expert into the own header area.
// publish      1 block: ready = epoch; wait for every source's ready; the prefix matrix and the counts.
// push         grid: dispatch: warps store own tokens into each destination's staging (work items of send_tokens
//              rows per warp); combine: warps store received rows back into their sources' buffers.
// arrive       1 block: pushed[self] = epoch at every peer; wait for every source's pushed word.
// unpack       grid: dispatch: own staging -> the outputs, rows already in receive order.
// reduce       grid: combine: per own token, the sum of the rows every rank sent back, in rank order.
// finish       1 block: done[self] = epoch at every peer.
#include "kernels/intranode.hpp"

#include "kernels/launch.hpp"
#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/platform/numeric.hpp"
#include "uccl_ep/platform/warp.hpp"

namespace uccl::ep::kernels::intranode {
namespace {

using platform::kWarpSize;
using platform::Scope;

constexpr int kThreads = 512;
constexpr int kWaitThreads = 256;

__device__ __forceinline__ uint64_t* word(uint8_t* base, size_t off) { return reinterpret_cast<uint64_t*>(base + off); }
__device__ __forceinline__ const int32_t* ints(const uint8_t* base, size_t off) {
  return reinterpret_cast<const int32_t*>(base + off);
}
// seq is this rank's own word, written only by its reuse kernel; later kernels on the stream read it. Device scope,
// relaxed: the kernel boundary orders the write before the reads, and no other agent writes it.
__device__ __forceinline__ uint64_t epochOf(const Context& ctx) {
  return platform::loadRelaxed<Scope::kDevice>(word(ctx.self, kSeqOff));
}
__device__ __forceinline__ bool failed(const Context& ctx) { return errorRecorded(ctx.error); }
// The error record is host-mapped: every read of it crosses PCIe. A block reads it once (thread 0) and shares the
// answer; read by every thread of a grid, it cost more than the copy (hundreds of us for 24 x 512 reads, growing
// with the grid). All threads of the block must call it. A failure is never cleared, so a thread that reads a
// later call's value sees the same or a newer answer.
__device__ __forceinline__ bool blockFailed(const Context& ctx) {
  __shared__ int stop;
  if (threadIdx.x == 0) stop = failed(ctx) ? 1 : 0;
  __syncthreads();
  return stop != 0;
}

// Threads of the block share out the ranks and wait until rank r's word `peer_word(r)` reaches
// `target`. A timeout records the rank and returns false for the whole block.
template <typename PeerWord>
__device__ bool waitAll(const Context& ctx, PeerWord peer_word, uint64_t target, int32_t op) {
  __shared__ int any_timeout;
  if (threadIdx.x == 0) any_timeout = 0;
  __syncthreads();
  const uint64_t start = platform::nowNs();
  for (int r = threadIdx.x; r < ctx.num_ranks; r += blockDim.x) {
    uint64_t* w = peer_word(r);
    uint64_t v;
    while ((v = platform::loadAcquire<Scope::kSystem>(w)) < target) {
      if (platform::nowNs() - start > ctx.timeout_ns) {
        recordError(ctx.error, kTimeout, op, r, -1, (target << 8) | (v & 0xff));
        any_timeout = 1;
        break;
      }
      if (failed(ctx)) break;  // another thread already timed out: stop waiting for the rest
    }
  }
  __syncthreads();
  return any_timeout == 0 && !blockFailed(ctx);
}

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
      if (e < 0 || e >= a.num_experts) continue;
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

// ---- dispatch -----------------------------------------------------------------------------------------------
// Rows are copied 16 bytes per lane, kCopyUnroll loads in flight per lane before their stores: a row is a few
// hundred vectors, and the copy is bound by how many loads each warp keeps in flight. 8 measured slower than 4 for
// the dispatch push (2026-11-29, two H200s).
constexpr int kCopyUnroll = 4;

__device__ __forceinline__ void copyWarp(uint8_t* dst, const uint8_t* src, size_t bytes) {
  // bytes is a multiple of 16 and both ends are 16-byte aligned (checked by the launcher)
  const int lane = platform::laneId();
  const size_t n = bytes / 16;
  const int4* s = reinterpret_cast<const int4*>(src);
  int4* d = reinterpret_cast<int4*>(dst);
  size_t i = lane;
  for (; i + (kCopyUnroll - 1) * kWarpSize < n; i += kCopyUnroll * kWarpSize) {
    int4 v[kCopyUnroll];
#pragma unroll
    for (int u = 0; u < kCopyUnroll; ++u) v[u] = s[i + u * kWarpSize];
#pragma unroll
    for (int u = 0; u < kCopyUnroll; ++u) d[i + u * kWarpSize] = v[u];
  }
  for (; i < n; i += kWarpSize) d[i] = s[i];
}

__global__ void __launch_bounds__(kThreads) dispatchPlanKernel(Context ctx, DispatchArgs a) {
  extern __shared__ int32_t warp_sums[];
  if (blockFailed(ctx)) return;
  const Layout& l = a.layout;
  const int T = a.num_tokens, R = ctx.num_ranks;
  const int lane = platform::laneId(), warp = platform::warpId(), nwarps = platform::numWarps();
  // per-destination lists: block b scans destinations b, b + grid, ...
  int32_t* lists = reinterpret_cast<int32_t*>(ctx.self + l.listsOff());
  for (int r = blockIdx.x; r < R; r += gridDim.x) {
    int total = 0;
    for (int base = 0; base < T; base += blockDim.x) {
      const int t = base + static_cast<int>(threadIdx.x);
      const bool hit = t < T && a.is_token_in_rank[static_cast<size_t>(t) * R + r];
      const uint64_t bits = platform::ballot(hit);
      const int before = platform::popcount64(bits & ((uint64_t{1} << lane) - 1));
      if (lane == 0) warp_sums[warp] = platform::popcount64(bits);
      __syncthreads();
      int offset = 0, chunk = 0;
      for (int i = 0; i < nwarps; ++i) {
        offset += i < warp ? warp_sums[i] : 0;
        chunk += warp_sums[i];
      }
      if (hit) lists[static_cast<size_t>(r) * T + total + offset + before] = t;
      if (a.send_pos && t < T) a.send_pos[static_cast<size_t>(t) * R + r] = hit ? total + offset + before : -1;
      total += chunk;
      __syncthreads();
    }
    if (threadIdx.x == 0) reinterpret_cast<int32_t*>(ctx.self + l.counts_off)[r] = total;
  }
  if (blockIdx.x == 0) {
    int32_t* ec = reinterpret_cast<int32_t*>(ctx.self + l.expert_counts_off);
    for (int i = threadIdx.x; i < l.num_experts; i += blockDim.x)
      ec[i] = a.num_tokens_per_expert ? a.num_tokens_per_expert[i] : 0;
    if (threadIdx.x == 0) *reinterpret_cast<int32_t*>(ctx.self + kNumTokensOff) = T;
  }
}

// Rows `first`..`last` of work list `count` for warp `global_warp` of `warps`, in items of `step` rows.
#define UCCL_EP_FOR_ITEMS(first, count, step, global_warp, warps) \
  for (int64_t first = (global_warp) * (step); first < (count); first += (warps) * (step))

__global__ void __launch_bounds__(kThreads) dispatchPushKernel(Context ctx, DispatchArgs a, const int32_t* prefix) {
  extern __shared__ int64_t push_smem[];  // [R] byte offset of this rank's first row in r's buffer, [R] rows to r
  if (blockFailed(ctx)) return;
  const Layout& l = a.layout;
  const int R = ctx.num_ranks, K = l.num_topk, me = ctx.rank, T = a.num_tokens;
  int64_t* base = push_smem;
  int64_t* cnt = push_smem + R;
  for (int r = threadIdx.x; r < R; r += blockDim.x) {
    const int32_t before = me > 0 ? prefix[(me - 1) * R + r] : 0;
    cnt[r] = prefix[me * R + r] - before;
    // Written by r's plan kernel before its release of ready, acquired by this rank's publish kernel earlier on the
    // stream. System scope: the word is in peer GPU memory.
    const int Tr = platform::loadRelaxed<Scope::kSystem>(ints(ctx.peers[r], kNumTokensOff));
    const size_t need = l.dispatchBytes(Tr, prefix[(R - 1) * R + r]);
    if (need > ctx.buffer_bytes) {
      recordError(ctx.error, kSlotOverflow, kOpNvlOverflow, r, -1, need);
      cnt[r] = 0;
    }
    base[r] = static_cast<int64_t>(l.stagingOff(Tr) + static_cast<size_t>(before) * l.token_stride);
  }
  __syncthreads();
  const int lane = platform::laneId(), warp = platform::warpId(), nwarps = platform::numWarps();
  const int step = ctx.send_tokens > 0 ? ctx.send_tokens : 1;
  const int64_t global_warp = static_cast<int64_t>(blockIdx.x) * nwarps + warp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * nwarps;
  const int32_t* lists = ints(ctx.self, l.listsOff());
  const int32_t* sc = static_cast<const int32_t*>(a.x_scales);
  for (int r = 0; r < R; ++r) {
    uint8_t* dst_base = ctx.peers[r] + base[r];
    UCCL_EP_FOR_ITEMS(first, cnt[r], step, global_warp, warps) {
      const int64_t last = first + step < cnt[r] ? first + step : cnt[r];
      for (int64_t j = first; j < last; ++j) {
        const int t = lists[static_cast<size_t>(r) * T + j];
        uint8_t* dst = dst_base + j * l.token_stride;
        copyWarp(dst, static_cast<const uint8_t*>(a.x) + static_cast<size_t>(t) * a.x_row_stride, l.hidden_bytes);
        for (int k = lane; k < K; k += kWarpSize) {
          reinterpret_cast<int64_t*>(dst + l.idxOff())[k] = a.topk_idx[static_cast<size_t>(t) * K + k];
          reinterpret_cast<float*>(dst + l.weightsOff())[k] =
              a.topk_weights ? a.topk_weights[static_cast<size_t>(t) * K + k] : 0.0f;
        }
        for (int c = lane; c < a.num_scales; c += kWarpSize) {
          reinterpret_cast<int32_t*>(dst + l.scalesOff())[c] =
              sc[t * a.x_scales_token_stride + c * a.x_scales_col_stride];
        }
        if (lane == 0) *reinterpret_cast<int32_t*>(dst + l.srcIdxOff()) = t;
      }
    }
  }
}

__global__ void __launch_bounds__(kThreads) dispatchUnpackKernel(Context ctx, DispatchArgs a, const int32_t* prefix) {
  if (blockFailed(ctx)) return;
  const Layout& l = a.layout;
  const int R = ctx.num_ranks, K = l.num_topk, me = ctx.rank;
  int64_t total = prefix[(R - 1) * R + me];
  const size_t need = l.dispatchBytes(a.num_tokens, total);
  if (need > ctx.buffer_bytes) {  // the sources stored nothing here
    if (blockIdx.x == 0 && threadIdx.x == 0) recordError(ctx.error, kSlotOverflow, kOpNvlOverflow, me, -1, need);
    return;
  }
  if ((a.num_worst_tokens > 0) && total > a.out.num_recv_tokens) {
    if (blockIdx.x == 0 && threadIdx.x == 0) recordError(ctx.error, kSlotOverflow, kOpWorstOverflow, me, -1, total);
    total = a.out.num_recv_tokens;
  }
  const uint8_t* staging = ctx.self + l.stagingOff(a.num_tokens);
  const int per_rank = l.num_experts / R;
  const int lane = platform::laneId(), warp = platform::warpId(), nwarps = platform::numWarps();
  const int step = ctx.send_tokens > 0 ? ctx.send_tokens : 1;
  const int64_t global_warp = static_cast<int64_t>(blockIdx.x) * nwarps + warp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * nwarps;
  UCCL_EP_FOR_ITEMS(first, a.out.num_recv_tokens, step, global_warp, warps) {
    const int64_t last = first + step < a.out.num_recv_tokens ? first + step : a.out.num_recv_tokens;
    for (int64_t g = first; g < last; ++g) {
      if (g >= total) {  // num_worst_tokens padding
        for (int k = lane; k < K; k += kWarpSize) {
          if (a.out.recv_topk_idx) a.out.recv_topk_idx[g * K + k] = -1;
          if (a.out.recv_topk_weights) a.out.recv_topk_weights[g * K + k] = 0.0f;
        }
        if (lane == 0 && a.out.recv_src_idx) a.out.recv_src_idx[g] = -1;
        continue;
      }
      const uint8_t* tok = staging + g * l.token_stride;
      copyWarp(static_cast<uint8_t*>(a.out.recv_x) + g * l.hidden_bytes, tok, l.hidden_bytes);
      for (int k = lane; k < K; k += kWarpSize) {
        const int64_t e = reinterpret_cast<const int64_t*>(tok + l.idxOff())[k];
        const bool mine = e >= static_cast<int64_t>(me) * per_rank && e < static_cast<int64_t>(me + 1) * per_rank;
        if (a.out.recv_topk_idx) a.out.recv_topk_idx[g * K + k] = mine ? e - static_cast<int64_t>(me) * per_rank : -1;
        if (a.out.recv_topk_weights) {
          a.out.recv_topk_weights[g * K + k] = mine ? reinterpret_cast<const float*>(tok + l.weightsOff())[k] : 0.0f;
        }
      }
      if (a.out.recv_x_scales) {
        const int32_t* sc = reinterpret_cast<const int32_t*>(tok + l.scalesOff());
        int32_t* out = reinterpret_cast<int32_t*>(a.out.recv_x_scales) + g * a.num_scales;
        for (int c = lane; c < a.num_scales; c += kWarpSize) out[c] = sc[c];
      }
      if (lane == 0 && a.out.recv_src_idx) a.out.recv_src_idx[g] = *reinterpret_cast<const int32_t*>(tok + l.srcIdxOff());
    }
  }
}

// ---- combine ------------------------------------------------------------------------------------------------
// Rows a rank sends back to source s land in s's buffer in blocks by rank: the block of rank r starts after the rows
// of the ranks before r, count(s -> r') = prefix[s][r'] - prefix[s-1][r'] (the handle's inclusive prefix matrix).
__device__ __forceinline__ int32_t countOf(const int32_t* prefix, int R, int s, int r) {
  return prefix[s * R + r] - (s > 0 ? prefix[(s - 1) * R + r] : 0);
}

__global__ void __launch_bounds__(kThreads) combinePushKernel(Context ctx, CombineArgs a) {
  extern __shared__ int64_t comb_smem[];  // [R] inclusive rows held from sources <= s, [R] byte offset at source s
  if (blockFailed(ctx)) return;
  const Layout& l = a.layout;
  const int R = ctx.num_ranks, me = ctx.rank;
  const int32_t* prefix = a.rank_prefix_matrix;
  int64_t* col = comb_smem;
  int64_t* base = comb_smem + R;
  for (int s = threadIdx.x; s < R; s += blockDim.x) {
    col[s] = prefix[s * R + me];
    int64_t before = 0, rows = 0;
    for (int r = 0; r < R; ++r) {
      const int32_t c = countOf(prefix, R, s, r);
      before += r < me ? c : 0;
      rows += c;
    }
    const size_t need = l.combineBytes(static_cast<int>(rows));
    base[s] = need > ctx.buffer_bytes ? -1 : static_cast<int64_t>(l.data_off + before * l.combine_row_stride);
    if (need > ctx.buffer_bytes) recordError(ctx.error, kSlotOverflow, kOpNvlOverflow, s, -1, need);
  }
  __syncthreads();
  const int lane = platform::laneId(), warp = platform::warpId(), nwarps = platform::numWarps();
  const size_t row_bytes = static_cast<size_t>(a.hidden) * 2;
  const int step = ctx.send_tokens > 0 ? ctx.send_tokens : 1;
  const int64_t global_warp = static_cast<int64_t>(blockIdx.x) * nwarps + warp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * nwarps;
  UCCL_EP_FOR_ITEMS(first, a.num_recv_tokens, step, global_warp, warps) {
    // the source of `first`: the first s with col[s] > first (binary search over the inclusive prefix)
    int lo = 0, hi = R - 1;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (col[mid] > first)
        hi = mid;
      else
        lo = mid + 1;
    }
    int s = lo;
    const int64_t last = first + step < a.num_recv_tokens ? first + step : a.num_recv_tokens;
    for (int64_t g = first; g < last; ++g) {
      if (g >= col[R - 1]) break;  // num_worst_tokens padding rows go nowhere
      while (col[s] <= g) ++s;
      if (base[s] < 0) continue;
      const int64_t j = g - (s > 0 ? col[s - 1] : 0);
      uint8_t* dst = ctx.peers[s] + base[s] + j * l.combine_row_stride;
      copyWarp(dst, static_cast<const uint8_t*>(a.x) + g * row_bytes, row_bytes);
      if (a.topk_weights) {
        for (int k = lane; k < a.num_topk; k += kWarpSize) {
          reinterpret_cast<float*>(dst + row_bytes)[k] = a.topk_weights[static_cast<size_t>(g) * a.num_topk + k];
        }
      }
    }
  }
}

constexpr int kSumUnroll = 4;

__device__ __forceinline__ void addBf16x8(float* acc, int4 raw) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(&raw);
#pragma unroll
  for (int c = 0; c < 8; ++c) acc[c] += platform::bf16ToFloat(h[c]);
}

// One warp per token. The warp first lists the rows to add (one per rank the token went to, in rank order) in
// its shared-memory slice, then each lane sums 8 channels at a time over that list. Every row is in this rank's own
// buffer (the ranks pushed them): local reads.
__global__ void __launch_bounds__(kThreads) combineReduceKernel(Context ctx, CombineArgs a, int warps_per_block) {
  extern __shared__ int64_t reduce_smem[];  // [R] byte offset of rank r's block here, then [warps][R] row pointers
  if (blockFailed(ctx)) return;
  const Layout& l = a.layout;
  const int R = ctx.num_ranks, me = ctx.rank, K = a.num_topk;
  int64_t* block_of = reduce_smem;
  const uint8_t** rows_of = reinterpret_cast<const uint8_t**>(reduce_smem + R);
  if (threadIdx.x == 0) {
    int64_t rows = 0;
    for (int r = 0; r < R; ++r) {
      block_of[r] = static_cast<int64_t>(l.data_off + rows * l.combine_row_stride);
      rows += countOf(a.rank_prefix_matrix, R, me, r);
    }
    if (l.combineBytes(static_cast<int>(rows)) > ctx.buffer_bytes) block_of[0] = -1;  // the ranks stored nothing
  }
  __syncthreads();
  if (block_of[0] < 0) return;
  const int lane = platform::laneId(), warp = platform::warpId();
  const uint8_t** mine = rows_of + static_cast<size_t>(warp) * R;
  const int vecs = a.hidden / 8;
  const size_t row_bytes = static_cast<size_t>(a.hidden) * 2;
  for (int t = blockIdx.x * warps_per_block + warp; t < a.num_tokens; t += gridDim.x * warps_per_block) {
    int n = 0;
    for (int base = 0; base < R; base += kWarpSize) {
      const int r = base + lane;
      const int pos = r < R ? a.send_pos[static_cast<size_t>(t) * R + r] : -1;
      const uint64_t bits = platform::ballot(pos >= 0);
      if (pos >= 0) {
        const int before = platform::popcount64(bits & ((uint64_t{1} << lane) - 1));
        mine[n + before] = ctx.self + block_of[r] + static_cast<size_t>(pos) * l.combine_row_stride;
      }
      n += platform::popcount64(bits);
    }
    platform::syncWarp();
    const int4* b0 =
        a.bias_0
            ? reinterpret_cast<const int4*>(static_cast<const uint16_t*>(a.bias_0) + static_cast<size_t>(t) * a.hidden)
            : nullptr;
    const int4* b1 =
        a.bias_1
            ? reinterpret_cast<const int4*>(static_cast<const uint16_t*>(a.bias_1) + static_cast<size_t>(t) * a.hidden)
            : nullptr;
    int4* out = reinterpret_cast<int4*>(static_cast<uint16_t*>(a.combined_x) + static_cast<size_t>(t) * a.hidden);
    // kSumUnroll vectors per lane at a time, so each row contributes that many loads in flight.
    for (int v0 = lane; v0 < vecs; v0 += kSumUnroll * kWarpSize) {
      float acc[kSumUnroll][8] = {};
      for (int i = 0; i < n; ++i) {
        const int4* row = reinterpret_cast<const int4*>(mine[i]);
        int4 raw[kSumUnroll];
#pragma unroll
        for (int u = 0; u < kSumUnroll; ++u) {
          const int v = v0 + u * kWarpSize;
          raw[u] = v < vecs ? row[v] : int4{0, 0, 0, 0};
        }
#pragma unroll
        for (int u = 0; u < kSumUnroll; ++u) addBf16x8(acc[u], raw[u]);
      }
#pragma unroll
      for (int u = 0; u < kSumUnroll; ++u) {
        const int v = v0 + u * kWarpSize;
        if (v >= vecs) break;
        if (b0) addBf16x8(acc[u], b0[v]);
        if (b1) addBf16x8(acc[u], b1[v]);
        int4 packed;
        uint16_t* o = reinterpret_cast<uint16_t*>(&packed);
#pragma unroll
        for (int c = 0; c < 8; ++c) o[c] = platform::floatToBf16(acc[u][c]);
        out[v] = packed;
      }
    }
    if (a.combined_topk_weights) {
      for (int k = lane; k < K; k += kWarpSize) {
        float w = 0.0f;
        for (int i = 0; i < n; ++i) w += reinterpret_cast<const float*>(mine[i] + row_bytes)[k];
        a.combined_topk_weights[static_cast<size_t>(t) * K + k] = w;
      }
    }
    platform::syncWarp();
  }
}

// One carveout for every kernel, low-latency and normal alike (launch.hpp says why).
void setCarveout() {
  static const bool once = [] {
    preferMaxShared(
        {reinterpret_cast<const void*>(&layoutKernel), reinterpret_cast<const void*>(&reuseKernel),
         reinterpret_cast<const void*>(&publishKernel), reinterpret_cast<const void*>(&finishKernel),
         reinterpret_cast<const void*>(&arriveKernel), reinterpret_cast<const void*>(&dispatchPlanKernel),
         reinterpret_cast<const void*>(&dispatchPushKernel), reinterpret_cast<const void*>(&dispatchUnpackKernel),
         reinterpret_cast<const void*>(&combinePushKernel), reinterpret_cast<const void*>(&combineReduceKernel)});
    return true;
  }();
  (void)once;
}

int grid(const Context& ctx) { return ctx.num_sms > 0 ? ctx.num_sms : 1; }

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

void launchDispatchSend(const Context& ctx, const DispatchArgs& a, bool cached, void* stream) {
  auto s = static_cast<gpuStream_t>(stream);
  setCarveout();
  reuseKernel<<<1, kWaitThreads, 0, s>>>(ctx);
  checkLaunch(gpuGetLastError(), "dispatch (reuse wait)");
  const size_t plan_shm = sizeof(int32_t) * (kThreads / kWarpSize);
  dispatchPlanKernel<<<grid(ctx), kThreads, plan_shm, s>>>(ctx, a);
  checkLaunch(gpuGetLastError(), "dispatch (plan)");
  publishKernel<<<1, kWaitThreads, 0, s>>>(ctx, a.layout, !cached, a.report_to_host && !cached, a.rank_prefix_matrix,
                                           a.num_tokens_per_expert != nullptr);
  checkLaunch(gpuGetLastError(), "dispatch (publish)");
  const size_t push_shm = sizeof(int64_t) * 2 * static_cast<size_t>(ctx.num_ranks);
  dispatchPushKernel<<<grid(ctx), kThreads, push_shm, s>>>(ctx, a, a.rank_prefix_matrix);
  checkLaunch(gpuGetLastError(), "dispatch (push)");
  arriveKernel<<<1, kWaitThreads, 0, s>>>(ctx, a.layout.pushed_off);
  checkLaunch(gpuGetLastError(), "dispatch (arrive)");
}

void launchDispatchRecv(const Context& ctx, const DispatchArgs& a, void* stream) {
  auto s = static_cast<gpuStream_t>(stream);
  setCarveout();
  if (a.out.num_recv_tokens > 0) {
    dispatchUnpackKernel<<<grid(ctx), kThreads, 0, s>>>(ctx, a, a.rank_prefix_matrix);
    checkLaunch(gpuGetLastError(), "dispatch (unpack)");
  }
  finishKernel<<<1, kWaitThreads, 0, s>>>(ctx);
  checkLaunch(gpuGetLastError(), "dispatch (finish)");
}

void launchCombine(const Context& ctx, const CombineArgs& a, void* stream) {
  auto s = static_cast<gpuStream_t>(stream);
  setCarveout();
  const size_t R = static_cast<size_t>(ctx.num_ranks);
  reuseKernel<<<1, kWaitThreads, 0, s>>>(ctx);
  checkLaunch(gpuGetLastError(), "combine (reuse wait)");
  if (a.num_recv_tokens > 0) {
    combinePushKernel<<<grid(ctx), kThreads, sizeof(int64_t) * 2 * R, s>>>(ctx, a);
    checkLaunch(gpuGetLastError(), "combine (push)");
  }
  arriveKernel<<<1, kWaitThreads, 0, s>>>(ctx, a.layout.pushed_off);
  checkLaunch(gpuGetLastError(), "combine (arrive)");
  if (a.num_tokens > 0) {
    // as many warps per block as keep the per-warp row lists within 32 KiB of shared memory
    int warps = static_cast<int>(32768 / (sizeof(void*) * R));
    warps = warps < 1 ? 1 : (warps > kThreads / kWarpSize ? kThreads / kWarpSize : warps);
    const size_t shm = sizeof(int64_t) * R + sizeof(void*) * R * warps;
    combineReduceKernel<<<grid(ctx), warps * kWarpSize, shm, s>>>(ctx, a, warps);
    checkLaunch(gpuGetLastError(), "combine (reduce)");
  }
  finishKernel<<<1, kWaitThreads, 0, s>>>(ctx);
  checkLaunch(gpuGetLastError(), "combine (finish)");
}

}  // namespace uccl::ep::kernels::intranode
