// Normal-mode dispatch across nodes (internode.hpp has the design): the counts exchange (publish) and the transfer
// kernel whose warps stream records to the peers of other nodes, forward the records of other nodes' sources over
// NVLink, and push the own node's rows straight into its ranks' staging. The node-local steps (reuse, arrive,
// finish) and the grid steps plan and unpack are the intranode ones.
#include "kernels/internode.hpp"
#include "kernels/internode_device.cuh"
#include "kernels/intranode_device.cuh"
#include "kernels/intranode_rows.cuh"
#include "kernels/intranode_steps.hpp"
#include "kernels/launch.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/ring/descriptor.hpp"

namespace uccl::ep::kernels::internode {
namespace {

using namespace intranode::dev;
using namespace internode::dev;
using intranode::DispatchArgs;
using intranode::kNumTokensOff;
using intranode::kReadyOff;

constexpr int kPublishThreads = 512;

// Entry (i, j) of the count matrix (tokens source i sends to rank j): from i's nvl header on this node, else from
// i's row in the counts area. Both were published before the waits that precede every use.
__device__ __forceinline__ int32_t countOf(const Context& ctx, const intranode::Layout& l, int parity, int i, int j) {
  if (sameNode(ctx, i)) {
    return platform::loadRelaxed<Scope::kSystem>(ints(ctx.node.peers[i % ctx.ranks_per_node], l.counts_off) + j);
  }
  return platform::loadRelaxed<Scope::kSystem>(
      reinterpret_cast<const int32_t*>(ctx.rdma + ctx.rdma_layout.countsInOff(parity, i)) + j);
}

// Records of source s's stream (channel c) to this rank's node, from s's counts row (s on another node).
__device__ __forceinline__ int32_t streamLength(const Context& ctx, int parity, int s, int c) {
  const RdmaLayout& L = ctx.rdma_layout;
  const int32_t* row = reinterpret_cast<const int32_t*>(ctx.rdma + L.countsInOff(parity, s));
  return platform::loadRelaxed<Scope::kSystem>(row + L.nodeChannelIndex(ctx.node_index, c));
}

// ---- publish: the counts exchange (1 block) ------------------------------------------------------------------
__global__ void __launch_bounds__(kPublishThreads)
    dispatchPublishKernel(Context ctx, DispatchArgs a, int32_t* prefix, int32_t* gbl_prefix,
                          const int32_t* handle_prefix, bool report_to_host) {
  extern __shared__ int32_t node_channel[];  // [N][C] records per (destination node, channel)
  const intranode::Context& n = ctx.node;
  const RdmaLayout& L = ctx.rdma_layout;
  const intranode::Layout& l = a.layout;
  const int R = L.ranks, N = L.nodes, C = L.channels, P = ctx.ranks_per_node, me = ctx.global.rank;
  const int T = a.num_tokens, Epr = L.experts_per_rank;
  __shared__ uint64_t calls;
  if (threadIdx.x == 0) calls = platform::loadRelaxed<Scope::kDevice>(&ctx.counters[kCallsCounter]) + 1;
  for (int i = threadIdx.x; i < N * C; i += blockDim.x) node_channel[i] = 0;
  __syncthreads();
  const int parity = static_cast<int>(calls & 1);
  const uint8_t* in_rank = reinterpret_cast<const uint8_t*>(a.is_token_in_rank);
  for (int i = threadIdx.x; i < T * N; i += blockDim.x) {
    const int t = i / N, b = i % N;
    bool any = false;
    for (int m = 0; m < P; ++m) any |= in_rank[static_cast<size_t>(t) * R + b * P + m] != 0;
    if (any) atomicAdd(&node_channel[b * C + channelOf(t, T, C)], 1);
  }
  __syncthreads();
  // The row as sent: tokens per rank (the plan kernel's counts), records per (node, channel), and per destination
  // its slice of the tokens per expert.
  int32_t* out = reinterpret_cast<int32_t*>(ctx.rdma + L.countsOutOff(parity));
  const int32_t* planned = ints(n.self, l.counts_off);
  for (int r = threadIdx.x; r < R; r += blockDim.x) out[r] = planned[r];
  for (int i = threadIdx.x; i < N * C; i += blockDim.x) out[L.nodeChannelIndex(i / C, i % C)] = node_channel[i];
  snapshotSent(ctx);
  for (int i = threadIdx.x; i < R * Epr; i += blockDim.x) {
    const int r = i / Epr, le = i % Epr;
    out[L.rowHeadInts() + size_t(r) * L.rowExpertInts() + le] =
        a.num_tokens_per_expert ? a.num_tokens_per_expert[i] : 0;
  }
  platform::fenceAcqRel<Scope::kSystem>();
  __syncthreads();
  for (int r = threadIdx.x; r < R; r += blockDim.x) {
    if (sameNode(ctx, r)) continue;
    const size_t dst = L.countsInOff(parity, me), head = L.rowHeadInts() * 4, experts = L.rowExpertInts() * 4;
    const size_t src_experts = L.countsOutOff(parity) + head + size_t(r) * experts;
    if (!pushOne(ctx, r,
                 ring::makeWrite(r, ctx.rdma_region, L.countsOutOff(parity), ctx.rdma_region, dst,
                                 static_cast<uint32_t>(head)),
                 kOpRdmaCounts, r)) {
      break;
    }
    if (experts > 0 && !pushOne(ctx, r,
                                ring::makeWrite(r, ctx.rdma_region, src_experts, ctx.rdma_region, dst + head,
                                                static_cast<uint32_t>(experts)),
                                kOpRdmaCounts, r)) {
      break;
    }
    if (!pushOne(ctx, r, ring::makeSignal(r, ctx.signal_base + static_cast<uint32_t>(arrivedSignal(me)), 1),
                 kOpRdmaCounts, r)) {
      break;
    }
  }
  // The node: the intranode ready word (the plan's counts in the nvl header are published by it).
  const uint64_t e = epochOf(n);
  __threadfence_system();
  __syncthreads();
  if (threadIdx.x == 0) platform::storeRelease<Scope::kSystem>(word(n.self, kReadyOff), e);
  if (blockFailed(n)) return;
  if (!waitAll(
          n, [&](int r) { return word(n.peers[r], kReadyOff); }, e, kOpReady))
    return;
  for (int s = threadIdx.x; s < R; s += blockDim.x) {
    if (!sameNode(ctx, s)) waitSignal(ctx, arrivedSignal(s), calls, kOpRdmaCounts, s, calls);
  }
  if (blockFailed(n)) return;
  // The prefix matrix (inclusive over sources), column by column.
  const intranode::Context& n_ctx = n;
  for (int j = threadIdx.x; j < R; j += blockDim.x) {
    int32_t acc = 0;
    for (int i = 0; i < R; ++i) {
      // A row from the wire: a count below 0, or one that could overflow the prefix sums, is a corrupt or forged
      // write (a failure), counted as 0.
      int32_t n = countOf(ctx, l, parity, i, j);
      if (n < 0 || n > INT32_MAX / R) {
        fail(n_ctx, kBadRecord, kOpRdmaCounts, i, j, static_cast<uint32_t>(n));
        n = 0;
      }
      acc += n;
      prefix[i * R + j] = acc;
    }
  }
  __syncthreads();
  if (handle_prefix != nullptr) {  // a cached dispatch: the handle's matrix must be this call's
    for (int i = threadIdx.x; i < R * R; i += blockDim.x) {
      const int32_t v = handle_prefix[i];
      if (v != prefix[i]) recordBadEntry(ctx.global, kOpCachedDispatch, kHandleRankPrefixMatrix, i / R, i % R, v);
    }
  }
  if (gbl_prefix != nullptr) {
    for (int i = threadIdx.x; i < R; i += blockDim.x) gbl_prefix[i] = prefix[i * R + me];
  }
  if (report_to_host) {
    for (int le = threadIdx.x; le < Epr; le += blockDim.x) {
      int32_t acc = 0;
      for (int s = 0; s < R; ++s) {
        if (sameNode(ctx, s)) {
          acc += platform::loadRelaxed<Scope::kSystem>(ints(n.peers[s % P], l.expert_counts_off) + me * Epr + le);
        } else {
          acc += platform::loadRelaxed<Scope::kSystem>(
              reinterpret_cast<const int32_t*>(ctx.rdma + L.countsInOff(parity, s)) + L.rowHeadInts() + le);
        }
      }
      n.host_counts->per_expert[le] = acc;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int32_t forward = 0;
      for (int b = 0; b < N; ++b) {
        if (b == ctx.node_index) continue;
        for (int c = 0; c < C; ++c) forward += streamLength(ctx, parity, b * P + ctx.local, c);
      }
      n.host_counts->num_recv = prefix[(R - 1) * R + me];
      n.host_counts->num_forward = forward;
      platform::fenceAcqRel<Scope::kSystem>();
      platform::storeRelease<Scope::kSystem>(reinterpret_cast<uint64_t*>(&n.host_counts->ready), e);
    }
  }
  if (threadIdx.x == 0) platform::storeRelaxed<Scope::kDevice>(&ctx.counters[kCallsCounter], calls);
}

// ---- transfer ------------------------------------------------------------------------------------------------
// Where rows for rank m of this node go: its staging, its first row from source s, and whether it fits.
struct Target {
  uint8_t* staging;
  int64_t first;  // prefix[s - 1][m]: the output row of s's first token at m
  int64_t count;  // tokens s sends to m
  bool fits;
};
__device__ inline Target targetOf(const Context& ctx, const intranode::Layout& l, const int32_t* prefix, int s, int m) {
  const int R = ctx.global.num_ranks, g = ctx.node_index * ctx.ranks_per_node + m;
  Target t;
  uint8_t* base = m == ctx.local ? ctx.node.self : ctx.node.peers[m];
  // Written by m's plan kernel before its release of ready, acquired by this rank's publish kernel.
  const int Tm = platform::loadRelaxed<Scope::kSystem>(ints(base, kNumTokensOff));
  t.staging = base + l.stagingOff(Tm);
  t.first = s > 0 ? prefix[(s - 1) * R + g] : 0;
  t.count = prefix[s * R + g] - t.first;
  t.fits = l.dispatchBytes(Tm, prefix[(R - 1) * R + g]) <= ctx.node.buffer_bytes;  // else m's unpack records it
  return t;
}

// Lane m's staging (every lane holds the Target of the rank of its index), for the whole warp.
__device__ __forceinline__ uint8_t* stagingOf(const Target& tgt, int m) {
  return reinterpret_cast<uint8_t*>(platform::shfl(reinterpret_cast<unsigned long long>(tgt.staging), m));
}

// Warp: the records of channel c's tokens to node b, in token order, into stream (c, b) at the peer there.
__device__ void sendStream(const Context& ctx, const DispatchArgs& a, int c, int b) {
  const int R = ctx.rdma_layout.ranks, P = ctx.ranks_per_node, lane = platform::laneId(), T = a.num_tokens;
  const int t_end = channelBegin(c + 1, T, ctx.rdma_layout.channels);
  const uint8_t* in_rank = reinterpret_cast<const uint8_t*>(a.is_token_in_rank);
  StreamOut out(ctx, c, b, kOpRdmaRoom);
  for (int t0 = channelBegin(c, T, ctx.rdma_layout.channels); t0 < t_end && out.ok(); t0 += kWarpSize) {
    const int t = t0 + lane;
    bool hit = false;
    if (t < t_end) {
      for (int m = 0; m < P; ++m) hit |= in_rank[static_cast<size_t>(t) * R + b * P + m] != 0;
    }
    for (uint64_t mask = platform::ballot(hit); mask != 0; mask &= mask - 1) {
      const int tok = t0 + __ffsll(static_cast<long long>(mask)) - 1;
      uint8_t* rec = out.slot();
      if (rec == nullptr) return;
      storeRecord(a, tok, rec);
      if (lane < P) {
        reinterpret_cast<int32_t*>(rec + a.layout.token_stride)[lane] =
            a.send_pos[static_cast<size_t>(tok) * R + b * P + lane];
      }
      out.commit();
    }
  }
  out.finish();
}

// Warp: the records of stream (c, a) from this rank's peer on node a, each into the staging of every rank of this
// node it names, and its entry of the forward map; the head word back to the source every chunk.
__device__ void forwardStream(const Context& ctx, const DispatchArgs& a, const int32_t* prefix, const ForwardMap& fwd,
                              int parity, int c, int src_node) {
  const RdmaLayout& L = ctx.rdma_layout;
  const intranode::Layout& l = a.layout;
  const int P = ctx.ranks_per_node, lane = platform::laneId();
  const int s = src_node * P + ctx.local;
  const int64_t expected = streamLength(ctx, parity, s, c);
  int64_t row0 = 0;  // the stream's first entry in the forward map: earlier source nodes, then earlier channels
  for (int b = 0; b < src_node; ++b) {
    if (b == ctx.node_index) continue;
    for (int cc = 0; cc < L.channels; ++cc) row0 += streamLength(ctx, parity, b * P + ctx.local, cc);
  }
  for (int cc = 0; cc < c; ++cc) row0 += streamLength(ctx, parity, s, cc);
  Target tgt{};
  if (lane < P) tgt = targetOf(ctx, l, prefix, s, lane);
  StreamIn in(ctx, c, src_node, expected, kOpRdmaRows);
  for (int64_t k = 0; k < expected; ++k) {
    const uint8_t* rec = in.next();
    if (rec == nullptr) return;
    int32_t p = -1;
    if (lane < P) p = platform::loadFresh(reinterpret_cast<const int32_t*>(rec + l.token_stride) + lane);
    // Positions come from the wire: one outside the source's rows to that rank is a protocol failure.
    const bool bad = lane < P && p >= 0 && p >= tgt.count;
    if (bad) fail(ctx.node, kBadRecord, kOpRdmaRows, s, lane, static_cast<uint64_t>(p));
    const int64_t fr = row0 + k;
    if (fr < fwd.num_forward) {
      if (lane < P && fwd.positions) fwd.positions[fr * (P + 1) + lane] = bad ? -1 : p;
      if (lane == 0 && fwd.positions) fwd.positions[fr * (P + 1) + P] = src_node;
      if (lane == 0 && fwd.source_token) {
        fwd.source_token[fr] = platform::loadFresh(reinterpret_cast<const int32_t*>(rec + l.srcIdxOff()));
      }
    }
    for (uint64_t mask = platform::ballot(lane < P && p >= 0 && !bad && tgt.fits); mask != 0; mask &= mask - 1) {
      const int m = __ffsll(static_cast<long long>(mask)) - 1;
      const int64_t g = platform::shfl(tgt.first, m) + platform::shfl(p, m);
      copyWarp<true>(stagingOf(tgt, m) + g * l.token_stride, rec, l.token_stride);
    }
    in.done();
  }
  in.finish();
}

// Warp: channel c's own tokens into the staging of the other ranks of this node (the own rows are unpack's).
__device__ void pushOwnNode(const Context& ctx, const DispatchArgs& a, const int32_t* prefix, int c) {
  const intranode::Layout& l = a.layout;
  const int R = ctx.global.num_ranks, P = ctx.ranks_per_node, lane = platform::laneId(), me = ctx.global.rank;
  const int T = a.num_tokens, t_end = channelBegin(c + 1, T, ctx.rdma_layout.channels);
  const uint8_t* in_rank = reinterpret_cast<const uint8_t*>(a.is_token_in_rank);
  Target tgt{};
  if (lane < P) tgt = targetOf(ctx, l, prefix, me, lane);
  for (int t = channelBegin(c, T, ctx.rdma_layout.channels); t < t_end; ++t) {
    const int g_rank = ctx.node_index * P + lane;
    const bool hit = lane < P && lane != ctx.local && tgt.fits && in_rank[static_cast<size_t>(t) * R + g_rank] != 0;
    const int32_t p = hit ? a.send_pos[static_cast<size_t>(t) * R + g_rank] : -1;
    for (uint64_t mask = platform::ballot(hit); mask != 0; mask &= mask - 1) {
      const int m = __ffsll(static_cast<long long>(mask)) - 1;
      const int64_t g = platform::shfl(tgt.first, m) + platform::shfl(p, m);
      storeRecord(a, t, stagingOf(tgt, m) + g * l.token_stride);
    }
  }
}

// Blocks [0, C): senders, warp w streams to nodes w, w + warps, ... Blocks [C, 2C): warp w forwards the streams from
// those nodes, or for the own node pushes the own tokens.
constexpr int kTransferThreads = 1024;
__global__ void __launch_bounds__(kTransferThreads)
    dispatchTransferKernel(Context ctx, DispatchArgs a, const int32_t* prefix, ForwardMap fwd) {
  if (blockFailed(ctx.node)) return;
  const int C = ctx.rdma_layout.channels;
  const int parity = static_cast<int>(platform::loadRelaxed<Scope::kDevice>(&ctx.counters[kCallsCounter]) & 1);
  const int c = static_cast<int>(blockIdx.x) % C;
  for (int w = platform::warpId(); w < ctx.nodes; w += platform::numWarps()) {
    if (static_cast<int>(blockIdx.x) < C) {
      if (w != ctx.node_index) sendStream(ctx, a, c, w);
    } else if (w == ctx.node_index) {
      pushOwnNode(ctx, a, prefix, c);
    } else {
      forwardStream(ctx, a, prefix, fwd, parity, c, w);
    }
  }
}

}  // namespace

void launchDispatchSend(const Context& ctx, const DispatchArgs& a, int32_t* recv_gbl_rank_prefix_sum,
                        int32_t* computed_prefix, void* stream) {
  auto s = static_cast<gpuStream_t>(stream);
  intranode::launchReuse(ctx.node, s, "dispatch (reuse wait)");
  intranode::launchDispatchPlan(ctx.global, a, s);
  int32_t* prefix = a.cached ? computed_prefix : a.rank_prefix_matrix;
  const size_t shm = sizeof(int32_t) * ctx.rdma_layout.nodes * ctx.rdma_layout.channels;
  dispatchPublishKernel<<<1, kPublishThreads, shm, s>>>(ctx, a, prefix, recv_gbl_rank_prefix_sum,
                                                        a.cached ? a.rank_prefix_matrix : nullptr, a.report_to_host);
  checkLaunch(gpuGetLastError(), "dispatch (internode publish)");
}

void launchDispatchRecv(const Context& ctx, const DispatchArgs& a, const int32_t* prefix, const ForwardMap& fwd,
                        void* stream) {
  auto s = static_cast<gpuStream_t>(stream);
  const int warps = ctx.nodes < kTransferThreads / kWarpSize ? ctx.nodes : kTransferThreads / kWarpSize;
  dispatchTransferKernel<<<2 * ctx.rdma_layout.channels, kWarpSize * warps, 0, s>>>(ctx, a, prefix, fwd);
  checkLaunch(gpuGetLastError(), "dispatch (internode transfer)");
  intranode::launchArrive(ctx.node, a.layout.pushed_off, s, "dispatch (arrive)");
  DispatchArgs u = a;
  u.cached = false;  // the handle's matrix was checked against the computed one in the publish step
  if (u.out.num_recv_tokens > 0) intranode::launchDispatchUnpack(ctx.global, u, prefix, s);
  intranode::launchFinish(ctx.node, s, "dispatch (finish)");
}

}  // namespace uccl::ep::kernels::internode
