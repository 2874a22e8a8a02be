// Number formats shared by kernels and host code: BF16 and FP8 E4M3 (OCP "fn": no infinities, max 448).
// Written as plain bit manipulation so the same code runs in CUDA and HIP kernels and in host tests, with the
// same results everywhere (round to nearest even, saturating; checked exhaustively by the host tests).
#pragma once

#include <cstdint>
#include <cstring>

#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::platform {

UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint32_t floatBits(float f) {
#if UCCL_EP_DEVICE_PASS
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE float bitsFloat(uint32_t u) {
#if UCCL_EP_DEVICE_PASS
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE float bf16ToFloat(uint16_t h) { return bitsFloat(uint32_t{h} << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint16_t floatToBf16(float f) {
  const uint32_t u = floatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline constexpr float kFp8E4m3Max = 448.0f;

// FP8 E4M3 (fn) -> float. Code 0x7f / 0xff is NaN.
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE float fp8E4m3ToFloat(uint8_t c) {
  const uint32_t sign = uint32_t{c & 0x80u} << 24;
  const uint32_t exp = (c >> 3) & 0xfu, man = c & 0x7u;
  if (exp == 0xf && man == 0x7) return bitsFloat(sign | 0x7fc00000u);
  if (exp == 0) {  // subnormal: man * 2^-9
    return bitsFloat(sign | floatBits(static_cast<float>(man) * (1.0f / 512.0f)));
  }
  return bitsFloat(sign | ((exp + 120u) << 23) | (man << 20));
}

// float -> FP8 E4M3 (fn), round to nearest even, saturating to +-448; NaN -> 0x7f.
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint8_t floatToFp8E4m3(float f) {
  const uint32_t u = floatBits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return 0x7f;                       // NaN
  if (a >= floatBits(464.0f)) return sign | 0x7e;          // >= halfway above 448 (and inf): saturate
  const int e = static_cast<int>(a >> 23) - 127;
  if (e < -6) {  // subnormal range of E4M3: multiples of 2^-9, rounded to nearest even by the FPU's default mode
    const float q = bitsFloat(a) * 512.0f;                 // exact: scaling by a power of two
    uint32_t n = static_cast<uint32_t>(q);
    const float rem = q - static_cast<float>(n);
    if (rem > 0.5f || (rem == 0.5f && (n & 1u))) ++n;
    return static_cast<uint8_t>(sign | n);                 // n == 8 is the smallest normal, encoded the same
  }
  uint32_t man = (a >> 20) & 0x7u;
  const uint32_t rest = a & 0xfffffu;
  uint32_t exp = static_cast<uint32_t>(e + 7);
  if (rest > 0x80000u || (rest == 0x80000u && (man & 1u))) {
    if (++man == 8) {
      man = 0;
      ++exp;
    }
  }
  if (exp > 15 || (exp == 15 && man == 7)) return sign | 0x7e;
  return static_cast<uint8_t>(sign | (exp << 3) | man);
}

// Power-of-two scale at or above s (round_scale): 2^ceil(log2 s), computed exactly from the bits.
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE float roundScaleUp(float s) {
  const uint32_t u = floatBits(s);
  const uint32_t exp = (u >> 23) & 0xffu;
  const uint32_t man = u & 0x7fffffu;
  return bitsFloat((exp + (man != 0 ? 1u : 0u)) << 23);
}

// The per-128-channel FP8 scale for a group whose largest magnitude is amax.
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE float fp8Scale(float amax, bool round_scale) {
  const float s = (amax > 1e-4f ? amax : 1e-4f) / kFp8E4m3Max;
  return round_scale ? roundScaleUp(s) : s;
}

// UE8M0: the exponent byte of a power-of-two float.
UCCL_EP_HOST_DEVICE UCCL_EP_FORCEINLINE uint32_t ue8m0Byte(float pow2_scale) { return (floatBits(pow2_scale) >> 23) & 0xffu; }

}  // namespace uccl::ep::platform
