// Device pieces shared by the normal-mode kernel files (intranode_*.cu): the call's epoch, the error record, the
// waits, the warp row copy and the chunk flags of the pipelined path. See intranode.hpp for the protocol.
#pragma once

#include "kernels/intranode.hpp"
#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/cache_hints.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/platform/warp.hpp"

namespace uccl::ep::kernels::intranode::dev {

using platform::kWarpSize;
using platform::Scope;

constexpr int kThreads = 512;      // the grid kernels that scan (plan)
// The copy kernels (push, unpack, reduce, transfer) are bound by the loads their warps keep in flight, so an SM
// holds as many warps as the registers allow: the launch bounds fit them into 80 registers for 768 threads. 768
// against 512 threads, two H200s, 24 SMs: combine 363 against 240 GB/s, dispatch FP8 336 against 298, BF16 375
// against 369 (2026-11-30, bench/RESULTS.md).
constexpr int kCopyThreads = 768;
constexpr int kWaitThreads = 256;  // the 1-block kernels
// Rows are copied 16 bytes per lane with kCopyUnroll loads in flight per lane before their stores: a row is a few
// hundred vectors, and a warp's copy is a chain of round trips, one per batch, so the batch is as wide as the
// registers allow and the last batch is predicated rather than copied vector by vector.
// 8 against 6 at 768 threads: the same dispatch, combine 363 against 295 GB/s at 24 SMs (2026-11-30).
constexpr int kCopyUnroll = 8;

__device__ __forceinline__ uint64_t* word(uint8_t* base, size_t off) { return reinterpret_cast<uint64_t*>(base + off); }
__device__ __forceinline__ const int32_t* ints(const uint8_t* base, size_t off) {
  return reinterpret_cast<const int32_t*>(base + off);
}
// seq is this rank's own word, written only by its reuse kernel; later kernels on the stream read it. Device scope,
// relaxed: the kernel boundary orders the write before the reads, and no other agent writes it.
__device__ __forceinline__ uint64_t epochOf(const Context& ctx) {
  return platform::loadRelaxed<Scope::kDevice>(word(ctx.self, kSeqOff));
}
// A failure of this rank's normal-mode kernels: the host-mapped record for the host (first failure wins), and the
// failed word in this GPU's memory for the kernels (intranode.hpp kFailedOff).
__device__ __forceinline__ void fail(const Context& ctx, int32_t code, int32_t op, int32_t peer, int32_t expert,
                                     uint64_t detail) {
  recordError(ctx.error, code, op, peer, expert, detail);
  platform::storeRelaxed<Scope::kDevice>(word(ctx.self, kFailedOff), uint64_t{1});
}
__device__ __forceinline__ bool failed(const Context& ctx) {
  return platform::loadRelaxed<Scope::kDevice>(word(ctx.self, kFailedOff)) != 0;
}
// A block reads the failed word once (thread 0) and shares the answer. All threads of the block must call it. A
// failure is never cleared, so a thread that reads a later call's value sees the same or a newer answer.
__device__ __forceinline__ bool blockFailed(const Context& ctx) {
  __shared__ int stop;
  if (threadIdx.x == 0) stop = failed(ctx) ? 1 : 0;
  __syncthreads();
  return stop != 0;
}

// ---- handle checks ------------------------------------------------------------------------------------------
// A normal-mode handle is the caller's: every entry a kernel uses as an index or a count is checked by the thread
// that reads it, before use. A bad entry is recorded (kBadHandle, first wins); a bad rank_prefix_matrix voids the
// call: this rank moves no rows, and its void word (Layout::void_off) at every rank says so, so that no rank waits
// for rows this one will not send.
__device__ __forceinline__ void recordBadEntry(const Context& ctx, int32_t op, uint32_t field, int row, int col,
                                               int32_t value) {
  recordError(ctx.error, kBadHandle, op, ctx.rank, -1, handleDetail(field, value), row, col);
}

__device__ __forceinline__ uint64_t* voidWord(uint8_t* base, const Layout& l, int source) {
  return word(base, l.void_off + static_cast<size_t>(source) * 8);
}

// Records a bad rank_prefix_matrix entry and voids this call on every rank. Any thread that found one may call it;
// the first of the call (the exchange on the own void word) tells the peers, with release stores.
__device__ inline void voidCall(const Context& ctx, const Layout& l, int32_t op, int row, int col, int32_t value) {
  recordBadEntry(ctx, op, kHandleRankPrefixMatrix, row, col, value);
  const uint64_t e = epochOf(ctx);
  uint64_t* own = voidWord(ctx.self, l, ctx.rank);
  const uint64_t seen = platform::loadRelaxed<Scope::kSystem>(own);
  if (seen >= e || platform::compareExchangeRelaxed<Scope::kSystem>(own, seen, e) != seen) return;
  for (int r = 0; r < ctx.num_ranks; ++r) {
    if (r != ctx.rank) platform::storeRelease<Scope::kSystem>(voidWord(ctx.peers[r], l, ctx.rank), e);
  }
}

// Whether `source` voided this call. A rank that loses rows to a peer's void records kBadHandle naming that peer
// (kHandleOfPeer) for `call`, so its next call raises too.
__device__ __forceinline__ bool voidedBy(const Context& ctx, const Layout& l, int source, int32_t call) {
  if (platform::loadAcquire<Scope::kSystem>(voidWord(ctx.self, l, source)) < epochOf(ctx)) return false;
  if (source != ctx.rank) recordError(ctx.error, kBadHandle, call, source, -1, handleDetail(kHandleOfPeer, 0));
  return true;
}

// Whether the call is void for this block: this rank voided it, or a source it takes rows from (rows(s) > 0) did.
// Threads share out the ranks; all threads of the block must call it.
template <typename RowsFrom>
__device__ bool blockVoided(const Context& ctx, const Layout& l, int32_t call, RowsFrom rows_from) {
  __shared__ int voided;
  if (threadIdx.x == 0) voided = voidedBy(ctx, l, ctx.rank, call) ? 1 : 0;
  __syncthreads();
  if (voided) return true;  // this rank's own handle is bad: rows_from would read it
  for (int s = threadIdx.x; s < ctx.num_ranks; s += blockDim.x) {
    if (s != ctx.rank && rows_from(s) > 0 && voidedBy(ctx, l, s, call)) voided = 1;
  }
  __syncthreads();
  return voided != 0;
}

// Threads of the block share out the ranks and wait until rank r's word `peer_word(r)` reaches `target`. A timeout
// records the rank and returns false for the whole block.
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
        fail(ctx, kTimeout, op, ctx.rank_base + r, -1, (target << 8) | (v & 0xff));
        any_timeout = 1;
        break;
      }
      if (failed(ctx)) break;  // another thread already timed out: stop waiting for the rest
    }
  }
  __syncthreads();
  return any_timeout == 0 && !blockFailed(ctx);
}

