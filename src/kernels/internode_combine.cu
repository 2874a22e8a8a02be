// Normal-mode combine across nodes (internode.hpp has the design): the dispatch's routes backwards, reduced as early
// as they can be. Every rank pushes each row it received back over NVLink: to its source when the source is on this
// node, else to the source's peer here (the rank that forwarded it). That peer sums the copies of each record it
// forwarded (over the ranks of its node, in rank order, in float) into one partial per (token, node) and streams the
// partials back to the source through the proxies. The source sums, per own token, the rows of its own node (in rank
// order) and then the partials (in node order), plus the biases: deterministic.
//
// Combine layout of rank x's nvl buffer (rows of combine_row_stride bytes: BF16 row, then the top-k weights):
//   direct  [local rank r]  the rows rank (node(x), r) received from x, at their positions (x's own block is empty:
//                           its own rows stay in the combine input)
//   forward [local rank m]  the rows rank (node(x), m) received from the sources (a, local(x)) of other nodes, by
//                           source node, then position
//   then written by x alone: the node positions of its tokens (int32 [T][N], -1 where a token skips a node), the
//   record count per node [N], and the partials of the other nodes (by node, then node position).
// The peers compute the first two from the handle's prefix matrix, which every rank holds whole.
#include "kernels/internode.hpp"
#include "kernels/internode_device.cuh"
#include "kernels/intranode_device.cuh"
#include "kernels/intranode_handle.hpp"
#include "kernels/intranode_reduce.cuh"
#include "kernels/intranode_steps.hpp"
#include "kernels/launch.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/platform/numeric.hpp"

