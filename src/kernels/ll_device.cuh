// Device pieces shared by the low-latency dispatch (ll_dispatch.cu) and combine (ll_combine.cu) kernels: the block
// split of a launch, the slot of every top-k entry, the waits, and the expert-id check. Device code only.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>

#include "kernels/low_latency.hpp"
#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/platform/warp.hpp"
#include "uccl_ep/ring/descriptor.hpp"
#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::kernels::ll::device {

using platform::kWarpSize;
using platform::Scope;

inline constexpr int kThreads = 512;
inline constexpr int kValuesPerLane = 8;                                   // one 16-byte vector of BF16
inline constexpr int kLanesPerGroup = kChannelsPerScale / kValuesPerLane;  // 16 lanes cover one 128-channel group
inline constexpr int kChannelsPerStep = kWarpSize * kValuesPerLane;       // channels one warp moves per step

__device__ __forceinline__ uint64_t* word(int64_t* p) { return reinterpret_cast<uint64_t*>(p); }

UCCL_EP_HOST_DEVICE inline bool hasSend(Phase p) { return static_cast<int>(p) & static_cast<int>(Phase::kSend); }
UCCL_EP_HOST_DEVICE inline bool hasRecv(Phase p) { return static_cast<int>(p) & static_cast<int>(Phase::kRecv); }

// The blocks of one launch: the send part on [0, send), the receive part on the last `recv` blocks. A receive block
// that waits for its own grid's send part was scheduled after (or is) every block it waits for.
struct Parts {
  int send = 0;
  int recv = 0;
  UCCL_EP_HOST_DEVICE int grid(Phase p) const {
    const int s = hasSend(p) ? send : 0;
    const int r = hasRecv(p) ? recv : 0;
    return s > r ? s : r;
  }
};

// At most one block per SM for `work` independent pieces, and at least one block.
UCCL_EP_HOST_DEVICE inline int blocksFor(int work, int num_sms) {
  const int cap = num_sms > 0 ? num_sms : 1;
  const int b = work < cap ? work : cap;
  return b < 1 ? 1 : b;
}

// Block b's share [begin, end) of n items split over `blocks` blocks (contiguous, sizes differ by at most one).
UCCL_EP_HOST_DEVICE inline int shareBegin(int n, int b, int blocks) {
  return static_cast<int>(static_cast<int64_t>(n) * b / blocks);
}
UCCL_EP_HOST_DEVICE inline int maxShare(int n, int blocks) { return (n + blocks - 1) / blocks; }

// This block's index in the receive part, or -1 when it has none.
__device__ __forceinline__ int recvIndex(const Parts& parts, Phase p) {
  if (!hasRecv(p)) return -1;
  const int r = static_cast<int>(blockIdx.x) - (static_cast<int>(gridDim.x) - parts.recv);
  return r >= 0 ? r : -1;
}

// The mask is in this GPU's memory; within a call only this GPU's threads set entries (atomicExch when a peer times
// out), and the host changes it only between calls, in stream order. Relaxed at device scope: a poll that decides
// whether to wait for a rank, and reads nothing behind the flag.
__device__ __forceinline__ bool masked(const Context& ctx, int rank) {
  return ctx.enable_shrink && platform::loadRelaxed<Scope::kDevice>(&ctx.mask[rank]) != 0;
}

// Waits until *w is nonzero; returns the value, or 0 after the timeout. *waited: the time spent.
__device__ inline uint64_t waitNonZero(int64_t* w, uint64_t timeout_ns, uint64_t* waited) {
  const uint64_t start = platform::nowNs();
  uint64_t v;
  while ((v = platform::loadAcquire<Scope::kSystem>(word(w))) == 0) {
    if (platform::nowNs() - start > timeout_ns) break;
  }
  *waited = platform::nowNs() - start;
  return v;
}

// Waits until *w holds a complete NVLink dispatch count (ll_layout.hpp: nvlCountDone); returns the last value read,
// complete or not after the timeout. *waited: the time spent.
__device__ inline uint64_t waitNvlCount(int64_t* w, uint64_t timeout_ns, uint64_t* waited) {
  const uint64_t start = platform::nowNs();
  uint64_t v;
  while (!nvlCountDone(v = platform::loadAcquire<Scope::kSystem>(word(w)))) {
    if (platform::nowNs() - start > timeout_ns) break;
  }
  *waited = platform::nowNs() - start;
  return v;
}

// A peer's signal word timed out: masked with enable_shrink, an error naming it otherwise.
__device__ inline void peerTimedOut(const Context& ctx, int op, int peer, int expert) {
  if (ctx.enable_shrink) {
    atomicExch(&ctx.mask[peer], 1);
  } else {
    recordError(ctx.error, kTimeout, op, peer, expert, 0);
  }
}