// A whole warp waits until the word reaches `target` (every lane acquires it, so every lane's later loads see what
// the writer published before its release). The failed word, the peer's void word and the clock are read every 1024
// polls. A timeout records kTimeout with `op`, the peer and the chunk; the peer's void (it rejected its handle and
// sends nothing) records kBadHandle for `call`; false (for every lane) on timeout, failure or void.
__device__ inline bool warpWait(const Context& ctx, const Layout& l, const uint64_t* w, uint64_t target, int32_t op,
                                int peer, int64_t chunk, int32_t call) {
  const uint64_t all = platform::ballot(true);
  if (platform::ballot(platform::loadAcquire<Scope::kSystem>(w) >= target) == all) return true;
  const uint64_t start = platform::nowNs();
  for (uint32_t spins = 1;; ++spins) {
    if (platform::ballot(platform::loadAcquire<Scope::kSystem>(w) >= target) == all) return true;
    if ((spins & 1023) == 0) {
      const bool late = platform::nowNs() - start > ctx.timeout_ns;
      bool stop = late;
      if (platform::laneId() == 0) {
        const bool voided = voidedBy(ctx, l, peer, call);
        if (late && !voided) fail(ctx, kTimeout, op, peer, -1, static_cast<uint64_t>(chunk));
        stop = stop || voided || failed(ctx);
      }
      if (platform::ballot(stop) != 0) return false;
    }
  }
}