namespace uccl::ep::kernels::internode {
namespace {

using namespace intranode::dev;
using namespace internode::dev;
using intranode::BadEntry;
using intranode::CombineArgs;
using intranode::combinePrefixRow;
using intranode::sendPosOk;

// Where the rows of a combine go, from the handle's prefix matrix.
struct Geometry {
  int R, P, N;
  const int32_t* prefix;
  size_t stride, data_off;
  __device__ int64_t count(int s, int r) const { return prefix[s * R + r] - (s > 0 ? prefix[(s - 1) * R + r] : 0); }
  __device__ int nodeBase(int x) const { return x / P * P; }
  // Direct rows at x from its local rank r, and before that block.
  __device__ int64_t directBefore(int x, int r) const {
    int64_t n = 0;
    for (int q = 0; q < r; ++q) n += count(x, nodeBase(x) + q);
    return n;
  }
  // Forward rows at x from its local rank m: the rows m received from the sources (a, local(x)) of other nodes a;
  // `upto` counts only nodes a < upto.
  __device__ int64_t forwardRows(int x, int m, int upto) const {
    int64_t n = 0;
    for (int a = 0; a < upto; ++a) {
      if (a != x / P) n += count(a * P + x % P, nodeBase(x) + m);
    }
    return n;
  }
  __device__ int64_t forwardBefore(int x, int m) const {
    int64_t n = 0;
    for (int q = 0; q < m; ++q) n += forwardRows(x, q, N);
    return n;
  }
  __device__ size_t forwardOff(int x) const { return data_off + size_t(directBefore(x, P)) * stride; }
  // Bytes of x's buffer its peers write: the direct and forward areas.
  __device__ size_t pushedBytes(int x) const { return forwardOff(x) + size_t(forwardBefore(x, P)) * stride; }
};

__device__ __forceinline__ Geometry geometryOf(const Context& ctx, const CombineArgs& a) {
  return Geometry{ctx.rdma_layout.ranks, ctx.ranks_per_node,          ctx.nodes,
                  a.rank_prefix_matrix,  a.layout.combine_row_stride, a.layout.data_off};
}

// Own areas after the pushed ones: node positions, node counts, partials.
struct OwnAreas {
  size_t node_pos, node_counts, partials;
};
__device__ __forceinline__ OwnAreas ownAreas(const Context& ctx, const CombineArgs& a, const Geometry& g) {
  OwnAreas o;
  o.node_pos = intranode::alignUp(g.pushedBytes(ctx.global.rank));
  o.node_counts = o.node_pos + size_t(a.num_tokens) * g.N * 4;
  o.partials = intranode::alignUp(o.node_counts + size_t(g.N) * 4);
  return o;
}

// ---- a handle this rank rejected --------------------------------------------------------------------------------
// A bad rank_prefix_matrix (checked by the push step) voids the call here, as within a node (intranode_device.cuh):
// this rank pushes no rows and says so in its void word at every rank of its node. Every later step then keeps the
// protocol going without an address the matrix gave: the node plan writes nothing, the partial streams run with
// empty records, the reduce writes nothing (the call raises, its outputs are not valid). The node's ranks skip the
// voided rank's rows (kHandleOfPeer), and a partial sum that lacks one goes out flagged with the voided rank
// (voidedToken), so the source raises naming it too; every stream still carries the records its receiver counts.
__device__ __forceinline__ bool voidedLocal(const Context& ctx, const intranode::Layout& l, int local) {
  return platform::loadAcquire<Scope::kSystem>(voidWord(ctx.node.self, l, local)) >= epochOf(ctx.node);
}
__device__ inline void voidAtNode(const Context& ctx, const intranode::Layout& l) {
  const uint64_t e = epochOf(ctx.node);
  platform::storeRelease<Scope::kSystem>(voidWord(ctx.node.self, l, ctx.local), e);
  for (int m = 0; m < ctx.ranks_per_node; ++m) {
    if (m != ctx.local) platform::storeRelease<Scope::kSystem>(voidWord(ctx.node.peers[m], l, ctx.local), e);
  }
}
// A partial record's token field when a rank of the sending node voided the call: -2 - that rank (global).
__device__ __forceinline__ int32_t voidedToken(int rank) { return -2 - rank; }

// ---- push: every received row back, over NVLink ----------------------------------------------------------------
__global__ void __launch_bounds__(kCopyThreads) combinePushKernel(Context ctx, CombineArgs a) {
  extern __shared__ int64_t push_smem[];  // [R] where source s's rows go (byte address, 0: nowhere), [R + 1] first rows
  if (blockFailed(ctx.node)) return;
  const Geometry g = geometryOf(ctx, a);
  const int R = g.R, P = g.P, me = ctx.global.rank;
  int64_t* base_of = push_smem;
  int64_t* first_of = push_smem + R;
  __shared__ int bad;
  if (threadIdx.x == 0) bad = 0;
  if (blockIdx.x == 0) {  // this rank began the combine: count it, and say so to every rank of the other nodes
    if (threadIdx.x == 0) {
      platform::storeRelaxed<Scope::kDevice>(
          &ctx.counters[kCombinesCounter], platform::loadRelaxed<Scope::kDevice>(&ctx.counters[kCombinesCounter]) + 1);
    }
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
      if (!sameNode(ctx, r)) {
        pushOne(ctx, r, ring::makeSignal(r, ctx.signal_base + static_cast<uint32_t>(enteredSignal(R, me)), 1),
                kOpRdmaPartials, r);
      }
    }
  }
  __syncthreads();
  for (int s = threadIdx.x; s < R; s += blockDim.x) {
    const BadEntry e = combinePrefixRow(a.rank_prefix_matrix, R, me, s, a.num_recv_tokens, a.num_tokens);
    if (e.found()) {
      recordBadEntry(ctx.global, kOpCombine, kHandleRankPrefixMatrix, e.row, e.col, e.value);
      bad = 1;
    }
  }
  __syncthreads();
  if (bad) {  // no rows from here in this call; the node's ranks learn it from the void words
    if (blockIdx.x == 0 && threadIdx.x == 0) voidAtNode(ctx, a.layout);
    return;
  }
  for (int s = threadIdx.x; s < R; s += blockDim.x) {
    first_of[s] = s > 0 ? a.rank_prefix_matrix[(s - 1) * R + me] : 0;
    int64_t base = 0;
    if (s != me) {
      const int x = sameNode(ctx, s) ? s : g.nodeBase(me) + s % P;  // the rank that takes s's rows here
      uint8_t* buf = x == me ? ctx.node.self : ctx.node.peers[x % P];
      size_t off;
      if (x == s) {
        off = g.data_off + size_t(g.directBefore(s, ctx.local)) * g.stride;
      } else {
        off = g.forwardOff(x) + size_t(g.forwardBefore(x, ctx.local) + g.forwardRows(x, ctx.local, s / P)) * g.stride;
      }
      const size_t need = g.pushedBytes(x);
      if (need > ctx.node.buffer_bytes) {
        fail(ctx.node, kSlotOverflow, kOpNvlOverflow, x, -1, need);
      } else {
        base = reinterpret_cast<int64_t>(buf + off);
      }
    }
    base_of[s] = base;
  }
  if (threadIdx.x == 0) first_of[R] = a.rank_prefix_matrix[(R - 1) * R + me];
  __syncthreads();
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * platform::numWarps() + platform::warpId();
  const int64_t warps = static_cast<int64_t>(gridDim.x) * platform::numWarps();
  // Rows past the receive count (num_worst_tokens padding) came from no source.
  const int64_t rows = first_of[R] < a.num_recv_tokens ? first_of[R] : a.num_recv_tokens;
  for (int64_t row = warp; row < rows; row += warps) {
    int lo = 0, hi = R - 1;  // the source of row: the last s with first_of[s] <= row
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (first_of[mid] <= row)
        lo = mid;
      else
        hi = mid - 1;
    }
    if (base_of[lo] == 0) continue;
    storeBack(a, row, reinterpret_cast<uint8_t*>(base_of[lo]) + (row - first_of[lo]) * g.stride);
  }
}

