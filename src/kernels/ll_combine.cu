// Low-latency combine (low_latency.hpp: the contract; ll_layout.hpp: the layout; ll_device.cuh: the pieces shared
// with the dispatch). One kernel per call, `combine`, the name profilers look for; a Phase argument picks its parts.
//
// send     blocks over (local expert, source rank) pairs, pairs b, b + blocks, ... for block b. The block's warps take
//          (row, piece) items over all its pairs and store each row into combine_recv[expert][slot] of the source
//          (a BF16 copy or the logfmt encoding): straight into the source's GPU buffer for NVLink peers, into the
//          send area (laid out as recv_x) for proxy peers. After one fence the block signals each of its pairs that
//          has rows: a system-scope add (NVLink) or a WRITE of the run plus a SIGNAL (proxy). A pair without rows
//          sends nothing (its source needs no row of that expert and waits for no flag of it), and a rank's BF16 rows
//          for itself stay where they are. No block waits for a peer.
// receive  blocks over tokens (a contiguous share each): compute the slots of the block's top-k entries, wait for
//          the flags of their experts, then the warps take (token, step) items and sum the weighted rows in top-k
//          order. Block b alone accounts combine_wait_recv_cost_stats for experts e % blocks == b, so each expert
//          counts once. The last block to finish resets the flags.
#include "kernels/launch.hpp"
#include "kernels/ll_device.cuh"
#include "kernels/ll_timeline.cuh"
#include "kernels/logfmt.hpp"
#include "uccl_ep/platform/numeric.hpp"

