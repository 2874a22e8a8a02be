// Low-latency dispatch (low_latency.hpp: the contract; ll_layout.hpp: the layout; ll_device.cuh: the pieces shared
// with the combine). One kernel per call, `dispatch`, the name profilers look for; a Phase argument picks its parts.
//
// send     blocks over tokens, a contiguous share each (one token per block up to one block per SM). A block computes
//          its tokens' slots (slotEntries), then its warps take (token, step) items: a warp reads one step of the
//          token's row once, casts it to FP8 once (when asked), and stores it, 16 bytes a lane, into every message of
//          that token: straight into the receiver's GPU buffer for NVLink peers, into the expert's local staging run
//          for proxy peers. Once the block's stores are fenced, each message to an NVLink peer announces itself with
//          one add to the receiver's count word (ll_layout.hpp: the slot-0 message also carries the count), so no
//          block waits for another. For a proxy peer the block adds its tokens to the expert's done count (scratch),
//          and the block that completes the expert sends a WRITE of the staging run plus a SIGNAL of count + 1.
//          Block b sends count 0 to the experts e with e % blocks == b that no token picked, before its stores.
//          The count words of NVLink peers are found with the destinations, so after the fence only the adds are
//          left. Every byte is read once and crosses NVLink once; no block waits.
// receive  blocks over local experts: waits for every source's count, lays the rows out by source rank
//          (layout_range), copies them into recv_x / scales / src_info in pieces spread over the warps, and resets
//          the count words.
#include <algorithm>

#include "kernels/launch.hpp"
#include "kernels/ll_device.cuh"
#include "kernels/ll_timeline.cuh"
#include "uccl_ep/platform/numeric.hpp"

namespace uccl::ep::kernels::ll {
namespace {

using namespace device;

// The dispatch's per-expert done counts in the scratch (low_latency.hpp).
__device__ __forceinline__ unsigned* doneCounts(const Context& ctx) {
  return reinterpret_cast<unsigned*>(ctx.scratch + kDispatchDone);
}

// Channels one lane casts and stores per step: 16 for FP8 (one 16-byte store of FP8 values, from two 16-byte loads
// of BF16), 8 for BF16 (one 16-byte load and store). A 128-channel scale group spans 8 or 16 lanes.
template <bool kFp8>
inline constexpr int kLaneChannels = kFp8 ? 2 * kValuesPerLane : kValuesPerLane;
template <bool kFp8>
inline constexpr int kStepChannels = kWarpSize * kLaneChannels<kFp8>;

// One warp stores one step (kStepChannels channels from c0) of token `token`'s row into each of its K messages
// (entries with a null destination are skipped); the step holding channel 0 also writes the header.
template <bool kFp8>
__device__ void storeStep(const Entry* en, int K, const uint16_t* x_row, int hidden, int token, int c0,
                          bool round_scale) {
  constexpr int kLanes = kLaneChannels<kFp8>;
  const int lane = platform::laneId();
  const int c = c0 + lane * kLanes;
  const bool valid = c < hidden;  // whole scale groups are valid or not (hidden is a multiple of 128)
  int4 raw[kLanes / kValuesPerLane];
#pragma unroll
  for (int i = 0; i < kLanes / kValuesPerLane; ++i) {
    raw[i] = valid ? *reinterpret_cast<const int4*>(x_row + c + i * kValuesPerLane) : make_int4(0, 0, 0, 0);
  }
  int4 out = raw[0];
  float scale = 0.0f;
  if constexpr (kFp8) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(raw);
    float v[kLanes];
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kLanes; ++i) {
      v[i] = platform::bf16ToFloat(h[i]);
      amax = fmaxf(amax, fabsf(v[i]));
    }
    amax = platform::groupMax<kChannelsPerScale / kLanes>(amax);
    scale = platform::fp8Scale(amax, round_scale);
    uint32_t p[4] = {0, 0, 0, 0};
#pragma unroll
    for (int i = 0; i < kLanes; ++i) p[i / 4] |= uint32_t{platform::floatToFp8E4m3(v[i] / scale)} << (8 * (i % 4));
    out = make_int4(static_cast<int>(p[0]), static_cast<int>(p[1]), static_cast<int>(p[2]), static_cast<int>(p[3]));
  }
  for (int k = 0; k < K; ++k) {
    uint8_t* msg = en[k].ptr;
    if (msg == nullptr) continue;
    if (c0 == 0 && lane == 0) *reinterpret_cast<int4*>(msg) = make_int4(token, 0, 0, 0);
    if (!valid) continue;
    uint8_t* payload = msg + kHeaderBytes;
    if constexpr (kFp8) {
      *reinterpret_cast<int4*>(payload + c) = out;
      if (lane % (kChannelsPerScale / kLanes) == 0) {
        reinterpret_cast<float*>(payload + hidden)[c / kChannelsPerScale] = scale;
      }
    } else {
      *reinterpret_cast<int4*>(payload + static_cast<size_t>(c) * 2) = out;
    }
  }
}