UCCL_EP_HOST_DEVICE inline bool validExpert(int64_t id, int num_experts) { return id >= -1 && id < num_experts; }

// Block-wide, in one block per call: records the first top-k entry (row-major) outside [-1, num_experts) as
// kBadExpertId, naming the id, its token and column. Costs one read of topk_idx; the record only on bad input.
// Every part skips such entries (they match no expert and are never used as an index), so the call completes and
// the runtime's next check raises ArgumentError. No host read needed.
__device__ inline void checkExpertIds(const Context& ctx, const int64_t* topk, int num_tokens, int num_topk, int op) {
  __shared__ int first_bad;
  if (threadIdx.x == 0) first_bad = INT_MAX;
  const int n = num_tokens * num_topk;
  int mine = INT_MAX;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    if (!validExpert(topk[i], ctx.layout.num_experts)) {
      mine = i;
      break;  // a thread's entries rise with i: its first is its smallest
    }
  }
  if (!__syncthreads_or(mine != INT_MAX)) return;  // also orders first_bad's initial value before the atomicMin
  if (mine != INT_MAX) atomicMin(&first_bad, mine);
  __syncthreads();
  if (threadIdx.x == 0) {
    const int i = first_bad;
    recordError(ctx.error, kBadExpertId, op, -1, -1, static_cast<uint64_t>(topk[i]), i / num_topk, i % num_topk);
  }
}

// One top-k entry of a block's own tokens. `expert` is -1 for an entry to skip (id -1 or out of range). A token
// reaches an expert once: a column repeating an earlier column's expert is a `repeat` with the same slot (dispatch
// writes no second message; combine adds the same row with this column's weight).
struct Entry {
  uint8_t* ptr;  // dispatch: the message's destination; combine: the row to add (null: skip)
  int expert;
  int slot;   // the token's slot at `expert` (ll_layout.hpp): tokens before it that picked the same expert
  int total;  // tokens of this rank that picked `expert`
  int repeat;
  int64_t* signal;  // dispatch to an NVLink peer: the receiver's count word the message adds to (null otherwise)
};

// Dynamic shared memory of slotEntries: the per-expert counts, then the block's entries.
UCCL_EP_HOST_DEVICE inline size_t countsBytes(int num_experts) {
  return (static_cast<size_t>(num_experts) * sizeof(unsigned) + 15) / 16 * 16;
}
UCCL_EP_HOST_DEVICE inline size_t slotSharedBytes(int num_experts, int max_block_tokens) {
  return countsBytes(num_experts) + static_cast<size_t>(max_block_tokens) * kMaxTopk * sizeof(Entry);
}

// Block-wide: the entries of the block's tokens [t0, t1) into entries[(t - t0) * K + k], with each one's slot and
// its expert's total. counts[E] (shared) holds, per expert, the tokens before t0 that picked it (high 16 bits) and
// all tokens that picked it (low 16 bits); both fit: num_tokens <= kMaxTokensPerRank < 2^16. Costs one read of
// topk_idx and one shared atomic per entry; no grid-wide step, so dispatch and combine each compute the same slots.
__device__ inline void slotEntries(const int64_t* topk, int T, int K, int E, int t0, int t1, unsigned* counts,
                                   Entry* entries) {
  for (int e = threadIdx.x; e < E; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int t = threadIdx.x; t < T; t += blockDim.x) {
    const int64_t* row = topk + static_cast<size_t>(t) * K;
    const unsigned add = t < t0 ? 0x10001u : 1u;
    int64_t ids[kMaxTopk];  // unrolled to the limit so the ids stay in registers
#pragma unroll
    for (int k = 0; k < kMaxTopk; ++k) ids[k] = k < K ? row[k] : -1;
#pragma unroll
    for (int k = 0; k < kMaxTopk; ++k) {
      const int64_t e = ids[k];
      if (e < 0 || e >= E) continue;
      bool repeat = false;
#pragma unroll
      for (int j = 0; j < k; ++j) repeat |= ids[j] == e;
      if (!repeat) atomicAdd(&counts[e], add);
    }
  }
  __syncthreads();
  if (platform::warpId() == 0) {  // the block's tokens in order; lane k holds column k (K <= kMaxTopk <= warp)
    const int lane = platform::laneId();
    for (int t = t0; t < t1; ++t) {
      const int64_t e = lane < K ? topk[static_cast<size_t>(t) * K + lane] : -1;
      const bool valid = e >= 0 && e < E;
      int first = lane;
      for (int j = K - 1; j >= 0; --j) {
        const int64_t ej = platform::shfl(e, j);
        if (j < lane && ej == e) first = j;
      }
      int slot = -1, total = 0;
      if (valid && first == lane) {
        const unsigned c = counts[e];
        slot = static_cast<int>(c >> 16);
        total = static_cast<int>(c & 0xffffu);
        counts[e] = c + 0x10000u;
      }
      slot = platform::shfl(slot, first);
      total = platform::shfl(total, first);
      if (lane < K) {
        entries[(t - t0) * K + lane] = Entry{nullptr, valid ? static_cast<int>(e) : -1, slot, total, first != lane, nullptr};
      }
      platform::syncWarp();  // this token's count updates before the next token's reads
    }
  }
  __syncthreads();
}

