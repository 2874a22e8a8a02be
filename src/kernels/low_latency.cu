// Low-latency dispatch and combine (see low_latency.hpp and ll_layout.hpp for the contract and the layout).
//
// One kernel per call, `dispatch` and `combine`, so a profiler finds each by name; a Phase argument picks its
// parts. The send part runs on blocks [0, send blocks), the receive part on the last receive-blocks of the grid
// (all of it for Phase::kRecv, the hook's launch): a block that waits for its own grid's send part was scheduled
// after the blocks it waits for.
//
// dispatch, send   one block per global expert e: lists this rank's tokens that picked e in token order (their
//                  slots), writes one message per token (FP8-cast on the fly) straight into the receiver's GPU
//                  buffer (NVLink peer) or into the local staging run of e (proxy peer), then signals
//                  count + 1: a system-scope add (NVLink) or WRITE + SIGNAL descriptors (one of each per expert).
// dispatch, recv   one block per local expert: waits for every source's count, lays rows out by source rank
//                  (layout_range), copies them into recv_x / scales / src_info, resets the count words.
// combine, send    one block per (local expert, source rank) pair: sends that pair's rows back as one run into
//                  combine_recv[e][slot] at the source (BF16 or logfmt); also block b recomputes this rank's
//                  slots for expert b, which the receive part needs (in one grid it waits for all of them).
// combine, recv    blocks over tokens: wait for the flags of the experts they need, then one warp per token sums
//                  the top-k weighted rows; the last block to finish resets the flags.
//
// Expert ids: block 0 of each send part checks every top-k entry and records the first one outside
// [-1, num_experts) (kBadExpertId, error_record.hpp); every part skips such entries (they match no expert and are
// never used as an index), so the call completes and the next call raises ArgumentError. No host read needed.
#include "kernels/low_latency.hpp"

