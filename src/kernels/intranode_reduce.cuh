// Device pieces of a combine shared by the normal-mode combine kernels (intranode_combine.cu, and
// internode_combine.cu, whose ranks push rows back and reduce them the same way): a received row stored back with its
// weights, and the sum of a token's rows (plus the biases) into the output. Device code only.
#pragma once

#include "kernels/intranode_device.cuh"
#include "uccl_ep/platform/numeric.hpp"

namespace uccl::ep::kernels::intranode::dev {

// Received row g (of source s) into s's buffer: the BF16 row, then its top-k weights.
// The weights are loaded before the row's copy starts, so their round trip overlaps it.
static_assert(kMaxTopk <= kWarpSize, "one top-k weight per lane");
__device__ __forceinline__ void storeBack(const CombineArgs& a, int64_t g, uint8_t* dst) {
  const size_t row_bytes = static_cast<size_t>(a.hidden) * 2;
  const int lane = platform::laneId();
  const bool has_weight = a.topk_weights && lane < a.num_topk;
  const float w = has_weight ? platform::loadInput(a.topk_weights + static_cast<size_t>(g) * a.num_topk + lane) : 0.0f;
  copyWarp<false>(dst, static_cast<const uint8_t*>(a.x) + g * row_bytes, row_bytes);
  if (has_weight) reinterpret_cast<float*>(dst + row_bytes)[lane] = w;
}

// kSumUnroll vectors per lane of kSumRows rows at a time: that many loads in flight per lane per round trip.
constexpr int kSumUnroll = 4;
constexpr int kSumRows = 2;

__device__ __forceinline__ void addBf16x8(float* acc, int4 raw) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(&raw);
#pragma unroll
  for (int c = 0; c < 8; ++c) acc[c] += platform::bf16ToFloat(h[c]);
}

// Own token t from the n rows listed in `rows` (rank order): the sum, plus the biases, into combined_x, and the sum
// of the weights into combined_topk_weights. Entry self_slot (or -1) is the row this rank received from itself: its
// weights are in the combine input, the others' follow their rows. kFresh: rows pushed during this kernel.
template <bool kFresh>
__device__ void reduceToken(const CombineArgs& a, int t, const uint8_t* const* rows, int n, int self_slot,
                            int64_t self_row) {
  const int lane = platform::laneId(), K = a.num_topk;
  const int vecs = a.hidden / 8;
  const size_t row_bytes = static_cast<size_t>(a.hidden) * 2;
  const int4* b0 = a.bias_0 ? reinterpret_cast<const int4*>(static_cast<const uint16_t*>(a.bias_0) + static_cast<size_t>(t) * a.hidden)
                            : nullptr;
  const int4* b1 = a.bias_1 ? reinterpret_cast<const int4*>(static_cast<const uint16_t*>(a.bias_1) + static_cast<size_t>(t) * a.hidden)
                            : nullptr;
  int4* out = reinterpret_cast<int4*>(static_cast<uint16_t*>(a.combined_x) + static_cast<size_t>(t) * a.hidden);
  // kSumUnroll vectors per lane at a time, so each row contributes that many loads in flight.
  for (int v0 = lane; v0 < vecs; v0 += kSumUnroll * kWarpSize) {
    float acc[kSumUnroll][8] = {};
    for (int i = 0; i < n; i += kSumRows) {
      int4 raw[kSumRows][kSumUnroll];
#pragma unroll
      for (int q = 0; q < kSumRows; ++q) {
        const int4* row = reinterpret_cast<const int4*>(rows[i + q < n ? i + q : i]);
#pragma unroll
        for (int u = 0; u < kSumUnroll; ++u) {
          const int v = v0 + u * kWarpSize;
          raw[q][u] = v < vecs && i + q < n ? (kFresh ? platform::loadFresh(row + v) : platform::loadInput(row + v))
                                            : int4{0, 0, 0, 0};
        }
      }
#pragma unroll
      for (int q = 0; q < kSumRows; ++q) {
#pragma unroll
        for (int u = 0; u < kSumUnroll; ++u) addBf16x8(acc[u], raw[q][u]);
      }
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
      for (int i = 0; i < n; ++i) {
        if (i == self_slot) {
          w += a.topk_weights ? a.topk_weights[static_cast<size_t>(self_row) * K + k] : 0.0f;
        } else {
          w += loadScalar<kFresh>(reinterpret_cast<const float*>(rows[i] + row_bytes) + k);
        }
      }
      a.combined_topk_weights[static_cast<size_t>(t) * K + k] = w;
    }
  }
}

}  // namespace uccl::ep::kernels::intranode::dev