// ---- node plan: each own token's position among the own tokens that go to each node ----------------------------
__global__ void combineNodePlanKernel(Context ctx, CombineArgs a) {
  if (blockFailed(ctx.node)) return;
  snapshotSent(ctx);
  if (voidedLocal(ctx, a.layout, ctx.local)) return;  // the own areas lie past rows the matrix placed
  const Geometry g = geometryOf(ctx, a);
  const OwnAreas o = ownAreas(ctx, a, g);
  const int T = a.num_tokens, lane = platform::laneId();
  int32_t* node_pos = reinterpret_cast<int32_t*>(ctx.node.self + o.node_pos);
  int32_t* node_counts = reinterpret_cast<int32_t*>(ctx.node.self + o.node_counts);
  const uint8_t* in_rank = reinterpret_cast<const uint8_t*>(a.is_token_in_rank);
  for (int b = platform::warpId(); b < g.N; b += platform::numWarps()) {
    int total = 0;
    for (int t0 = 0; t0 < T; t0 += kWarpSize) {
      const int t = t0 + lane;
      bool hit = false;
      if (t < T) {
        for (int m = 0; m < g.P; ++m) hit |= in_rank[static_cast<size_t>(t) * g.R + b * g.P + m] != 0;
      }
      const uint64_t bits = platform::ballot(hit);
      if (t < T)
        node_pos[static_cast<size_t>(t) * g.N + b] =
            hit ? total + platform::popcount64(bits & ((uint64_t{1} << lane) - 1)) : -1;
      total += platform::popcount64(bits);
    }
    if (lane == 0) node_counts[b] = total;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t partials = 0;
    for (int b = 0; b < g.N; ++b) partials += b == ctx.node_index ? 0 : node_counts[b];
    const size_t need = o.partials + size_t(partials) * g.stride;
    if (need > ctx.node.buffer_bytes) fail(ctx.node, kSlotOverflow, kOpNvlOverflow, ctx.global.rank, -1, need);
  }
}