// The total of expert e after slotEntries.
__device__ __forceinline__ int expertTotal(const unsigned* counts, int e) { return static_cast<int>(counts[e] & 0xffffu); }

// The staging tickets of this half (low_latency.hpp): row `parity`, one word per ring.
__device__ __forceinline__ uint64_t* stagingTickets(const Context& ctx, int parity) {
  return ctx.staging_tickets + static_cast<size_t>(parity) * ctx.num_rings;
}

// Waits until every WRITE that read this half's send area during the half's previous use has completed, so that the
// area can be overwritten. Returns false (error recorded) on timeout or a dead ring.
__device__ inline bool waitRingsIdle(const Context& ctx, int op) {
  const uint64_t* tickets = stagingTickets(ctx, ctx.use_parity ^ 1);
  for (int i = 0; i < ctx.num_rings; ++i) {
    const ring::RingView& r = ctx.rings[i];
    const uint64_t end = platform::loadRelaxed<Scope::kDevice>(&tickets[i]);
    if (end == 0) continue;
    const ring::Status s = ring::waitCompleted(r, end - 1, ctx.timeout_ns);
    if (s != ring::Status::kOk) {
      recordError(ctx.error, kRingError, op, -1, -1, (uint64_t(i) << 32) | uint32_t(s));
      return false;
    }
  }
  return true;
}

// Block-wide: waitRingsIdle by thread 0 when any thread of the block will write a staging area (`need`).
__device__ inline bool stagingFree(const Context& ctx, bool need, int op) {
  __shared__ bool free_;
  if (!__syncthreads_or(need)) return true;
  if (threadIdx.x == 0) free_ = waitRingsIdle(ctx, op);
  __syncthreads();
  return free_;
}

// Pushes d; *ticket (when given) is raised to one past its position. False (error recorded) when the push failed.
__device__ inline bool pushOrRecord(const Context& ctx, const ring::RingView& r, ring::Descriptor d, int op, int peer,
                                    int expert, uint64_t* ticket = nullptr) {
  const ring::PushResult res = ring::push(r, d, ctx.timeout_ns);
  if (res.status != ring::Status::kOk) {
    recordError(ctx.error, kRingError, op, peer, expert, (uint64_t(r.ring_id) << 32) | uint32_t(res.status));
    return false;
  }
  if (ticket != nullptr) platform::fetchMaxRelaxed<Scope::kDevice>(ticket, res.ticket + 1);
  return true;
}

// A proxy peer gets a run of `bytes` from the local send area (`src_off` in the half) at `dst_off` of its half
// (none when bytes == 0), then the add of `value` to its signal word `sig`. One thread.
__device__ inline void proxySend(const Context& ctx, int ring_index, int peer, size_t src_off, size_t dst_off,
                                 size_t bytes, size_t sig, int64_t value, int op, int expert) {
  const int ring = ring_index % ctx.num_rings;
  const ring::RingView& r = ctx.rings[ring];
  if (bytes > 0) {
    const ring::Descriptor w = ring::makeWrite(peer, ctx.rdma_region, src_off, ctx.rdma_region, dst_off,
                                               static_cast<uint32_t>(bytes));
    if (!pushOrRecord(ctx, r, w, op, peer, expert, &stagingTickets(ctx, ctx.use_parity)[ring])) return;
  }
  pushOrRecord(ctx, r, ring::makeSignal(peer, static_cast<uint32_t>(sig), static_cast<int32_t>(value)), op, peer,
               expert);
}

// One warp copies n 16-byte vectors, kUnroll per lane in flight.
template <int kUnroll = 4>
__device__ __forceinline__ void warpCopy16(int4* dst, const int4* src, int n) {
  const int lane = platform::laneId();
  for (int base = 0; base < n; base += kWarpSize * kUnroll) {
    int4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + u * kWarpSize + lane;
      if (i < n) v[u] = src[i];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + u * kWarpSize + lane;
      if (i < n) dst[i] = v[u];
    }
  }
}

}  // namespace uccl::ep::kernels::ll::device
