// Device pieces of a dispatch row shared by the normal-mode dispatch kernels (intranode_dispatch.cu, and
// internode_dispatch.cu, whose forwarders store the same records): where a row comes from, its small fields, the
// record a sender stores, the output row a receiver emits. Device code only; see intranode.hpp for the layout.
#pragma once

#include "kernels/intranode_device.cuh"

namespace uccl::ep::kernels::intranode::dev {

// ---- one row ------------------------------------------------------------------------------------------------
// Where a row comes from: a staging record, or an own token of x.
struct RowSource {
  const uint8_t* row;
  const int64_t* ids;        // K top-k ids (global expert ids), or null without top-k
  const float* weights;      // K weights, or null
  const int32_t* scales;     // num_scales 4-byte scales, scale_stride elements apart
  int64_t scale_stride;
  int32_t src;               // the token's index on its source rank
};

__device__ __forceinline__ RowSource fromRecord(const Layout& l, const uint8_t* tok, bool fresh) {
  const int32_t* src = reinterpret_cast<const int32_t*>(tok + l.srcIdxOff());
  return {tok, reinterpret_cast<const int64_t*>(tok + l.idxOff()), reinterpret_cast<const float*>(tok + l.weightsOff()),
          reinterpret_cast<const int32_t*>(tok + l.scalesOff()), 1, fresh ? loadScalar<true>(src) : *src};
}

__device__ __forceinline__ RowSource fromInput(const DispatchArgs& a, int t) {
  const size_t K = static_cast<size_t>(a.layout.num_topk);
  return {static_cast<const uint8_t*>(a.x) + static_cast<size_t>(t) * a.x_row_stride,
          a.topk_idx ? a.topk_idx + t * K : nullptr, a.topk_weights ? a.topk_weights + t * K : nullptr,
          static_cast<const int32_t*>(a.x_scales) + t * a.x_scales_token_stride, a.x_scales_col_stride, t};
}

// A row's small fields, one top-k entry and up to kScalesPerLane scales per lane. They are loaded before the row's
// copy starts and stored after it, so their round trips overlap the copy's instead of following it.
static_assert(kMaxTopk <= kWarpSize, "one top-k entry per lane");
constexpr int kScalesPerLane = 2;  // hidden 8192 at 128 channels per scale; more scales take a slower loop
struct RowMeta {
  int64_t id = -1;
  float weight = 0.0f;
  int32_t scale[kScalesPerLane] = {};
};

template <bool kFresh>
__device__ __forceinline__ RowMeta loadMeta(const DispatchArgs& a, const RowSource& s) {
  const int lane = platform::laneId();
  RowMeta m;
  if (lane < a.layout.num_topk) {
    m.id = loadScalar<kFresh>(s.ids + lane);
    if (s.weights) m.weight = loadScalar<kFresh>(s.weights + lane);
  }
#pragma unroll
  for (int i = 0; i < kScalesPerLane; ++i) {
    const int c = lane + i * kWarpSize;
    if (c < a.num_scales) m.scale[i] = loadScalar<kFresh>(s.scales + c * s.scale_stride);
  }
  return m;
}

// Scales beyond kScalesPerLane per lane (hidden above 8192 at 128 channels per scale).
template <bool kFresh>
__device__ __forceinline__ void copyExtraScales(const DispatchArgs& a, const RowSource& s, int32_t* out) {
  for (int c = platform::laneId() + kScalesPerLane * kWarpSize; c < a.num_scales; c += kWarpSize) {
    out[c] = loadScalar<kFresh>(s.scales + c * s.scale_stride);
  }
}

// Own token t into destination r's staging record `dst`: row, top-k ids and weights, scales, source index.
__device__ __forceinline__ void storeRecord(const DispatchArgs& a, int t, uint8_t* dst) {
  const Layout& l = a.layout;
  const int lane = platform::laneId();
  const RowSource src = fromInput(a, t);
  const RowMeta m = loadMeta<false>(a, src);
  copyWarp<false>(dst, src.row, l.hidden_bytes);
  if (lane < l.num_topk) {
    reinterpret_cast<int64_t*>(dst + l.idxOff())[lane] = m.id;
    reinterpret_cast<float*>(dst + l.weightsOff())[lane] = m.weight;
  }
  int32_t* scales = reinterpret_cast<int32_t*>(dst + l.scalesOff());
#pragma unroll
  for (int i = 0; i < kScalesPerLane; ++i) {
    if (lane + i * kWarpSize < a.num_scales) scales[lane + i * kWarpSize] = m.scale[i];
  }
  copyExtraScales<false>(a, src, scales);
  if (lane == 0) *reinterpret_cast<int32_t*>(dst + l.srcIdxOff()) = t;
}

// Output row g: the row, this rank's top-k ids (local expert ids, -1 for other ranks' experts) and weights (0 for
// other ranks' experts), the scales and the source index. kFresh: the record was pushed during this kernel.
template <bool kFresh>
__device__ __forceinline__ void emitRow(const DispatchArgs& a, int me, int64_t g, const RowSource& src) {
  const Layout& l = a.layout;
  const int lane = platform::laneId(), K = l.num_topk;
  const RowMeta m = loadMeta<kFresh>(a, src);
  copyWarp<kFresh>(static_cast<uint8_t*>(a.out.recv_x) + g * l.hidden_bytes, src.row, l.hidden_bytes);
  const int64_t per_rank = l.num_ranks > 0 ? l.num_experts / l.num_ranks : 0;
  const int64_t lo = static_cast<int64_t>(me) * per_rank;
  if (lane < K) {
    const bool mine = m.id >= lo && m.id < lo + per_rank;
    if (a.out.recv_topk_idx) a.out.recv_topk_idx[g * K + lane] = mine ? m.id - lo : -1;
    if (a.out.recv_topk_weights) a.out.recv_topk_weights[g * K + lane] = mine ? m.weight : 0.0f;
  }
  if (a.out.recv_x_scales) {
    int32_t* out = static_cast<int32_t*>(a.out.recv_x_scales) + g * a.num_scales;
#pragma unroll
    for (int i = 0; i < kScalesPerLane; ++i) {
      if (lane + i * kWarpSize < a.num_scales) out[lane + i * kWarpSize] = m.scale[i];
    }
    copyExtraScales<kFresh>(a, src, out);
  }
  if (lane == 0 && a.out.recv_src_idx) a.out.recv_src_idx[g] = src.src;
}

// num_worst_tokens padding: ids -1, weights 0, source -1.
__device__ __forceinline__ void emitPadding(const DispatchArgs& a, int64_t g) {
  const int lane = platform::laneId(), K = a.layout.num_topk;
  for (int k = lane; k < K; k += kWarpSize) {
    if (a.out.recv_topk_idx) a.out.recv_topk_idx[g * K + k] = -1;
    if (a.out.recv_topk_weights) a.out.recv_topk_weights[g * K + k] = 0.0f;
  }
  if (lane == 0 && a.out.recv_src_idx) a.out.recv_src_idx[g] = -1;
}

// What a receiver holds: its rows (the prefix matrix's total) bounded by the outputs, and whether its staging fits.
// Block 0 records the failures once.
struct Receive {
  int64_t total, limit;
  bool fits;
};
__device__ __forceinline__ Receive receiveOf(const Context& ctx, const DispatchArgs& a, const int32_t* prefix) {
  const int R = ctx.num_ranks, me = ctx.rank;
  Receive r;
  r.total = prefix[(R - 1) * R + me];
  const size_t need = a.layout.dispatchBytes(a.num_tokens, r.total);
  r.fits = need <= ctx.buffer_bytes;  // otherwise the sources stored nothing here
  r.limit = r.total < a.out.num_recv_tokens ? r.total : a.out.num_recv_tokens;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    if (!r.fits) fail(ctx, kSlotOverflow, kOpNvlOverflow, me, -1, need);
    if (a.num_worst_tokens > 0 && r.total > a.out.num_recv_tokens) {
      fail(ctx, kSlotOverflow, kOpWorstOverflow, me, -1, r.total);
    }
  }
  return r;
}

}  // namespace uccl::ep::kernels::intranode::dev