// ---- transfer ----------------------------------------------------------------------------------------------------
// Warp, as the peer of source node a's rank here: the partials of channel c's share of the records it forwarded from
// that rank, into stream (c, a).
__device__ void sendPartials(const Context& ctx, const CombineArgs& a, const Geometry& g, int c, int src_node) {
  const int P = g.P, lane = platform::laneId(), me = ctx.global.rank, K = a.num_topk;
  const int s = src_node * P + ctx.local;
  const int cols = P + 1;
  // The forward map's rows of src_node (the map is ordered by source node, column P).
  int lo = 0, hi = a.num_forward;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (a.forward_positions[static_cast<size_t>(mid) * cols + P] < src_node)
      lo = mid + 1;
    else
      hi = mid;
  }
  int end = lo, top = a.num_forward;
  while (end < top) {
    const int mid = (end + top) / 2;
    if (a.forward_positions[static_cast<size_t>(mid) * cols + P] <= src_node)
      end = mid + 1;
    else
      top = mid;
  }
  const int n = end - lo, C = ctx.rdma_layout.channels;
  const int first = lo + channelBegin(c, n, C), last = lo + channelBegin(c + 1, n, C);
  // Lane m: rank m's block of rows from s in this rank's forward area, and how many rows m got from s; whether rank m
  // voided the call (its rows are not here). This rank's own void: no row is read (the matrix placed them).
  const bool self_void = voidedLocal(ctx, a.layout, ctx.local);
  unsigned long long block = 0;
  int64_t rows_from_s = 0;
  const uint64_t voided = platform::ballot(lane < P && voidedLocal(ctx, a.layout, lane));
  if (lane < P && !self_void) {
    block = reinterpret_cast<unsigned long long>(ctx.node.self + g.forwardOff(me)) +
            (g.forwardBefore(me, lane) + g.forwardRows(me, lane, src_node)) * g.stride;
    rows_from_s = g.count(s, g.nodeBase(me) + lane);
  }
  const size_t row_bytes = size_t(a.hidden) * 2;
  const int vecs = a.hidden / 8;
  StreamOut out(ctx, c, src_node, kOpRdmaPartialRoom);
  for (int fr = first; fr < last; ++fr) {
    uint8_t* rec = out.slot();
    if (rec == nullptr) return;
    int32_t p = lane < P ? a.forward_positions[static_cast<size_t>(fr) * cols + lane] : -1;
    if (!self_void && p >= rows_from_s) {  // the handle's forward map names a row the rank did not get
      recordBadEntry(ctx.global, kOpCombine, kHandleForwardMap, fr, lane, p);
      p = -1;
    }
    // A row of a rank that voided the call is not here: the record goes out without it, flagged with that rank.
    const uint64_t lacking = platform::ballot(p >= 0) & voided;
    if (self_void || ((voided >> lane) & 1)) p = -1;
    const unsigned long long row = p >= 0 ? block + static_cast<unsigned long long>(p) * g.stride : 0;
    const uint64_t mask = platform::ballot(p >= 0);
    for (int v = lane; v < vecs; v += kWarpSize) {
      float acc[8] = {};
      for (uint64_t m = mask; m != 0; m &= m - 1) {
        const auto r = reinterpret_cast<const int4*>(platform::shfl(row, __ffsll(static_cast<long long>(m)) - 1));
        addBf16x8(acc, platform::loadInput(r + v));
      }
      int4 packed;
      uint16_t* o = reinterpret_cast<uint16_t*>(&packed);
#pragma unroll
      for (int q = 0; q < 8; ++q) o[q] = platform::floatToBf16(acc[q]);
      reinterpret_cast<int4*>(rec)[v] = packed;
    }
    float w = 0.0f;
    for (uint64_t m = mask; m != 0; m &= m - 1) {
      const auto r =
          reinterpret_cast<const float*>(platform::shfl(row, __ffsll(static_cast<long long>(m)) - 1) + row_bytes);
      if (lane < K) w += r[lane];
    }
    if (lane < K) reinterpret_cast<float*>(rec + row_bytes)[lane] = w;
    if (lane == 0) {
      const int32_t flag = self_void      ? voidedToken(me)
                           : lacking != 0 ? voidedToken(g.nodeBase(me) + __ffsll(static_cast<long long>(lacking)) - 1)
                                          : a.forward_source_token[fr];
      *reinterpret_cast<int32_t*>(rec + row_bytes + size_t(K) * 4) = flag;
    }
    out.commit();
  }
  out.finish();
}