namespace uccl::ep::kernels::ll {
namespace {

using namespace device;

// Rows a rank sends itself skip the buffer unless they are encoded (logfmt goes through the buffer, so every row of
// a logfmt combine is rounded alike).
__device__ __forceinline__ bool selfDirect(const CombineArgs& a) { return !a.use_logfmt; }

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

// The 8 channels from c of a logfmt row, decoded.
__device__ __forceinline__ void decodeLogfmt8(const uint8_t* row, int c, float* v) {
  const uint8_t* group = row + static_cast<size_t>(c / kChannelsPerScale) * kLogfmtGroupBytes;
  const LogfmtParams p{reinterpret_cast<const float*>(group)[0], reinterpret_cast<const float*>(group)[1]};
  const uint16_t* in = reinterpret_cast<const uint16_t*>(group + 8 + (platform::laneId() % kLanesPerGroup) * 10);
  uint16_t wv[5];
  uint32_t codes[kValuesPerLane];
#pragma unroll
  for (int i = 0; i < 5; ++i) wv[i] = in[i];
  logfmtUnpack8(wv, codes);
#pragma unroll
  for (int i = 0; i < kValuesPerLane; ++i) v[i] = logfmtDecode(codes[i], p);
}

struct Pair {
  int el, src, begin, count;
};

__device__ __forceinline__ Pair pairAt(const Context& ctx, const CombineArgs& a, int p) {
  const int R = ctx.layout.num_ranks;
  const int64_t range = a.layout_range[p];  // [E_local][R]: p = el * R + src
  return Pair{p / R, p % R, static_cast<int>(range >> 32), static_cast<int>(range & 0xffffffff)};
}

// Whether pair p's rows go out (to a peer, or through the buffer to this rank).
__device__ __forceinline__ bool pairSends(const Context& ctx, const CombineArgs& a, const Pair& q) {
  return q.count > 0 && !(q.src == ctx.rank && selfDirect(a)) && !masked(ctx, q.src);
}

__device__ void combineSend(const Context& ctx, const CombineArgs& a, int b, int blocks) {
  const Layout& L = ctx.layout;
  const int R = L.num_ranks, P = L.experts_per_rank * R;
  const int stride = blocks * static_cast<int>(blockDim.x);
  if (b == 0) checkExpertIds(ctx, a.topk_idx, a.num_tokens, a.num_topk, kOpCombineSend);
  const size_t half_off = L.halfOffset(ctx.half);
  uint8_t* send_half = (ctx.rdma_base ? ctx.rdma_base : ctx.gpu_base) + half_off;
  bool staging = false;
  for (int p = b + blocks * static_cast<int>(threadIdx.x); p < P && !a.zero_copy; p += stride) {
    const Pair q = pairAt(ctx, a, p);
    staging |= pairSends(ctx, a, q) && ctx.peer_gpu_base[q.src] == nullptr;
  }
  if (!stagingFree(ctx, staging, kOpCombineSend)) return;
  timeline::mark(1);

  const size_t rows_per_expert = static_cast<size_t>(R) * L.max_tokens;
  const int vectors = L.hidden * 2 / 16;  // a BF16 row, in 16-byte vectors
  constexpr int kUnroll = 8;  // 4 KiB a warp in flight: 1-2 us less per send than 4 (measured, RESULTS.md)
  constexpr int kPieceVectors = kWarpSize * kUnroll;
  const int pieces = a.use_logfmt ? 1 : (vectors + kPieceVectors - 1) / kPieceVectors;  // logfmt: a row per item
  const int warp = platform::warpId(), nwarps = platform::numWarps();
  int before = 0;  // items of the block's earlier pairs: the warps continue round-robin across pairs
  for (int p = b; p < P; p += blocks) {
    const Pair q = pairAt(ctx, a, p);
    if (!pairSends(ctx, a, q)) continue;
    const int expert = ctx.rank * L.experts_per_rank + q.el;
    uint8_t* peer = ctx.peer_gpu_base[q.src];
    const int items = q.count * pieces;
    for (int i = ((warp - before) % nwarps + nwarps) % nwarps; i < items; i += nwarps) {
      const int row = i / pieces, piece = i % pieces;
      const uint16_t* src =
          a.zero_copy ? reinterpret_cast<const uint16_t*>(send_half + L.combineSend(q.el, q.begin + row))
                      : static_cast<const uint16_t*>(a.x) + (q.el * rows_per_expert + q.begin + row) * L.hidden;
      uint8_t* dst = peer != nullptr ? peer + half_off + L.combineRecv(expert, row)
                                     : send_half + L.combineSend(q.el, q.begin + row);
      if (a.use_logfmt) {
        encodeLogfmtRow(src, dst, L.hidden);
      } else if (reinterpret_cast<const uint8_t*>(src) != dst) {
        const int first = piece * kPieceVectors;
        warpCopy16<kUnroll>(reinterpret_cast<int4*>(dst) + first, reinterpret_cast<const int4*>(src) + first,
                   vectors - first < kPieceVectors ? vectors - first : kPieceVectors);
      }
    }
    before += items;
  }

  // As in the dispatch: the barrier and thread 0's system-scope fence order every row of the block before the
  // signals, which the block's threads then send in parallel.
  __syncthreads();
  timeline::mark(2);
  if (threadIdx.x == 0) __threadfence_system();
  __syncthreads();
  timeline::mark(3);
  for (int p = b + blocks * static_cast<int>(threadIdx.x); p < P; p += stride) {
    const Pair q = pairAt(ctx, a, p);
    if (!pairSends(ctx, a, q)) continue;
    const int expert = ctx.rank * L.experts_per_rank + q.el;
    const size_t sig = static_cast<size_t>(ctx.half) * L.signals_per_half + L.combineFlag(expert);
    if (ctx.peer_gpu_base[q.src] != nullptr) {
      platform::addRelaxed<Scope::kSystem>(word(ctx.peer_gpu_signals[q.src] + sig), 1);
    } else {
      proxySend(ctx, p, q.src, half_off + L.combineSend(q.el, q.begin), half_off + L.combineRecv(expert, 0),
                static_cast<size_t>(q.count) * L.row_bytes, sig, 1, kOpCombineSend, expert);
    }
  }
  timeline::mark(4);
}

// The flag word of expert e (whose rank is src) for this rank, in this half.
__device__ __forceinline__ int64_t* combineFlagWord(const Context& ctx, int src, int e) {
  const size_t half_sig = static_cast<size_t>(ctx.half) * ctx.layout.signals_per_half;
  return (ctx.peer_gpu_base[src] ? ctx.gpu_signals : ctx.rdma_signals) + half_sig + ctx.layout.combineFlag(e);
}

// Block b of G: tokens [t0, t1).
__device__ void combineRecv(const Context& ctx, const CombineArgs& a, int b, int G, uint8_t* shm) {
  const Layout& L = ctx.layout;
  const int T = a.num_tokens, K = a.num_topk, E = L.num_experts, R = L.num_ranks;
  unsigned* counts = reinterpret_cast<unsigned*>(shm);
  Entry* entries = reinterpret_cast<Entry*>(shm + countsBytes(E));
  const int t0 = shareBegin(T, b, G), t1 = shareBegin(T, b + 1, G);
  slotEntries(a.topk_idx, T, K, E, t0, t1, counts, entries);
  timeline::mark(5);

  // Each entry's row: this rank's own output (self, BF16), or combine_recv once its expert's flag is up.
  const size_t half_off = L.halfOffset(ctx.half);
  uint8_t* send_half = (ctx.rdma_base ? ctx.rdma_base : ctx.gpu_base) + half_off;
  const size_t rows_per_expert = static_cast<size_t>(R) * L.max_tokens;
  const int n = (t1 - t0) * K;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    Entry& en = entries[i];
    if (en.expert < 0) continue;
    const int src = en.expert / L.experts_per_rank, el = en.expert % L.experts_per_rank;
    if (masked(ctx, src)) continue;
    if (src == ctx.rank && selfDirect(a)) {
      const int begin = static_cast<int>(a.layout_range[static_cast<size_t>(el) * R + src] >> 32);
      en.ptr = a.zero_copy ? send_half + L.combineSend(el, begin + en.slot)
                           : const_cast<uint8_t*>(static_cast<const uint8_t*>(a.x)) +
                                 (el * rows_per_expert + begin + en.slot) * L.hidden * 2;
      continue;
    }
    uint64_t waited = 0;
    if (waitNonZero(combineFlagWord(ctx, src, en.expert), ctx.timeout_ns, &waited) == 0) {
      peerTimedOut(ctx, kOpCombineRecv, src, en.expert);
      continue;
    }
    en.ptr = (ctx.peer_gpu_base[src] ? ctx.gpu_base : ctx.rdma_base) + half_off + L.combineRecv(en.expert, en.slot);
  }
  if (a.combine_wait_recv_cost_stats) {
    for (int e = b + G * static_cast<int>(threadIdx.x); e < E; e += G * static_cast<int>(blockDim.x)) {
      const int src = e / L.experts_per_rank;
      if (expertTotal(counts, e) == 0 || masked(ctx, src) || (src == ctx.rank && selfDirect(a))) continue;
      uint64_t waited = 0;
      waitNonZero(combineFlagWord(ctx, src, e), ctx.timeout_ns, &waited);
      atomicAdd(reinterpret_cast<unsigned long long*>(&a.combine_wait_recv_cost_stats[src]),
                static_cast<unsigned long long>(waited));
    }
  }
  __syncthreads();
  timeline::mark(6);