#include <climits>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "kernels/launch.hpp"
#include "kernels/logfmt.hpp"
#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/platform/numeric.hpp"
#include "uccl_ep/platform/warp.hpp"
#include "uccl_ep/ring/descriptor.hpp"
#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::kernels::ll {
namespace {

using platform::kWarpSize;
using platform::Scope;

constexpr int kThreads = 512;
constexpr int kMaxWarps = kThreads / kWarpSize;
constexpr int kValuesPerLane = 8;                                   // one 16-byte vector of BF16
constexpr int kLanesPerGroup = kChannelsPerScale / kValuesPerLane;  // 16 lanes cover one 128-channel group
constexpr int kChannelsPerStep = kWarpSize * kValuesPerLane;

__device__ __forceinline__ uint64_t* word(int64_t* p) { return reinterpret_cast<uint64_t*>(p); }

// The mask is in this GPU's memory; within a call only this GPU's threads set entries (atomicExch when a peer times
// out), and the host changes it only between calls, in stream order. Relaxed at device scope: a poll that decides
// whether to wait for a rank, and reads nothing behind the flag.
__device__ __forceinline__ bool masked(const Context& ctx, int rank) {
  return ctx.enable_shrink && platform::loadRelaxed<Scope::kDevice>(&ctx.mask[rank]) != 0;
}

// Waits until *w is nonzero; returns the value, or 0 after the timeout. Adds the waited time to *cost.
__device__ uint64_t waitNonZero(int64_t* w, uint64_t timeout_ns, uint64_t* waited) {
  const uint64_t start = platform::nowNs();
  uint64_t v;
  while ((v = platform::loadAcquire<Scope::kSystem>(word(w))) == 0) {
    if (platform::nowNs() - start > timeout_ns) break;
  }
  *waited = platform::nowNs() - start;
  return v;
}

// Block-wide: writes, in token order, the tokens among [0, T) whose top-k holds `expert` into list[]; returns
// how many. list[j] = t means token t has slot j at that expert.
__device__ int listTokens(const int64_t* topk, int num_tokens, int num_topk, int expert, int* list, int* warp_sums) {
  const int lane = platform::laneId(), warp = platform::warpId(), nwarps = platform::numWarps();
  int total = 0;
  for (int base = 0; base < num_tokens; base += blockDim.x) {
    const int t = base + static_cast<int>(threadIdx.x);
    bool hit = false;
    if (t < num_tokens) {
      for (int k = 0; k < num_topk; ++k) hit |= topk[static_cast<size_t>(t) * num_topk + k] == expert;
    }
    const uint64_t bits = platform::ballot(hit);
    const int before = lane == 0 ? 0 : platform::popcount64(bits & ((uint64_t{1} << lane) - 1));
    if (lane == 0) warp_sums[warp] = platform::popcount64(bits);
    __syncthreads();
    int offset = 0, chunk = 0;
    for (int i = 0; i < nwarps; ++i) {
      offset += i < warp ? warp_sums[i] : 0;
      chunk += warp_sums[i];
    }
    if (hit) list[total + offset + before] = t;
    total += chunk;
    __syncthreads();
  }
  return total;
}

// One warp writes one dispatch message: header, then the BF16 row or its FP8 cast with per-128 scales.
__device__ void writeMessage(uint8_t* msg, const uint16_t* x_row, int hidden, int token, bool fp8, bool round_scale) {
  const int lane = platform::laneId();
  if (lane == 0) *reinterpret_cast<int4*>(msg) = make_int4(token, 0, 0, 0);
  uint8_t* payload = msg + kHeaderBytes;
  if (!fp8) {
    for (int c = lane * kValuesPerLane; c < hidden; c += kChannelsPerStep) {
      *reinterpret_cast<int4*>(payload + c * 2) = *reinterpret_cast<const int4*>(x_row + c);
    }
    return;
  }
  float* scales = reinterpret_cast<float*>(payload + hidden);
  for (int c0 = 0; c0 < hidden; c0 += kChannelsPerStep) {
    const int c = c0 + lane * kValuesPerLane;
    const bool valid = c < hidden;  // whole 16-lane groups are valid or not (hidden is a multiple of 128)
    int4 raw = valid ? *reinterpret_cast<const int4*>(x_row + c) : make_int4(0, 0, 0, 0);
    const uint16_t* h = reinterpret_cast<const uint16_t*>(&raw);
    float v[kValuesPerLane];
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kValuesPerLane; ++i) {
      v[i] = platform::bf16ToFloat(h[i]);
      amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = platform::groupMax<kLanesPerGroup>(amax);
    const float scale = platform::fp8Scale(amax, round_scale);
    uint32_t packed[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < kValuesPerLane; ++i) {
      packed[i / 4] |= uint32_t{platform::floatToFp8E4m3(v[i] / scale)} << (8 * (i % 4));
    }
    if (valid) {
      *reinterpret_cast<uint2*>(payload + c) = make_uint2(packed[0], packed[1]);
      if (lane % kLanesPerGroup == 0) scales[c / kChannelsPerScale] = scale;
    }
  }
}

// Waits until every descriptor pushed so far has completed on all rings, so that a staging area the proxy may
// still be reading from can be overwritten. Returns false (error recorded) on timeout or a dead ring.
__device__ bool waitRingsIdle(const Context& ctx, int op) {
  for (int i = 0; i < ctx.num_rings; ++i) {
    const ring::RingView& r = ctx.rings[i];
    const uint64_t head = platform::loadRelaxed<Scope::kDevice>(&r.producer->head);
    if (head == 0) continue;
    const ring::Status s = ring::waitCompleted(r, head - 1, ctx.timeout_ns);
    if (s != ring::Status::kOk) {
      recordError(ctx.error, kRingError, op, -1, -1, (uint64_t(i) << 32) | uint32_t(s));
      return false;
    }
  }
  return true;
}

__device__ bool pushOrRecord(const Context& ctx, const ring::RingView& r, ring::Descriptor d, int op, int peer,
                             int expert) {
  const ring::PushResult res = ring::push(r, d, ctx.timeout_ns);
  if (res.status != ring::Status::kOk) {
    recordError(ctx.error, kRingError, op, peer, expert, (uint64_t(r.ring_id) << 32) | uint32_t(res.status));
    return false;
  }
  return true;
}

UCCL_EP_HOST_DEVICE inline bool hasSend(Phase p) { return static_cast<int>(p) & static_cast<int>(Phase::kSend); }
UCCL_EP_HOST_DEVICE inline bool hasRecv(Phase p) { return static_cast<int>(p) & static_cast<int>(Phase::kRecv); }

// The blocks of one launch: the send part on [0, send), the receive part on the last `recv` blocks.
struct Parts {
  int send = 0;
  int recv = 0;
  UCCL_EP_HOST_DEVICE int grid(Phase p) const {
    const int s = hasSend(p) ? send : 0;
    const int r = hasRecv(p) ? recv : 0;
    return s > r ? s : r;
  }
};

// This block's index in the receive part, or -1 when it has none.
__device__ __forceinline__ int recvIndex(const Parts& parts, Phase p) {
  if (!hasRecv(p)) return -1;
  const int r = static_cast<int>(blockIdx.x) - (static_cast<int>(gridDim.x) - parts.recv);
  return r >= 0 ? r : -1;
}

UCCL_EP_HOST_DEVICE inline bool validExpert(int64_t id, int num_experts) { return id >= -1 && id < num_experts; }

// Block-wide, in one block per call: records the first top-k entry (row-major) outside [-1, num_experts) as
// kBadExpertId, naming the id, its token and column. Costs one read of topk_idx; the record only on bad input.
__device__ void checkExpertIds(const Context& ctx, const int64_t* topk, int num_tokens, int num_topk, int op) {
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

// ---- dispatch ---------------------------------------------------------------------------------------------
__device__ void dispatchSend(const Context& ctx, const DispatchArgs& a, int e) {
  __shared__ int list[kMaxTokensPerRank];
  __shared__ int warp_sums[kMaxWarps];
  __shared__ bool staging_free;
  const Layout& L = ctx.layout;
  const int dst = e / L.experts_per_rank, el = e % L.experts_per_rank;
  if (e == 0) checkExpertIds(ctx, a.topk_idx, a.num_tokens, a.num_topk, kOpDispatchSend);  // masked or not
  if (masked(ctx, dst)) return;
  const int count = listTokens(a.topk_idx, a.num_tokens, a.num_topk, e, list, warp_sums);

  uint8_t* peer = ctx.peer_gpu_base[dst];
  const size_t half_off = L.halfOffset(ctx.half);
  uint8_t* send_half = (ctx.rdma_base ? ctx.rdma_base : ctx.gpu_base) + half_off;
  if (peer == nullptr && count > 0) {
    if (threadIdx.x == 0) staging_free = waitRingsIdle(ctx, kOpDispatchSend);
    __syncthreads();
    if (!staging_free) return;
  }
  const uint16_t* x = static_cast<const uint16_t*>(a.x);
  for (int j = platform::warpId(); j < count; j += platform::numWarps()) {
    const int t = list[j];
    uint8_t* msg =
        peer != nullptr ? peer + half_off + L.dispatchRecv(el, ctx.rank, j) : send_half + L.dispatchStaging(e, j);
    writeMessage(msg, x + static_cast<size_t>(t) * L.hidden, L.hidden, t, a.use_fp8, a.round_scale);
  }
  // The block's writes are ordered before thread 0's system-scope fence by the barrier; the fence then orders
  // them before the signal (or the descriptor the proxy reads) for observers on other GPUs and the host.
  __syncthreads();
  if (threadIdx.x != 0) return;
  __threadfence_system();
  const size_t sig = static_cast<size_t>(ctx.half) * L.signals_per_half + L.dispatchCount(el, ctx.rank);
  if (peer != nullptr) {
    platform::fetchAddRelaxed<Scope::kSystem>(word(ctx.peer_gpu_signals[dst] + sig), uint64_t(count) + 1);
    return;
  }
  const ring::RingView& r = ctx.rings[e % ctx.num_rings];
  if (count > 0) {
    const ring::Descriptor w =
        ring::makeWrite(dst, ctx.rdma_region, half_off + L.dispatchStaging(e, 0), ctx.rdma_region,
                        half_off + L.dispatchRecv(el, ctx.rank, 0), static_cast<uint32_t>(count * L.msg_bytes));
    if (!pushOrRecord(ctx, r, w, kOpDispatchSend, dst, e)) return;
  }
  pushOrRecord(ctx, r, ring::makeSignal(dst, static_cast<uint32_t>(sig), count + 1), kOpDispatchSend, dst, e);
}

__device__ void dispatchRecv(const Context& ctx, const DispatchArgs& a, int el) {
  extern __shared__ int shm[];  // counts[R], begins[R]
  const Layout& L = ctx.layout;
  const int R = L.num_ranks;
  int* counts = shm;
  int* begins = shm + R;
  __shared__ int total;
  const int expert = ctx.rank * L.experts_per_rank + el;
  const size_t half_sig = static_cast<size_t>(ctx.half) * L.signals_per_half;
  for (int s = threadIdx.x; s < R; s += blockDim.x) {
    int c = 0;
    if (!masked(ctx, s)) {
      int64_t* w = (ctx.peer_gpu_base[s] ? ctx.gpu_signals : ctx.rdma_signals) + half_sig + L.dispatchCount(el, s);
      uint64_t waited = 0;
      const uint64_t v = waitNonZero(w, ctx.timeout_ns, &waited);
      if (v == 0) {
        if (ctx.enable_shrink) {
          atomicExch(&ctx.mask[s], 1);
        } else {
          recordError(ctx.error, kTimeout, kOpDispatchRecv, s, expert, 0);
        }
      } else {
        c = static_cast<int>(v - 1);
        platform::storeRelease<Scope::kSystem>(word(w), 0);
      }
      if (a.dispatch_wait_recv_cost_stats) {
        atomicAdd(reinterpret_cast<unsigned long long*>(&a.dispatch_wait_recv_cost_stats[s]),
                  static_cast<unsigned long long>(waited));
      }
    }
    counts[s] = c;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int s = 0; s < R; ++s) {
      begins[s] = acc;
      a.layout_range[static_cast<size_t>(el) * R + s] = (int64_t(acc) << 32) | int64_t(counts[s]);
      acc += counts[s];
    }
    total = acc;
    a.recv_count[el] = acc;
    if (a.cumulative_local_expert_recv_stats) atomicAdd(&a.cumulative_local_expert_recv_stats[el], acc);
  }
  __syncthreads();

  const size_t rows_per_expert = static_cast<size_t>(R) * L.max_tokens;
  const size_t half_off = L.halfOffset(ctx.half);
  const int lane = platform::laneId();
  const int groups = L.hidden / kChannelsPerScale;
  const size_t payload_bytes = a.use_fp8 ? static_cast<size_t>(L.hidden) : static_cast<size_t>(L.hidden) * 2;
  for (int row = platform::warpId(); row < total; row += platform::numWarps()) {
    int s = 0;
    while (s + 1 < R && begins[s + 1] <= row) ++s;
    const int j = row - begins[s];
    const uint8_t* msg = (ctx.peer_gpu_base[s] ? ctx.gpu_base : ctx.rdma_base) + half_off + L.dispatchRecv(el, s, j);
    const size_t out_row = el * rows_per_expert + row;
    if (lane == 0) a.src_info[out_row] = *reinterpret_cast<const int*>(msg);
    const int4* src = reinterpret_cast<const int4*>(msg + kHeaderBytes);
    int4* dstp = reinterpret_cast<int4*>(static_cast<uint8_t*>(a.recv_x) + out_row * payload_bytes);
    for (size_t i = lane; i < payload_bytes / 16; i += kWarpSize) dstp[i] = src[i];
    if (a.use_fp8) {
      const float* sc = reinterpret_cast<const float*>(msg + kHeaderBytes + L.hidden);
      if (a.use_ue8m0) {
        int32_t* out = static_cast<int32_t*>(a.recv_x_scales);
        for (int g4 = lane; g4 < groups / 4; g4 += kWarpSize) {
          uint32_t packed = 0;
          for (int i = 0; i < 4; ++i) packed |= platform::ue8m0Byte(sc[g4 * 4 + i]) << (8 * i);
          out[(el * static_cast<size_t>(groups / 4) + g4) * rows_per_expert + row] = static_cast<int32_t>(packed);
        }
      } else {
        float* out = static_cast<float*>(a.recv_x_scales);
        for (int g = lane; g < groups; g += kWarpSize)
          out[(el * static_cast<size_t>(groups) + g) * rows_per_expert + row] = sc[g];
      }
    }
  }
}

UCCL_EP_HOST_DEVICE Parts dispatchParts(const Layout& L) { return Parts{L.num_experts, L.experts_per_rank}; }

__global__ void __launch_bounds__(kThreads) dispatch(Context ctx, DispatchArgs a, Phase phase) {
  const Parts parts = dispatchParts(ctx.layout);
  if (hasSend(phase) && static_cast<int>(blockIdx.x) < parts.send) dispatchSend(ctx, a, blockIdx.x);
  const int r = recvIndex(parts, phase);
  if (r >= 0) dispatchRecv(ctx, a, r);
}

// ---- combine ----------------------------------------------------------------------------------------------
// One warp: a BF16 row (src) -> its logfmt encoding (dst). dst may alias src: groups are read before written
// and encoded groups are never longer than the BF16 groups they replace.
__device__ void encodeLogfmtRow(const uint16_t* src, uint8_t* dst, int hidden) {
  const int lane = platform::laneId();
  for (int c0 = 0; c0 < hidden; c0 += kChannelsPerStep) {
    const int c = c0 + lane * kValuesPerLane;
    const bool valid = c < hidden;
    int4 raw = valid ? *reinterpret_cast<const int4*>(src + c) : make_int4(0, 0, 0, 0);
    platform::syncWarp();  // every lane has read its part of these groups before any lane writes
    const uint16_t* h = reinterpret_cast<const uint16_t*>(&raw);
    float v[kValuesPerLane];
    float amax = 0.0f, amin = INFINITY;
#pragma unroll
    for (int i = 0; i < kValuesPerLane; ++i) {
      v[i] = platform::bf16ToFloat(h[i]);
      const float m = fabsf(v[i]);
      amax = fmaxf(amax, m);
      if (m > 0.0f) amin = fminf(amin, m);
    }
    amax = platform::groupMax<kLanesPerGroup>(amax);
    amin = platform::groupMin<kLanesPerGroup>(amin);
    const LogfmtParams p = logfmtParams(amax, amin);
    uint32_t codes[kValuesPerLane];
#pragma unroll
    for (int i = 0; i < kValuesPerLane; ++i) codes[i] = logfmtEncode(v[i], p);
    uint16_t w[5];
    logfmtPack8(codes, w);
    if (valid) {
      uint8_t* group = dst + static_cast<size_t>(c / kChannelsPerScale) * kLogfmtGroupBytes;
      uint16_t* out = reinterpret_cast<uint16_t*>(group + 8 + (lane % kLanesPerGroup) * 10);
#pragma unroll
      for (int i = 0; i < 5; ++i) out[i] = w[i];
      if (lane % kLanesPerGroup == 0) {
        reinterpret_cast<float*>(group)[0] = p.lo;
        reinterpret_cast<float*>(group)[1] = p.step;
      }
    }
    platform::syncWarp();
  }
}

// The combine's two grid counters, in the scratch after the slots (low_latency.hpp).
__device__ __forceinline__ unsigned int* scratchCounter(const Context& ctx, ScratchCounter c) {
  return reinterpret_cast<unsigned int*>(ctx.scratch + static_cast<size_t>(ctx.layout.max_tokens) * kMaxTopk + c);
}

// b: global expert for the slots; (local expert, source rank) pair for the rows. announce_slots (send and receive in
// one grid): count this block's slot list as done for the receive part (kSlotBlocksDone).
__device__ void combineSend(const Context& ctx, const CombineArgs& a, int b, bool announce_slots) {
  __shared__ int list[kMaxTokensPerRank];
  __shared__ int warp_sums[kMaxWarps];
  __shared__ bool staging_free;
  const Layout& L = ctx.layout;
  const int R = L.num_ranks;
  if (b == 0) checkExpertIds(ctx, a.topk_idx, a.num_tokens, a.num_topk, kOpCombineSend);

  // Slots of this rank's tokens at expert b, for the receive half.
  int* slots = ctx.scratch;
  const int n = listTokens(a.topk_idx, a.num_tokens, a.num_topk, b, list, warp_sums);
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const int t = list[j];
    for (int k = 0; k < a.num_topk; ++k) {
      if (a.topk_idx[static_cast<size_t>(t) * a.num_topk + k] == b) slots[t * a.num_topk + k] = j;
    }
  }
  if (announce_slots) {
    // The barrier orders the block's slot writes before thread 0's fence; the fence orders them before the count
    // a receive block of this grid reads with acquire.
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(scratchCounter(ctx, kSlotBlocksDone), 1u);
    }
  }

  const int el = b / R, s = b % R;
  if (masked(ctx, s)) return;
  const int64_t range = a.layout_range[static_cast<size_t>(el) * R + s];
  const int begin = static_cast<int>(range >> 32), count = static_cast<int>(range & 0xffffffff);
  const int expert = ctx.rank * L.experts_per_rank + el;
  uint8_t* peer = ctx.peer_gpu_base[s];
  const size_t half_off = L.halfOffset(ctx.half);
  uint8_t* send_half = (ctx.rdma_base ? ctx.rdma_base : ctx.gpu_base) + half_off;
  if (peer == nullptr && count > 0 && !a.zero_copy) {
    if (threadIdx.x == 0) staging_free = waitRingsIdle(ctx, kOpCombineSend);
    __syncthreads();
    if (!staging_free) return;
  }
  const size_t rows_per_expert = static_cast<size_t>(R) * L.max_tokens;
  const int lane = platform::laneId();
  for (int i = platform::warpId(); i < count; i += platform::numWarps()) {
    const uint16_t* src = a.zero_copy
                              ? reinterpret_cast<const uint16_t*>(send_half + L.combineSend(el, begin + i))
                              : static_cast<const uint16_t*>(a.x) + (el * rows_per_expert + begin + i) * L.hidden;
    uint8_t* dst =
        peer != nullptr ? peer + half_off + L.combineRecv(expert, i) : send_half + L.combineSend(el, begin + i);
    if (a.use_logfmt) {
      encodeLogfmtRow(src, dst, L.hidden);
    } else if (reinterpret_cast<const uint8_t*>(src) != dst) {
      for (int c = lane * kValuesPerLane; c < L.hidden; c += kChannelsPerStep) {
        *reinterpret_cast<int4*>(dst + c * 2) = *reinterpret_cast<const int4*>(src + c);
      }
    }
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  __threadfence_system();  // as in dispatchSend
  const size_t sig = static_cast<size_t>(ctx.half) * L.signals_per_half + L.combineFlag(expert);
  if (peer != nullptr) {
    platform::fetchAddRelaxed<Scope::kSystem>(word(ctx.peer_gpu_signals[s] + sig), 1);
    return;
  }
  const ring::RingView& r = ctx.rings[b % ctx.num_rings];
  if (count > 0) {
    const ring::Descriptor w =
        ring::makeWrite(s, ctx.rdma_region, half_off + L.combineSend(el, begin), ctx.rdma_region,
                        half_off + L.combineRecv(expert, 0), static_cast<uint32_t>(count * L.row_bytes));
    if (!pushOrRecord(ctx, r, w, kOpCombineSend, s, expert)) return;
  }
  pushOrRecord(ctx, r, ring::makeSignal(s, static_cast<uint32_t>(sig), 1), kOpCombineSend, s, expert);
}