// Warp: how many own tokens go to a rank of node b (is_token_in_rank), as the node plan counts them.
__device__ int tokensToNode(const CombineArgs& a, const Geometry& g, int b) {
  const uint8_t* in_rank = reinterpret_cast<const uint8_t*>(a.is_token_in_rank);
  int total = 0;
  for (int t0 = 0; t0 < a.num_tokens; t0 += kWarpSize) {
    const int t = t0 + platform::laneId();
    bool hit = false;
    if (t < a.num_tokens) {
      for (int m = 0; m < g.P; ++m) hit |= in_rank[static_cast<size_t>(t) * g.R + b * g.P + m] != 0;
    }
    total += platform::popcount64(platform::ballot(hit));
  }
  return total;
}

// Warp, as a source: channel c's share of the partials from node b, each into its place among node b's partials.
__device__ void receivePartials(const Context& ctx, const CombineArgs& a, const Geometry& g, const OwnAreas& o, int c,
                                int b) {
  // This rank voided the call: no node plan was written (its place came from the matrix), so the stream's length is
  // counted here from is_token_in_rank, and the records are taken and dropped.
  const bool self_void = voidedLocal(ctx, a.layout, ctx.local);
  const int32_t* node_pos = reinterpret_cast<const int32_t*>(ctx.node.self + o.node_pos);
  const int32_t* node_counts = reinterpret_cast<const int32_t*>(ctx.node.self + o.node_counts);
  const int n = self_void ? tokensToNode(a, g, b) : node_counts[b], C = ctx.rdma_layout.channels;
  int64_t base = 0, total = 0;
  if (!self_void) {
    for (int q = 0; q < b; ++q) base += q == ctx.node_index ? 0 : node_counts[q];
    total = base;
    for (int q = b; q < g.N; ++q) total += q == ctx.node_index ? 0 : node_counts[q];
  }
  const bool fits = !self_void && o.partials + size_t(total) * g.stride <= ctx.node.buffer_bytes;  // else recorded
  const size_t tok_off = size_t(a.hidden) * 2 + size_t(a.num_topk) * 4;
  const int64_t expected = channelBegin(c + 1, n, C) - channelBegin(c, n, C);
  StreamIn in(ctx, c, b, expected, kOpRdmaPartials,
              platform::loadRelaxed<Scope::kDevice>(&ctx.counters[kCombinesCounter]));
  for (int64_t k = 0; k < expected; ++k) {
    const uint8_t* rec = in.next();
    if (rec == nullptr) return;
    // The token index comes from the wire: it must be an own token that went to node b.
    const int32_t tok = platform::loadFresh(reinterpret_cast<const int32_t*>(rec + tok_off));
    if (tok <= -2 && -2 - tok < g.R && (-2 - tok) / g.P == b) {  // a rank of node b voided the call
      if (platform::laneId() == 0) {
        recordError(ctx.global.error, kBadHandle, kOpCombine, -2 - tok, -1, handleDetail(kHandleOfPeer, 0));
      }
      in.done();
      continue;
    }
    const int32_t j = self_void                        ? 0
                      : tok >= 0 && tok < a.num_tokens ? node_pos[static_cast<size_t>(tok) * g.N + b]
                                                       : -1;
    if (j < 0) {
      if (platform::laneId() == 0)
        fail(ctx.node, kBadRecord, kOpRdmaPartials, in.peer(), -1, static_cast<uint32_t>(tok));
    } else if (fits) {
      copyWarp<true>(ctx.node.self + o.partials + size_t(base + j) * g.stride, rec, g.stride);
    }
    in.done();
  }
  in.finish();
}

