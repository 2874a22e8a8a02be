// Normal-mode dispatch within one memory domain: the grid kernels and the launchers (intranode.hpp has the
// protocol; intranode.cu the shared 1-block steps).
//
// plan      grid: blocks scan is_token_in_rank per destination (ballot prefix sums) into the ordered lists and
//           send_pos; counts per destination and per expert into the own header area.
// push      staged path: warps store own tokens into each other destination's staging (items of send_tokens rows).
// unpack    staged path: own staging -> the outputs (rows already in receive order); own rows straight from x.
// transfer  pipelined path: push (chunks published by flags) interleaved with the own rows, then the drain of the
//           chunks the peers pushed here.
#include "kernels/intranode_device.cuh"
#include "kernels/intranode_rows.cuh"
#include "kernels/intranode_handle.hpp"
#include "kernels/intranode_steps.hpp"
#include "kernels/launch.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"

namespace uccl::ep::kernels::intranode {
namespace {

using namespace dev;

// Block b scans destinations b, b + grid, ...; each thread takes kPlanTokens consecutive tokens per pass (one pass
// covers kThreads * kPlanTokens tokens), so a destination's list costs a few block-wide scans, not one per
// kThreads tokens.
constexpr int kPlanTokens = 8;

__global__ void __launch_bounds__(kThreads) dispatchPlanKernel(Context ctx, DispatchArgs a) {
  extern __shared__ int32_t warp_sums[];  // [warps + 1]: exclusive prefix of the warps' hits, then the pass total
  if (blockFailed(ctx)) return;
  const Layout& l = a.layout;
  const int T = a.num_tokens, R = ctx.num_ranks;
  const int lane = platform::laneId(), warp = platform::warpId(), nwarps = platform::numWarps();
  int32_t* lists = reinterpret_cast<int32_t*>(ctx.self + l.listsOff());
  // Read as bytes: a cached dispatch's is_token_in_rank is the caller's, and a byte other than 0 or 1 is no bool.
  const uint8_t* in_rank = reinterpret_cast<const uint8_t*>(a.is_token_in_rank);
  for (int r = blockIdx.x; r < R; r += gridDim.x) {
    int total = 0;
    for (int base = 0; base < T; base += blockDim.x * kPlanTokens) {
      const int t0 = base + static_cast<int>(threadIdx.x) * kPlanTokens;
      bool hit[kPlanTokens];
      int mine = 0;
#pragma unroll
      for (int i = 0; i < kPlanTokens; ++i) {
        hit[i] = t0 + i < T && in_rank[static_cast<size_t>(t0 + i) * R + r] != 0;
        mine += hit[i] ? 1 : 0;
      }
      int incl = mine;  // inclusive scan over the warp
      for (int d = 1; d < kWarpSize; d *= 2) {
        const int up = platform::shflUp(incl, d);
        if (lane >= d) incl += up;
      }
      if (lane == kWarpSize - 1) warp_sums[warp] = incl;
      __syncthreads();
      if (threadIdx.x == 0) {
        int acc = 0;
        for (int w = 0; w < nwarps; ++w) {
          const int v = warp_sums[w];
          warp_sums[w] = acc;
          acc += v;
        }
        warp_sums[nwarps] = acc;
      }
      __syncthreads();
      int pos = total + warp_sums[warp] + incl - mine;
#pragma unroll
      for (int i = 0; i < kPlanTokens; ++i) {
        const int t = t0 + i;
        if (hit[i]) lists[static_cast<size_t>(r) * T + pos] = t;
        if (a.send_pos && t < T) a.send_pos[static_cast<size_t>(t) * R + r] = hit[i] ? pos : -1;
        pos += hit[i] ? 1 : 0;
      }
      total += warp_sums[nwarps];
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

// Rows this rank sends to r: [before, before + count) of the rows r receives from every source. A destination whose
// staging would overflow gets nothing (recorded; the receiver sees the same and stores nothing either).
struct Destination {
  int64_t count, base;  // rows; byte offset of this rank's first record in r's staging
  int64_t total;        // rows r receives
};
__device__ __forceinline__ Destination destinationOf(const Context& ctx, const Layout& l, const int32_t* prefix, int r) {
  const int R = ctx.num_ranks, me = ctx.rank;
  const int32_t before = me > 0 ? prefix[(me - 1) * R + r] : 0;
  Destination d;
  d.count = prefix[me * R + r] - before;
  d.total = prefix[(R - 1) * R + r];
  // Written by r's plan kernel before its release of ready, acquired by this rank's publish kernel earlier on the
  // stream. System scope: the word is in peer GPU memory.
  const int Tr = platform::loadRelaxed<Scope::kSystem>(ints(ctx.peers[r], kNumTokensOff));
  const size_t need = l.dispatchBytes(Tr, d.total);
  if (need > ctx.buffer_bytes) {
    fail(ctx, kSlotOverflow, kOpNvlOverflow, r, -1, need);
    d.count = 0;
  }
  d.base = static_cast<int64_t>(l.stagingOff(Tr) + static_cast<size_t>(before) * l.token_stride);
  return d;
}

// ---- the handle's matrix (cached dispatch) -------------------------------------------------------------------
// The entries of rank r's thread (intranode_handle.hpp dispatchPrefixEntries), the ranks shared out to the block's
// threads, and with `outputs` the end of this rank's column (dispatchReceiveEnd); false (for every thread) when one
// is bad, which voids the call. Nothing to check (true) for a dispatch that computed its matrix itself. What it
// bounds: every own token a send reads (the plan's lists), every staging record a rank writes at r (within r's
// staging) and reads here, and every chunk flag.
__device__ bool blockPrefixOk(const Context& ctx, const DispatchArgs& a, const int32_t* prefix, bool outputs) {
  if (!a.cached) return true;
  __shared__ int bad;
  if (threadIdx.x == 0) bad = 0;
  __syncthreads();
  const int R = ctx.num_ranks, me = ctx.rank;
  const int32_t* planned = ints(ctx.self, a.layout.counts_off);  // this call's plan kernel, earlier on the stream
  for (int r = threadIdx.x; r < R; r += blockDim.x) {
    BadEntry e = dispatchPrefixEntries(prefix, R, me, r, planned[r]);
    if (!e.found() && outputs && r == R - 1) {
      e = dispatchReceiveEnd(prefix, R, me, a.out.num_recv_tokens, a.num_worst_tokens > 0);
    }
    if (e.found()) {
      voidCall(ctx, a.layout, kOpCachedDispatch, e.row, e.col, e.value);
      bad = 1;
    }
  }
  __syncthreads();
  return bad == 0;
}

// ---- staged path --------------------------------------------------------------------------------------------
__global__ void __launch_bounds__(kCopyThreads) dispatchPushKernel(Context ctx, DispatchArgs a, const int32_t* prefix) {
  extern __shared__ int64_t push_smem[];  // [R] byte offset of this rank's first row in r's buffer, [R] rows to r
  // The send half, before the outputs exist: the end of this rank's column is the unpack kernel's to check.
  if (blockFailed(ctx) || !blockPrefixOk(ctx, a, prefix, /*outputs=*/false)) return;
  const Layout& l = a.layout;
  const int R = ctx.num_ranks, me = ctx.rank, T = a.num_tokens;
  int64_t* base = push_smem;
  int64_t* cnt = push_smem + R;
  for (int r = threadIdx.x; r < R; r += blockDim.x) {
    const Destination d = r == me ? Destination{0, 0, 0} : destinationOf(ctx, l, prefix, r);
    cnt[r] = d.count;
    base[r] = d.base;
  }
  __syncthreads();
  const int step = ctx.send_tokens > 0 ? ctx.send_tokens : 1;
  const int64_t global_warp = static_cast<int64_t>(blockIdx.x) * platform::numWarps() + platform::warpId();
  const int64_t warps = static_cast<int64_t>(gridDim.x) * platform::numWarps();
  const int32_t* lists = ints(ctx.self, l.listsOff());
  // Destinations in the order me+1, me+2, ...: at any moment the ranks write to different receivers.
  for (int k = 1; k < R; ++k) {
    const int r = (me + k) % R;
    uint8_t* dst_base = ctx.peers[r] + base[r];
    UCCL_EP_FOR_ITEMS(first, cnt[r], step, global_warp, warps) {
      const int64_t last = first + step < cnt[r] ? first + step : cnt[r];
      for (int64_t j = first; j < last; ++j) storeRecord(a, lists[static_cast<size_t>(r) * T + j], dst_base + j * l.token_stride);
    }
  }
}

__global__ void __launch_bounds__(kCopyThreads) dispatchUnpackKernel(Context ctx, DispatchArgs a, const int32_t* prefix) {
  if (blockFailed(ctx)) return;
  const Layout& l = a.layout;
  const int R = ctx.num_ranks, me = ctx.rank, T = a.num_tokens;
  // The push kernel checked a handle's matrix (a bad one voided the call). Then the end of this rank's column against
  // the outputs: it bounds only this rank's rows, so no peer is told. Then the sources that voided the call (they
  // stored nothing). In that order, so that this rank's own bad entry is the one it records.
  if (a.cached) {
    __shared__ int stop;
    if (threadIdx.x == 0) {
      stop = voidedBy(ctx, l, me, kOpCachedDispatch) ? 1 : 0;
      const BadEntry e = stop ? BadEntry{} : dispatchReceiveEnd(prefix, R, me, a.out.num_recv_tokens,
                                                               a.num_worst_tokens > 0);
      if (e.found()) {
        recordBadEntry(ctx, kOpCachedDispatch, kHandleRankPrefixMatrix, e.row, e.col, e.value);
        stop = 1;
      }
    }
    __syncthreads();
    const auto rows_from = [&](int s) { return prefix[s * R + me] - (s > 0 ? prefix[(s - 1) * R + me] : 0); };
    if (stop || blockVoided(ctx, l, kOpCachedDispatch, rows_from)) return;
  }
  const Receive rc = receiveOf(ctx, a, prefix);
  if (!rc.fits) return;
  const int64_t self_lo = me > 0 ? prefix[(me - 1) * R + me] : 0, self_hi = prefix[me * R + me];
  const int32_t* own = ints(ctx.self, l.listsOff()) + static_cast<size_t>(me) * T;
  const uint8_t* staging = ctx.self + l.stagingOff(T);
  const int step = ctx.send_tokens > 0 ? ctx.send_tokens : 1;
  const int64_t global_warp = static_cast<int64_t>(blockIdx.x) * platform::numWarps() + platform::warpId();
  const int64_t warps = static_cast<int64_t>(gridDim.x) * platform::numWarps();
  UCCL_EP_FOR_ITEMS(first, a.out.num_recv_tokens, step, global_warp, warps) {
    const int64_t last = first + step < a.out.num_recv_tokens ? first + step : a.out.num_recv_tokens;
    for (int64_t g = first; g < last; ++g) {
      if (g >= rc.total) {
        emitPadding(a, g);
      } else if (g >= self_lo && g < self_hi) {
        emitRow<false>(a, me, g, fromInput(a, own[g - self_lo]));
      } else {
        emitRow<false>(a, me, g, fromRecord(l, staging + g * l.token_stride, false));
      }
    }
  }
}

// ---- pipelined path -----------------------------------------------------------------------------------------
// Shared memory of the transfer kernel, [R] int64 each. Send side, by k = 1..R-1 (destination (me + k) % R) at
// index k - 1: rows, staging byte offset, first flag index, rows per chunk, inclusive prefix of chunk counts.
// Receive side, by source s: first receive row, first flag index, inclusive prefix of chunk counts (0 for self).
constexpr int kTransferArrays = 8;
constexpr int kOwnRows = 2;

__device__ __forceinline__ int upperBound(const int64_t* inclusive_end, int n, int64_t item) {
  int lo = 0, hi = n - 1;  // the first i with inclusive_end[i] > item; item < inclusive_end[n - 1]
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (inclusive_end[mid] > item)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

__global__ void __launch_bounds__(kCopyThreads) dispatchTransferKernel(Context ctx, DispatchArgs a, const int32_t* prefix) {
  extern __shared__ int64_t xfer[];
  // A bad matrix voids the call before any row moves (the peers stop waiting for this rank's chunks).
  if (blockFailed(ctx) || !blockPrefixOk(ctx, a, prefix, /*outputs=*/true)) return;
  const Layout& l = a.layout;
  const int R = ctx.num_ranks, me = ctx.rank, T = a.num_tokens;
  const uint64_t epoch = epochOf(ctx);
  const int step = ctx.send_tokens > 0 ? ctx.send_tokens : 1;
  int64_t *cnt = xfer, *base = xfer + R, *flag0 = xfer + 2 * R, *crows = xfer + 3 * R, *send_end = xfer + 4 * R;
  int64_t *src_lo = xfer + 5 * R, *fbase = xfer + 6 * R, *recv_end = xfer + 7 * R;
  const Receive rc = receiveOf(ctx, a, prefix);
  const int64_t my_crows = chunkRows(rc.total, step, R);
  for (int i = threadIdx.x; i < R; i += blockDim.x) {
    if (i < R - 1) {
      const int r = (me + i + 1) % R;
      const Destination d = destinationOf(ctx, l, prefix, r);
      cnt[i] = d.count;
      base[i] = d.base;
      crows[i] = chunkRows(d.total, step, R);
      int64_t f = 0;  // chunks of the sources before this rank at r, r's own block included
      for (int s = 0; s < me; ++s) f += ceilDiv(prefix[s * R + r] - (s > 0 ? prefix[(s - 1) * R + r] : 0), crows[i]);
      flag0[i] = f;
    }
    src_lo[i] = i > 0 ? prefix[(i - 1) * R + me] : 0;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t sent = 0, recv = 0, flags = 0;
    for (int i = 0; i < R; ++i) {
      if (i < R - 1) send_end[i] = (sent += ceilDiv(cnt[i], crows[i]));
      const int64_t rows = prefix[i * R + me] - src_lo[i];
      fbase[i] = flags;
      flags += ceilDiv(rows, my_crows);
      recv_end[i] = (recv += (i == me || !rc.fits) ? 0 : ceilDiv(rows, my_crows));
    }
  }
  __syncthreads();

  const int64_t global_warp = static_cast<int64_t>(blockIdx.x) * platform::numWarps() + platform::warpId();
  const int64_t warps = static_cast<int64_t>(gridDim.x) * platform::numWarps();
  const int32_t* lists = ints(ctx.self, l.listsOff());
  const int64_t self_lo = src_lo[me], n_self = prefix[me * R + me] - self_lo;
  // 1. Chunks to the peers and own rows, alternating so that NVLink stores and local copies run at once.
  // Own rows go in items of kOwnRows (no flag to publish, so small items only even out the warps' shares).
  const int64_t n_send = R > 1 ? send_end[R - 2] : 0, n_own = ceilDiv(n_self, kOwnRows);
  const int64_t pairs = n_send < n_own ? n_send : n_own;
  Claims sends(ctx, kClaimSendOff);
  for (int64_t c = sends.next(); c < n_send + n_own; c = sends.next()) {
    const bool to_peer = c < 2 * pairs ? (c & 1) == 0 : n_send > n_own;
    const int64_t item = c < 2 * pairs ? c >> 1 : pairs + (c - 2 * pairs);
    if (to_peer) {
      const int i = upperBound(send_end, R - 1, item);
      const int r = (me + i + 1) % R;
      const int64_t chunk = item - (i > 0 ? send_end[i - 1] : 0);
      const int64_t first = chunk * crows[i], last = first + crows[i] < cnt[i] ? first + crows[i] : cnt[i];
      uint8_t* dst_base = ctx.peers[r] + base[i];
      for (int64_t j = first; j < last; ++j) storeRecord(a, lists[static_cast<size_t>(r) * T + j], dst_base + j * l.token_stride);
      publishChunk(word(ctx.peers[r], l.flags_off + static_cast<size_t>(flag0[i] + chunk) * 8), epoch);
    } else {
      const int64_t first = item * kOwnRows, last = first + kOwnRows < n_self ? first + kOwnRows : n_self;
      for (int64_t j = first; j < last && self_lo + j < rc.limit; ++j) {
        emitRow<false>(a, me, self_lo + j, fromInput(a, lists[static_cast<size_t>(me) * T + j]));
      }
    }
  }
  // 2. num_worst_tokens padding.
  for (int64_t g = rc.total + global_warp; g < a.out.num_recv_tokens; g += warps) emitPadding(a, g);
  // 3. The chunks the peers pushed here, each after its flag.
  const uint8_t* staging = ctx.self + l.stagingOff(T);
  Claims drains(ctx, kClaimRecvOff);
  for (int64_t d = drains.next(); d < recv_end[R - 1]; d = drains.next()) {
    const int s = upperBound(recv_end, R, d);
    const int64_t chunk = d - (s > 0 ? recv_end[s - 1] : 0);
    const int64_t rows = prefix[s * R + me] - src_lo[s];
    const int64_t g0 = src_lo[s] + chunk * my_crows;
    if (g0 >= rc.limit) continue;  // beyond num_worst_tokens (recorded): nothing to wait for
    if (!warpWait(ctx, l, word(ctx.self, l.flags_off + static_cast<size_t>(fbase[s] + chunk) * 8), epoch, kOpChunk, s,
                  chunk, kOpCachedDispatch)) {
      return;
    }
    const int64_t g1 = src_lo[s] + (chunk * my_crows + my_crows < rows ? chunk * my_crows + my_crows : rows);
    for (int64_t g = g0; g < g1 && g < rc.limit; ++g) emitRow<true>(a, me, g, fromRecord(l, staging + g * l.token_stride, true));
  }
}

// One carveout for every kernel, low-latency and normal alike (launch.hpp says why).
void setCarveout() {
  static const bool once = [] {
    preferMaxShared({reinterpret_cast<const void*>(&dispatchPlanKernel), reinterpret_cast<const void*>(&dispatchPushKernel),
                     reinterpret_cast<const void*>(&dispatchUnpackKernel),
                     reinterpret_cast<const void*>(&dispatchTransferKernel)});
    return true;
  }();
  (void)once;
}

int grid(const Context& ctx) { return ctx.num_sms > 0 ? ctx.num_sms : 1; }

}  // namespace

void launchDispatchPlan(const Context& ctx, const DispatchArgs& a, gpuStream_t s) {
  setCarveout();
  const size_t plan_shm = sizeof(int32_t) * (kThreads / kWarpSize + 1);
  dispatchPlanKernel<<<grid(ctx), kThreads, plan_shm, s>>>(ctx, a);
  checkLaunch(gpuGetLastError(), "dispatch (plan)");
}

void launchDispatchUnpack(const Context& ctx, const DispatchArgs& a, const int32_t* prefix, gpuStream_t s) {
  setCarveout();
  dispatchUnpackKernel<<<grid(ctx), kCopyThreads, 0, s>>>(ctx, a, prefix);
  checkLaunch(gpuGetLastError(), "dispatch (unpack)");
}

void launchDispatchSend(const Context& ctx, const DispatchArgs& a, bool cached, void* stream) {
  auto s = static_cast<gpuStream_t>(stream);
  launchReuse(ctx, s, "dispatch (reuse wait)");
  launchDispatchPlan(ctx, a, s);
  launchPublish(ctx, a.layout, !cached, a.report_to_host && !cached, a.rank_prefix_matrix,
                a.num_tokens_per_expert != nullptr, s);
  if (ctx.pipelined) return;
  const size_t push_shm = sizeof(int64_t) * 2 * static_cast<size_t>(ctx.num_ranks);
  dispatchPushKernel<<<grid(ctx), kCopyThreads, push_shm, s>>>(ctx, a, a.rank_prefix_matrix);
  checkLaunch(gpuGetLastError(), "dispatch (push)");
  launchArrive(ctx, a.layout.pushed_off, s, "dispatch (arrive)");
}

void launchDispatchRecv(const Context& ctx, const DispatchArgs& a, void* stream) {
  auto s = static_cast<gpuStream_t>(stream);
  setCarveout();
  if (ctx.pipelined) {
    // Runs even with no rows to output: the peers wait for this rank's chunks.
    const size_t shm = sizeof(int64_t) * kTransferArrays * static_cast<size_t>(ctx.num_ranks);
    allowDynamicShared(reinterpret_cast<const void*>(&dispatchTransferKernel), shm);
    dispatchTransferKernel<<<grid(ctx), kCopyThreads, shm, s>>>(ctx, a, a.rank_prefix_matrix);
    checkLaunch(gpuGetLastError(), "dispatch (transfer)");
  } else if (a.out.num_recv_tokens > 0 || a.cached) {  // cached: it checks the handle's column end too
    launchDispatchUnpack(ctx, a, a.rank_prefix_matrix, s);
  }
  launchFinish(ctx, s, "dispatch (finish)");
}

}  // namespace uccl::ep::kernels::intranode