// Thread 0 waits until every send block of this grid has listed its slots; false (error recorded) on timeout.
__device__ bool waitSlots(const Context& ctx) {
  const unsigned int* done = scratchCounter(ctx, kSlotBlocksDone);
  const unsigned int want = static_cast<unsigned int>(ctx.layout.num_experts);
  const uint64_t start = platform::nowNs();
  while (platform::loadAcquire<Scope::kDevice>(done) < want) {
    if (platform::nowNs() - start > ctx.timeout_ns) {
      recordError(ctx.error, kTimeout, kOpCombineSlots, ctx.rank, -1, 0);
      return false;
    }
  }
  return true;
}

// b: this block's index among the G blocks of the receive part. wait_slots: send and receive in one grid.
__device__ void combineRecv(const Context& ctx, const CombineArgs& a, int b, int G, bool wait_slots) {
  extern __shared__ uint8_t need[];  // [E]
  __shared__ bool slots_ready;
  const Layout& L = ctx.layout;
  const int E = L.num_experts, K = a.num_topk;
  const int nwarps = platform::numWarps();
  const size_t half_sig = static_cast<size_t>(ctx.half) * L.signals_per_half;
  if (threadIdx.x == 0) slots_ready = !wait_slots || waitSlots(ctx);
  for (int e = threadIdx.x; e < E; e += blockDim.x) need[e] = (e % G == b) ? 2 : 0;  // 2: this block's stats
  __syncthreads();
  for (int t = b * nwarps + platform::warpId(); t < a.num_tokens; t += G * nwarps) {
    const int lane = platform::laneId();
    if (lane < K) {
      const int64_t e = a.topk_idx[static_cast<size_t>(t) * K + lane];
      if (e >= 0 && e < E && need[e] == 0) need[e] = 1;  // a bad id is skipped (send block 0 recorded it)
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    if (need[e] == 0) continue;
    const int src = e / L.experts_per_rank;
    if (masked(ctx, src)) continue;
    int64_t* w = (ctx.peer_gpu_base[src] ? ctx.gpu_signals : ctx.rdma_signals) + half_sig + L.combineFlag(e);
    uint64_t waited = 0;
    if (waitNonZero(w, ctx.timeout_ns, &waited) == 0) {
      if (ctx.enable_shrink) {
        atomicExch(&ctx.mask[src], 1);
      } else {
        recordError(ctx.error, kTimeout, kOpCombineRecv, src, e, 0);
      }
    }
    if (need[e] == 2 && a.combine_wait_recv_cost_stats) {
      atomicAdd(reinterpret_cast<unsigned long long*>(&a.combine_wait_recv_cost_stats[src]),
                static_cast<unsigned long long>(waited));
    }
  }
  __syncthreads();

  const size_t half_off = L.halfOffset(ctx.half);
  const int* slots = ctx.scratch;
  const int lane = platform::laneId();
  for (int t = b * nwarps + platform::warpId(); t < a.num_tokens; t += G * nwarps) {
    const uint8_t* rows[kMaxTopk];
    float weights[kMaxTopk];
    int n = 0;
    for (int k = 0; k < K; ++k) {
      const int64_t e = a.topk_idx[static_cast<size_t>(t) * K + k];
      if (e < 0 || e >= E || !slots_ready) continue;
      const int src = static_cast<int>(e / L.experts_per_rank);
      if (masked(ctx, src)) continue;
      rows[n] = (ctx.peer_gpu_base[src] ? ctx.gpu_base : ctx.rdma_base) + half_off +
                L.combineRecv(static_cast<int>(e), slots[t * K + k]);
      weights[n] = a.topk_weights[static_cast<size_t>(t) * K + k];
      ++n;
    }
    uint16_t* out = static_cast<uint16_t*>(a.combined_x) + static_cast<size_t>(t) * L.hidden;
    for (int c = lane * kValuesPerLane; c < L.hidden; c += kChannelsPerStep) {
      float acc[kValuesPerLane] = {};
      for (int k = 0; k < n; ++k) {
        float v[kValuesPerLane];
        if (a.use_logfmt) {
          const uint8_t* group = rows[k] + static_cast<size_t>(c / kChannelsPerScale) * kLogfmtGroupBytes;
          const LogfmtParams p{reinterpret_cast<const float*>(group)[0], reinterpret_cast<const float*>(group)[1]};
          const uint16_t* in = reinterpret_cast<const uint16_t*>(group + 8 + (lane % kLanesPerGroup) * 10);
          uint16_t wv[5];
          uint32_t codes[kValuesPerLane];
#pragma unroll
          for (int i = 0; i < 5; ++i) wv[i] = in[i];
          logfmtUnpack8(wv, codes);
#pragma unroll
          for (int i = 0; i < kValuesPerLane; ++i) v[i] = logfmtDecode(codes[i], p);
        } else {
          const int4 raw = *reinterpret_cast<const int4*>(rows[k] + c * 2);
          const uint16_t* h = reinterpret_cast<const uint16_t*>(&raw);
#pragma unroll
          for (int i = 0; i < kValuesPerLane; ++i) v[i] = platform::bf16ToFloat(h[i]);
        }
#pragma unroll
        for (int i = 0; i < kValuesPerLane; ++i) acc[i] += weights[k] * v[i];
      }
      uint16_t o[kValuesPerLane];
#pragma unroll
      for (int i = 0; i < kValuesPerLane; ++i) o[i] = platform::floatToBf16(acc[i]);
      *reinterpret_cast<int4*>(out + c) = *reinterpret_cast<const int4*>(o);
    }
  }

  // The last block to finish resets every flag of this half: no block reads them any more, and no sender adds
  // to them again before this rank's next dispatch has been received (ll_layout.hpp).
  // With wait_slots the same block also resets the slot count: every send block has added to it (the receive
  // blocks waited for all of them) and every receive block is past its wait.
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    unsigned int* done = scratchCounter(ctx, kRecvBlocksDone);
    if (atomicAdd(done, 1u) == static_cast<unsigned int>(G - 1)) {
      for (int e = 0; e < E; ++e) {
        platform::storeRelease<Scope::kSystem>(word(ctx.gpu_signals + half_sig + L.combineFlag(e)), 0);
        if (ctx.rdma_signals)
          platform::storeRelease<Scope::kSystem>(word(ctx.rdma_signals + half_sig + L.combineFlag(e)), 0);
      }
      if (wait_slots) atomicExch(scratchCounter(ctx, kSlotBlocksDone), 0u);
      atomicExch(done, 0u);
    }
  }
}