// The block's (token, step) items over its warps.
template <bool kFp8>
__device__ void storeRows(const Entry* entries, int K, const uint16_t* x, int hidden, int t0, int t1,
                          bool round_scale) {
  constexpr int kStep = kStepChannels<kFp8>;
  const int steps = (hidden + kStep - 1) / kStep;
  for (int i = platform::warpId(); i < (t1 - t0) * steps; i += platform::numWarps()) {
    const int tl = i / steps;
    storeStep<kFp8>(entries + tl * K, K, x + static_cast<size_t>(t0 + tl) * hidden, hidden, t0 + tl,
                    (i % steps) * kStep, round_scale);
  }
}

// This rank's dispatch_count word at expert e, in this half.
__device__ __forceinline__ size_t countSignal(const Context& ctx, int e) {
  const Layout& L = ctx.layout;
  return static_cast<size_t>(ctx.half) * L.signals_per_half + L.dispatchCount(e % L.experts_per_rank, ctx.rank);
}

// This rank's count word at expert e on its NVLink peer `dst` (ll_layout.hpp: nvlCountAdd). Adds to it are not
// waited for.
__device__ __forceinline__ int64_t* nvlCountWord(const Context& ctx, int dst, int e) {
  return ctx.peer_gpu_signals[dst] + countSignal(ctx, e);
}

// Sends expert e, reached through the proxy, its count: a WRITE of its staging run, then count + 1 into its
// dispatch_count word for this rank. One thread; for count > 0 every message of e is fenced before this call.
__device__ void signalProxyExpert(const Context& ctx, int e, int count) {
  const Layout& L = ctx.layout;
  const int dst = e / L.experts_per_rank, el = e % L.experts_per_rank;
  if (masked(ctx, dst)) return;
  const size_t sig = countSignal(ctx, e);
  const size_t half_off = L.halfOffset(ctx.half);
  proxySend(ctx, e, dst, half_off + L.dispatchStaging(e, 0), half_off + L.dispatchRecv(el, ctx.rank, 0),
            static_cast<size_t>(count) * L.msg_bytes, sig, count + 1, kOpDispatchSend, e);
}

__device__ void dispatchSend(const Context& ctx, const DispatchArgs& a, int b, int blocks, uint8_t* shm) {
  const Layout& L = ctx.layout;
  const int T = a.num_tokens, K = a.num_topk, E = L.num_experts;
  unsigned* counts = reinterpret_cast<unsigned*>(shm);
  Entry* entries = reinterpret_cast<Entry*>(shm + countsBytes(E));
  if (b == 0) checkExpertIds(ctx, a.topk_idx, T, K, kOpDispatchSend);  // masked or not
  const int t0 = shareBegin(T, b, blocks), t1 = shareBegin(T, b + 1, blocks);
  slotEntries(a.topk_idx, T, K, E, t0, t1, counts, entries);
  timeline::mark(1);

  // Each entry's message: in the receiver's buffer (NVLink peer) or in the expert's staging run (proxy peer).
  const size_t half_off = L.halfOffset(ctx.half);
  uint8_t* send_half = (ctx.rdma_base ? ctx.rdma_base : ctx.gpu_base) + half_off;
  const int n = (t1 - t0) * K;
  bool staging = false;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    Entry& en = entries[i];
    if (en.expert < 0 || en.repeat) continue;
    const int dst = en.expert / L.experts_per_rank, el = en.expert % L.experts_per_rank;
    if (masked(ctx, dst)) continue;
    uint8_t* peer = ctx.peer_gpu_base[dst];
    en.ptr = (peer != nullptr ? peer + half_off + L.dispatchRecv(el, ctx.rank, en.slot)
                              : send_half + L.dispatchStaging(en.expert, en.slot)) +
             L.messageOffset(a.use_fp8, en.slot);
    if (peer != nullptr) en.signal = nvlCountWord(ctx, dst, en.expert);  // found now, added to after the fence
    staging |= peer == nullptr;
  }
  // Block b sends count 0 to the experts e with e % blocks == b that no token picked: no message to order before it,
  // so now rather than after the stores. Counted from the last thread, so the threads that found destinations above
  // are not also the ones that do this.
  const int from_last = static_cast<int>(blockDim.x - 1 - threadIdx.x);
  for (int e = b + blocks * from_last; e < E; e += blocks * static_cast<int>(blockDim.x)) {
    if (expertTotal(counts, e) != 0) continue;
    const int dst = e / L.experts_per_rank;
    if (ctx.peer_gpu_base[dst] == nullptr) {
      signalProxyExpert(ctx, e, 0);  // skips a masked peer
    } else if (!masked(ctx, dst)) {
      platform::addRelaxed<Scope::kSystem>(word(nvlCountWord(ctx, dst, e)), nvlCountAdd(true, 0, /*message=*/false));
    }
  }
  if (!stagingFree(ctx, staging, kOpDispatchSend)) return;  // also the barrier after the destinations
  timeline::mark(2);

  const uint16_t* x = static_cast<const uint16_t*>(a.x);
  if (a.use_fp8) {
    storeRows<true>(entries, K, x, L.hidden, t0, t1, a.round_scale);
  } else {
    storeRows<false>(entries, K, x, L.hidden, t0, t1, a.round_scale);
  }

  // The barrier orders the block's stores before thread 0's system-scope fence, and the fence before the count adds
  // and the done adds (second barrier). Through the proxy, the block whose done add completes an expert fences
  // again, so every block's messages of that expert are ordered before its signal, for observers on other GPUs and
  // the host (the proxy).
  __syncthreads();
  timeline::mark(3);
  if (threadIdx.x == 0) __threadfence_system();
  __syncthreads();
  timeline::mark(4);
  unsigned* done = doneCounts(ctx);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const Entry en = entries[i];
    if (en.expert < 0 || en.repeat) continue;
    if (en.signal != nullptr) {  // an NVLink peer's count word, found with the destination (no load here)
      platform::addRelaxed<Scope::kSystem>(word(en.signal), nvlCountAdd(en.slot == 0, en.total));
      continue;
    }
    if (ctx.peer_gpu_base[en.expert / L.experts_per_rank] != nullptr) continue;  // masked NVLink peer
    if (atomicAdd(&done[en.expert], 1u) + 1u != static_cast<unsigned>(en.total)) continue;
    __threadfence_system();
    signalProxyExpert(ctx, en.expert, en.total);
    // The expert's last token: no other block adds to its done count again in this call, and the kernel's end
    // orders this reset before the next call's adds. A plain store after the signal: nothing waits for it.
    platform::storeRelaxed<Scope::kDevice>(&done[en.expert], 0u);
  }
  timeline::mark(5);
}