// Copies `bytes` (a multiple of 16; both ends 16-byte aligned, checked by the launcher) with the warp. Fresh: the
// source is written by a peer during this kernel (loadFresh); otherwise it is the caller's input (loadInput).
template <bool kFresh>
__device__ __forceinline__ void copyWarp(uint8_t* dst, const uint8_t* src, size_t bytes) {
  const size_t n = bytes / 16;
  const int4* s = reinterpret_cast<const int4*>(src);
  int4* d = reinterpret_cast<int4*>(dst);
  for (size_t i = platform::laneId(); i < n; i += kCopyUnroll * kWarpSize) {
    int4 v[kCopyUnroll];
#pragma unroll
    for (int u = 0; u < kCopyUnroll; ++u) {
      const size_t j = i + u * kWarpSize;
      if (j < n) v[u] = kFresh ? platform::loadFresh(s + j) : platform::loadInput(s + j);
    }
#pragma unroll
    for (int u = 0; u < kCopyUnroll; ++u) {
      const size_t j = i + u * kWarpSize;
      if (j < n) d[j] = v[u];
    }
  }
}

// Scalars of a row record: loadFresh for records peers write during the kernel, plain loads otherwise.
template <bool kFresh, typename T>
__device__ __forceinline__ T loadScalar(const T* p) {
  if constexpr (kFresh) {
    return platform::loadFresh(p);
  } else {
    return *p;
  }
}

// A warp stores its rows of a chunk into a peer, then publishes the chunk: every lane fences its stores at system
// scope, the warp converges, lane 0 stores the epoch into the chunk's flag with release semantics.
__device__ __forceinline__ void publishChunk(uint64_t* flag, uint64_t epoch) {
  platform::fenceAcqRel<Scope::kSystem>();
  platform::syncWarp();
  if (platform::laneId() == 0) platform::storeRelease<Scope::kSystem>(flag, epoch);
}

// A warp's work items, claimed from the counter at `off` of the own buffer one item ahead: next() hands out the item
// claimed earlier and issues the claim of the one after, whose atomic round trip then overlaps the work of this one
// (lane 0 claims, every lane gets the item). The last claim of each warp goes unused.
class Claims {
 public:
  __device__ Claims(const Context& ctx, size_t off) : counter_(word(ctx.self, off)) { issue(); }
  __device__ int64_t next() {
    const int64_t item = static_cast<int64_t>(platform::shfl(pending_, 0));
    issue();
    return item;
  }

 private:
  __device__ void issue() {
    pending_ = platform::laneId() == 0 ? platform::fetchAddRelaxed<Scope::kDevice>(counter_, uint64_t{1}) : 0;
  }
  uint64_t* counter_;
  uint64_t pending_ = 0;
};

// Rows per chunk of the pipelined path for a receiver that gets `total` rows: `step` rows (the config's chunk), or
// more when the flags would not suffice (every source may leave one partial chunk).
__device__ __forceinline__ int64_t chunkRows(int64_t total, int step, int num_ranks) {
  const int64_t flags = kChunkFlags - num_ranks;
  const int64_t need = (total + flags - 1) / flags;
  return need > step ? need : (step > 0 ? step : 1);
}
__device__ __forceinline__ int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Work items of `count` rows in items of `step` rows, dealt to the warps of the grid: item i goes to warp i % warps.
#define UCCL_EP_FOR_ITEMS(first, count, step, global_warp, warps) \
  for (int64_t first = (global_warp) * (step); first < (count); first += (warps) * (step))

}  // namespace uccl::ep::kernels::intranode::dev