constexpr int kTransferThreads = 1024;
__global__ void __launch_bounds__(kTransferThreads) combineTransferKernel(Context ctx, CombineArgs a) {
  if (blockFailed(ctx.node)) return;
  const Geometry g = geometryOf(ctx, a);
  const OwnAreas o = ownAreas(ctx, a, g);
  const int C = ctx.rdma_layout.channels, c = static_cast<int>(blockIdx.x) % C;
  for (int w = platform::warpId(); w < ctx.nodes; w += platform::numWarps()) {
    if (w == ctx.node_index) continue;
    if (static_cast<int>(blockIdx.x) < C) {
      sendPartials(ctx, a, g, c, w);
    } else {
      receivePartials(ctx, a, g, o, c, w);
    }
  }
}

// ---- reduce: per own token, its own node's rows (rank order), then the partials (node order) -------------------
constexpr int kReduceWarps = 8;
__global__ void __launch_bounds__(kReduceWarps* kWarpSize) combineReduceKernel(Context ctx, CombineArgs a) {
  extern __shared__ const uint8_t* lists[];  // [warps][P + N]
  if (blockFailed(ctx.node)) return;
  if (voidedLocal(ctx, a.layout, ctx.local)) return;  // the call raises; its outputs are not valid
  const Geometry g = geometryOf(ctx, a);
  const OwnAreas o = ownAreas(ctx, a, g);
  const int me = ctx.global.rank, P = g.P, N = g.N, R = g.R, T = a.num_tokens;
  const uint8_t** mine = lists + static_cast<size_t>(platform::warpId()) * (P + N);
  const int32_t* node_pos = reinterpret_cast<const int32_t*>(ctx.node.self + o.node_pos);
  const int32_t* node_counts = reinterpret_cast<const int32_t*>(ctx.node.self + o.node_counts);
  const int64_t self_first = me > 0 ? a.rank_prefix_matrix[(me - 1) * R + me] : 0;
  // Per block, once: where each local rank's rows of this rank's tokens start here and how many it got, and where
  // each node's partials start. The tokens' lists below only index them.
  __shared__ int64_t direct_before[kMaxNodeRanks], sent_to[kMaxNodeRanks], partials_before[kMaxNodes];
  __shared__ bool voided[kMaxNodeRanks];  // local ranks that voided the call (their void words were set before arrive)
  for (int r = threadIdx.x; r < P; r += blockDim.x) {
    direct_before[r] = g.directBefore(me, r);
    sent_to[r] = g.count(me, g.nodeBase(me) + r);
    voided[r] = r != ctx.local && voidedLocal(ctx, a.layout, r);
  }
  if (threadIdx.x == 0) {
    int64_t base = 0;
    for (int b = 0; b < N; ++b) {
      partials_before[b] = base;
      base += b == ctx.node_index ? 0 : node_counts[b];
    }
  }
  __syncthreads();
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * platform::numWarps() + platform::warpId();
  const int64_t warps = static_cast<int64_t>(gridDim.x) * platform::numWarps();
  for (int64_t t = warp; t < T; t += warps) {
    // send_pos columns of the other nodes' ranks: no step reads them (the partials come by node position), but a
    // handle's entries all follow one rule, so those are checked too (the own node's columns below, as they are read).
    for (int r = platform::laneId(); r < R; r += kWarpSize) {
      if (r / P == ctx.node_index) continue;
      const int32_t pos = a.send_pos[static_cast<size_t>(t) * R + r];
      if (pos != -1 && !sendPosOk(pos, g.count(me, r))) {
        recordBadEntry(ctx.global, kOpCombine, kHandleSendPos, static_cast<int>(t), r, pos);
      }
    }
    int n = 0, self_slot = -1;
    int64_t self_row = 0;
    if (platform::laneId() == 0) {
      for (int r = 0; r < P; ++r) {
        const int gr = g.nodeBase(me) + r;
        int pos = a.send_pos[static_cast<size_t>(t) * R + gr];
        if (pos != -1 && !sendPosOk(pos, sent_to[r])) {
          recordBadEntry(ctx.global, kOpCombine, kHandleSendPos, static_cast<int>(t), gr, pos);
          pos = -1;
        }
        if (pos < 0) continue;
        if (voided[r]) {  // it pushed no rows: named, and left out
          recordError(ctx.global.error, kBadHandle, kOpCombine, gr, -1, handleDetail(kHandleOfPeer, 0));
          continue;
        }
        if (r == ctx.local) {
          self_slot = n;
          self_row = self_first + pos;
          mine[n++] = static_cast<const uint8_t*>(a.x) + self_row * static_cast<int64_t>(a.hidden) * 2;
        } else {
          mine[n++] = ctx.node.self + g.data_off + size_t(direct_before[r] + pos) * g.stride;
        }
      }
      for (int b = 0; b < N; ++b) {
        if (b == ctx.node_index) continue;
        const int32_t j = node_pos[static_cast<size_t>(t) * N + b];
        if (j >= 0) mine[n++] = ctx.node.self + o.partials + size_t(partials_before[b] + j) * g.stride;
      }
    }
    n = platform::shfl(n, 0);
    self_slot = platform::shfl(self_slot, 0);
    self_row = platform::shfl(self_row, 0);
    platform::syncWarp();
    reduceToken<false>(a, static_cast<int>(t), mine, n, self_slot, self_row);
    platform::syncWarp();
  }
}