// Blocks of the receive part: one warp per token, at most ctx.num_sms blocks.
UCCL_EP_HOST_DEVICE inline int combineRecvBlocks(const Context& ctx, int num_tokens) {
  const int per_block = kThreads / kWarpSize;
  int blocks = (num_tokens + per_block - 1) / per_block;
  const int cap = ctx.num_sms > 0 ? ctx.num_sms : 1;
  if (blocks > cap) blocks = cap;
  return blocks < 1 ? 1 : blocks;
}

UCCL_EP_HOST_DEVICE Parts combineParts(const Context& ctx, int num_tokens) {
  return Parts{ctx.layout.num_experts, combineRecvBlocks(ctx, num_tokens)};
}

__global__ void __launch_bounds__(kThreads) combine(Context ctx, CombineArgs a, Phase phase) {
  const Parts parts = combineParts(ctx, a.num_tokens);
  const bool one_grid = hasSend(phase) && hasRecv(phase);
  if (hasSend(phase) && static_cast<int>(blockIdx.x) < parts.send) combineSend(ctx, a, blockIdx.x, one_grid);
  const int r = recvIndex(parts, phase);
  if (r >= 0) combineRecv(ctx, a, r, parts.recv, one_grid);
}

// One carveout for every kernel, low-latency and normal alike (launch.hpp says why).
void setCarveout() {
  static const bool once = [] {
    preferMaxShared({reinterpret_cast<const void*>(&dispatch), reinterpret_cast<const void*>(&combine)});
    return true;
  }();
  (void)once;
}

}  // namespace

void launchDispatch(const Context& ctx, const DispatchArgs& args, Phase phase, void* stream) {
  setCarveout();
  // Dynamic shared memory: the receive part's counts[R] and begins[R].
  const size_t shm = hasRecv(phase) ? sizeof(int) * 2 * static_cast<size_t>(ctx.layout.num_ranks) : 0;
  auto s = static_cast<gpuStream_t>(stream);
  dispatch<<<dispatchParts(ctx.layout).grid(phase), kThreads, shm, s>>>(ctx, args, phase);
  checkLaunch(gpuGetLastError(), "low-latency dispatch");
}

void launchCombine(const Context& ctx, const CombineArgs& args, Phase phase, void* stream) {
  setCarveout();
  // Dynamic shared memory: the receive part's need[E].
  const size_t shm = hasRecv(phase) ? static_cast<size_t>(ctx.layout.num_experts) : 0;
  auto s = static_cast<gpuStream_t>(stream);
  combine<<<combineParts(ctx, args.num_tokens).grid(phase), kThreads, shm, s>>>(ctx, args, phase);
  checkLaunch(gpuGetLastError(), "low-latency combine");
}

}  // namespace uccl::ep::kernels::ll