  const int lane = platform::laneId();
  const int steps = (L.hidden + kChannelsPerStep - 1) / kChannelsPerStep;
  for (int i = platform::warpId(); i < (t1 - t0) * steps; i += platform::numWarps()) {
    const int tl = i / steps, t = t0 + tl;
    const int c = (i % steps) * kChannelsPerStep + lane * kValuesPerLane;
    if (c >= L.hidden) continue;  // no shuffles below
    const Entry* en = entries + tl * K;
    const float* weights = a.topk_weights + static_cast<size_t>(t) * K;
    float acc[kValuesPerLane] = {};
    for (int k0 = 0; k0 < K; k0 += 4) {  // four rows' loads in flight
      int4 raw[4];
      float w[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int k = k0 + u;
        const uint8_t* row = k < K ? en[k].ptr : nullptr;
        w[u] = row != nullptr ? weights[k] : 0.0f;
        raw[u] = row != nullptr && !a.use_logfmt ? *reinterpret_cast<const int4*>(row + static_cast<size_t>(c) * 2)
                                                 : make_int4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        float v[kValuesPerLane];
        if (a.use_logfmt) {
          const uint8_t* row = k0 + u < K ? en[k0 + u].ptr : nullptr;
          if (row == nullptr) continue;
          decodeLogfmt8(row, c, v);
        } else {
          const uint16_t* h = reinterpret_cast<const uint16_t*>(&raw[u]);
#pragma unroll
          for (int j = 0; j < kValuesPerLane; ++j) v[j] = platform::bf16ToFloat(h[j]);
        }
#pragma unroll
        for (int j = 0; j < kValuesPerLane; ++j) acc[j] += w[u] * v[j];
      }
    }
    uint16_t o[kValuesPerLane];
#pragma unroll
    for (int j = 0; j < kValuesPerLane; ++j) o[j] = platform::floatToBf16(acc[j]);
    *reinterpret_cast<int4*>(static_cast<uint16_t*>(a.combined_x) + static_cast<size_t>(t) * L.hidden + c) =
        *reinterpret_cast<const int4*>(o);
  }