// The message of row `row` of local expert el's received rows: rows stand in source rank order, begins[s] the first
// of source s, and a row's slot is its place among its source's.
__device__ __forceinline__ const uint8_t* receivedMessage(const Context& ctx, size_t half_off, int el, const int* begins,
                                                          int row, bool fp8) {
  const Layout& L = ctx.layout;
  int s = 0;
  while (s + 1 < L.num_ranks && begins[s + 1] <= row) ++s;
  const int slot = row - begins[s];
  return (ctx.peer_gpu_base[s] ? ctx.gpu_base : ctx.rdma_base) + half_off + L.dispatchRecv(el, s, slot) +
         L.messageOffset(fp8, slot);
}

// Block r of G: local experts r, r + G, ...; shm holds counts[R] and begins[R].
__device__ void dispatchRecv(const Context& ctx, const DispatchArgs& a, int r, int G, int* shm) {
  const Layout& L = ctx.layout;
  const int R = L.num_ranks;
  int* counts = shm;
  int* begins = shm + R;
  __shared__ int total;
  const size_t half_sig = static_cast<size_t>(ctx.half) * L.signals_per_half;
  const size_t half_off = L.halfOffset(ctx.half);
  const size_t rows_per_expert = static_cast<size_t>(R) * L.max_tokens;
  const int lane = platform::laneId();
  const int groups = L.hidden / kChannelsPerScale;
  const int vectors = (a.use_fp8 ? L.hidden : L.hidden * 2) / 16;  // payload, in 16-byte vectors
  constexpr int kPieceVectors = kWarpSize * 4;                       // one warpCopy16 batch
  const int pieces = (vectors + kPieceVectors - 1) / kPieceVectors;

  for (int el = r; el < L.experts_per_rank; el += G) {
    const int expert = ctx.rank * L.experts_per_rank + el;
    for (int s = threadIdx.x; s < R; s += blockDim.x) {
      int c = 0;
      if (!masked(ctx, s)) {
        const bool nvl = ctx.peer_gpu_base[s] != nullptr;  // the count word's encoding (ll_layout.hpp)
        int64_t* w = (nvl ? ctx.gpu_signals : ctx.rdma_signals) + half_sig + L.dispatchCount(el, s);
        uint64_t waited = 0;
        const uint64_t v = nvl ? waitNvlCount(w, ctx.timeout_ns, &waited) : waitNonZero(w, ctx.timeout_ns, &waited);
        if (nvl ? !nvlCountDone(v) : v == 0) {
          peerTimedOut(ctx, kOpDispatchRecv, s, expert);
        } else {
          c = nvl ? nvlCount(v) : static_cast<int>(v - 1);
          // Read once per use: the sender adds to it again only two calls later, after this kernel has ended.
          platform::storeRelaxed<Scope::kSystem>(word(w), 0);
        }
        if (a.dispatch_wait_recv_cost_stats) {
          atomicAdd(reinterpret_cast<unsigned long long*>(&a.dispatch_wait_recv_cost_stats[s]),
                    static_cast<unsigned long long>(waited));
        }
      }
      counts[s] = c;
    }
    __syncthreads();
    timeline::mark(6);
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

    for (int i = platform::warpId(); i < total * pieces; i += platform::numWarps()) {
      const int row = i / pieces, piece = i % pieces;
      const uint8_t* msg = receivedMessage(ctx, half_off, el, begins, row, a.use_fp8);
      const size_t out_row = el * rows_per_expert + row;
      const int first = piece * kPieceVectors;
      const int count = vectors - first < kPieceVectors ? vectors - first : kPieceVectors;
      warpCopy16(reinterpret_cast<int4*>(static_cast<uint8_t*>(a.recv_x) + out_row * vectors * 16) + first,
                 reinterpret_cast<const int4*>(msg + kHeaderBytes) + first, count);
      if (piece == 0 && lane == 0) a.src_info[out_row] = *reinterpret_cast<const int*>(msg);
    }
    // FP8 scales, [E_local, groups, rows] (or groups / 4 packed UE8M0 words): threads over (group, row), rows
    // fastest, so consecutive threads write consecutive words of one group instead of one word per line.
    if (a.use_fp8) {
      const int words = a.use_ue8m0 ? groups / 4 : groups;
      for (int i = threadIdx.x; i < words * total; i += blockDim.x) {
        const int g = i / total, row = i % total;
        const float* sc = reinterpret_cast<const float*>(receivedMessage(ctx, half_off, el, begins, row, true) +
                                                         kHeaderBytes + L.hidden);
        const size_t out = (el * static_cast<size_t>(words) + g) * rows_per_expert + row;
        if (a.use_ue8m0) {
          uint32_t packed = 0;
          for (int j = 0; j < 4; ++j) packed |= platform::ue8m0Byte(sc[g * 4 + j]) << (8 * j);
          static_cast<int32_t*>(a.recv_x_scales)[out] = static_cast<int32_t>(packed);
        } else {
          static_cast<float*>(a.recv_x_scales)[out] = sc[g];
        }
      }
    }
    __syncthreads();  // counts and begins are reused by the next expert
  }
  timeline::mark(7);
}

