// The 10-bit log format of low-latency combine (use_logfmt): per group of 128 channels, two floats of
// metadata (lo = log2 of the smallest magnitude kept, step in log2 units) and one 10-bit code per channel:
// bit 9 the sign, bits 8..0 q, where q = 0 is zero and q in [1, 511] is magnitude 2^(lo + (q - 1) * step).
// The range is clamped to kLogfmtRange octaves below the group's largest magnitude; anything smaller is
// rounded into the range or to zero. Relative error of a kept value: at most 2^(step/2) - 1 (1% at the widest
// range). Host and device code: the kernels use it, and the host tests check the error bound.
#pragma once

#include <cmath>
#include <cstdint>

#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::kernels::ll {

inline constexpr float kLogfmtRange = 15.0f;   // octaves kept below the largest magnitude
inline constexpr int kLogfmtLevels = 511;      // q in [1, 511]

struct LogfmtParams {
  float lo;
  float step;
};

// amax: the largest magnitude of the group; amin: the smallest nonzero one (any value >= amax when none).
UCCL_EP_HOST_DEVICE inline LogfmtParams logfmtParams(float amax, float amin) {
  if (!(amax > 0.0f)) return {0.0f, 0.0f};
  const float hi = log2f(amax);
  float lo = log2f(amin < amax ? amin : amax);
  if (lo < hi - kLogfmtRange) lo = hi - kLogfmtRange;
  return {lo, (hi - lo) / static_cast<float>(kLogfmtLevels - 1)};
}

UCCL_EP_HOST_DEVICE inline uint32_t logfmtEncode(float v, LogfmtParams p) {
  const float a = fabsf(v);
  if (!(a > 0.0f)) return 0;
  const float l = log2f(a);
  if (l < p.lo - 1.0f) return 0;  // more than an octave below the kept range: zero
  float r = p.step > 0.0f ? rintf((l - p.lo) / p.step) : 0.0f;
  r = r < 0.0f ? 0.0f : (r > kLogfmtLevels - 1 ? static_cast<float>(kLogfmtLevels - 1) : r);
  return (v < 0.0f ? 0x200u : 0u) | (static_cast<uint32_t>(r) + 1u);
}

UCCL_EP_HOST_DEVICE inline float logfmtDecode(uint32_t code, LogfmtParams p) {
  const uint32_t q = code & 0x1ffu;
  if (q == 0) return 0.0f;
  const float m = exp2f(p.lo + static_cast<float>(q - 1) * p.step);
  return (code & 0x200u) ? -m : m;
}

// Eight codes <-> 80 bits stored as five 16-bit words (one lane's share of a group).
UCCL_EP_HOST_DEVICE inline void logfmtPack8(const uint32_t c[8], uint16_t w[5]) {
  uint64_t lo = 0;
  for (int i = 0; i < 6; ++i) lo |= uint64_t{c[i] & 0x3ffu} << (10 * i);
  lo |= uint64_t{c[6] & 0xfu} << 60;
  const uint32_t hi = ((c[6] & 0x3ffu) >> 4) | ((c[7] & 0x3ffu) << 6);
  w[0] = static_cast<uint16_t>(lo);
  w[1] = static_cast<uint16_t>(lo >> 16);
  w[2] = static_cast<uint16_t>(lo >> 32);
  w[3] = static_cast<uint16_t>(lo >> 48);
  w[4] = static_cast<uint16_t>(hi);
}

UCCL_EP_HOST_DEVICE inline void logfmtUnpack8(const uint16_t w[5], uint32_t c[8]) {
  const uint64_t lo = uint64_t{w[0]} | (uint64_t{w[1]} << 16) | (uint64_t{w[2]} << 32) | (uint64_t{w[3]} << 48);
  for (int i = 0; i < 6; ++i) c[i] = static_cast<uint32_t>(lo >> (10 * i)) & 0x3ffu;
  c[6] = static_cast<uint32_t>(lo >> 60) | ((uint32_t{w[4]} & 0x3fu) << 4);
  c[7] = (uint32_t{w[4]} >> 6) & 0x3ffu;
}

}  // namespace uccl::ep::kernels::ll