  // The last block to finish resets every flag of this half: no block reads them any more, and no sender adds to
  // them again before this rank's next dispatch has been received (ll_layout.hpp). The kernel's end orders the
  // resets before anything a later kernel does.
  __shared__ bool last;
  __syncthreads();
  timeline::mark(7);
  if (threadIdx.x == 0) {
    __threadfence();
    last = atomicAdd(reinterpret_cast<unsigned*>(ctx.scratch + kRecvBlocksDone), 1u) == static_cast<unsigned>(G - 1);
  }
  __syncthreads();
  if (!last) return;
  const size_t half_sig = static_cast<size_t>(ctx.half) * L.signals_per_half;
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    platform::storeRelaxed<Scope::kSystem>(word(ctx.gpu_signals + half_sig + L.combineFlag(e)), 0);
    if (ctx.rdma_signals) platform::storeRelaxed<Scope::kSystem>(word(ctx.rdma_signals + half_sig + L.combineFlag(e)), 0);
  }
  if (threadIdx.x == 0) atomicExch(reinterpret_cast<unsigned*>(ctx.scratch + kRecvBlocksDone), 0u);
}

UCCL_EP_HOST_DEVICE Parts combineParts(const Context& ctx, int num_tokens) {
  return Parts{blocksFor(ctx.layout.experts_per_rank * ctx.layout.num_ranks, ctx.num_sms),
               blocksFor(num_tokens, ctx.num_sms)};
}

__global__ void __launch_bounds__(kThreads) combine(Context ctx, CombineArgs a, Phase phase) {
  extern __shared__ __align__(16) uint8_t shm[];
  timeline::mark(0);
  const Parts parts = combineParts(ctx, a.num_tokens);
  if (hasSend(phase) && static_cast<int>(blockIdx.x) < parts.send) combineSend(ctx, a, blockIdx.x, parts.send);
  const int r = recvIndex(parts, phase);
  if (r >= 0) combineRecv(ctx, a, r, parts.recv, shm);
  static constexpr const char* kNames[timeline::kPhases] = {"start", "staging free", "copied", "fenced",
                                                            "signalled", "slots", "flags", "reduced"};
  timeline::finish("combine", kNames);
}

}  // namespace

void launchCombine(const Context& ctx, const CombineArgs& args, Phase phase, void* stream) {
  const Parts parts = combineParts(ctx, args.num_tokens);
  // Dynamic shared memory: the receive part's counts and entries.
  const size_t shm =
      hasRecv(phase) ? slotSharedBytes(ctx.layout.num_experts, maxShare(args.num_tokens, parts.recv)) : 0;
  static SharedMemoryLimit limit(reinterpret_cast<const void*>(&combine));
  limit.allow(shm);
  combine<<<parts.grid(phase), kThreads, shm, static_cast<gpuStream_t>(stream)>>>(ctx, args, phase);
  checkLaunch(gpuGetLastError(), "low-latency combine");
}

}  // namespace uccl::ep::kernels::ll