UCCL_EP_HOST_DEVICE Parts dispatchParts(const Context& ctx, int num_tokens) {
  // Receive: one block per local expert, up to two per SM (the blocks are small: 64 registers a thread) unless
  // other ranks' launches need the room.
  return Parts{blocksFor(num_tokens, ctx.num_sms),
               blocksFor(ctx.layout.experts_per_rank, (ctx.gpu_shared ? 1 : 2) * ctx.num_sms)};
}

__global__ void __launch_bounds__(kThreads) dispatch(Context ctx, DispatchArgs a, Phase phase) {
  extern __shared__ __align__(16) uint8_t shm[];
  timeline::mark(0);
  const Parts parts = dispatchParts(ctx, a.num_tokens);
  if (hasSend(phase) && static_cast<int>(blockIdx.x) < parts.send) dispatchSend(ctx, a, blockIdx.x, parts.send, shm);
  const int r = recvIndex(parts, phase);
  if (r >= 0) {
    __syncthreads();  // the send part is done with the shared memory
    dispatchRecv(ctx, a, r, parts.recv, reinterpret_cast<int*>(shm));
  }
  static constexpr const char* kNames[timeline::kPhases] = {"start", "slots", "dests", "stored", "fenced",
                                                            "signalled", "counts", "copied"};
  timeline::finish("dispatch", kNames);
}

}  // namespace

void launchDispatch(const Context& ctx, const DispatchArgs& args, Phase phase, void* stream) {
  const Parts parts = dispatchParts(ctx, args.num_tokens);
  // Dynamic shared memory: the send part's counts and entries, or the receive part's counts[R] and begins[R].
  size_t shm = hasSend(phase) ? slotSharedBytes(ctx.layout.num_experts, maxShare(args.num_tokens, parts.send)) : 0;
  if (hasRecv(phase)) shm = std::max(shm, sizeof(int) * 2 * static_cast<size_t>(ctx.layout.num_ranks));
  static SharedMemoryLimit limit(reinterpret_cast<const void*>(&dispatch));
  limit.allow(shm);
  dispatch<<<parts.grid(phase), kThreads, shm, static_cast<gpuStream_t>(stream)>>>(ctx, args, phase);
  checkLaunch(gpuGetLastError(), "low-latency dispatch");
}

}  // namespace uccl::ep::kernels::ll