int grid(const Context& ctx) { return ctx.global.num_sms > 0 ? ctx.global.num_sms : 1; }

}  // namespace

void launchCombine(const Context& ctx, const CombineArgs& a, void* stream) {
  auto s = static_cast<gpuStream_t>(stream);
  const size_t R = static_cast<size_t>(ctx.rdma_layout.ranks);
  intranode::launchReuse(ctx.node, s, "combine (reuse wait)");
  const size_t push_shm = sizeof(int64_t) * (2 * R + 1);
  allowDynamicShared(reinterpret_cast<const void*>(&combinePushKernel), push_shm);
  combinePushKernel<<<grid(ctx), kCopyThreads, push_shm, s>>>(ctx, a);
  checkLaunch(gpuGetLastError(), "combine (internode push)");
  intranode::launchArrive(ctx.node, a.layout.pushed_off, s, "combine (arrive)");
  const int warps = ctx.nodes < kTransferThreads / kWarpSize ? ctx.nodes : kTransferThreads / kWarpSize;
  combineNodePlanKernel<<<1, kWarpSize * warps, 0, s>>>(ctx, a);
  checkLaunch(gpuGetLastError(), "combine (node plan)");
  combineTransferKernel<<<2 * ctx.rdma_layout.channels, kWarpSize * warps, 0, s>>>(ctx, a);
  checkLaunch(gpuGetLastError(), "combine (internode transfer)");
  if (a.num_tokens > 0) {
    const size_t shm = sizeof(void*) * kReduceWarps * static_cast<size_t>(ctx.ranks_per_node + ctx.nodes);
    combineReduceKernel<<<grid(ctx), kReduceWarps * kWarpSize, shm, s>>>(ctx, a);
    checkLaunch(gpuGetLastError(), "combine (internode reduce)");
  }
  intranode::launchFinish(ctx.node, s, "combine (finish)");
}

}  // namespace uccl::ep::kernels::internode
