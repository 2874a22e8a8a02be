// The number formats and the logfmt codec, checked on the host: the kernels run the same header code
// (platform/numeric.hpp, kernels/logfmt.hpp). The low-latency layout has its own test (test_ll_layout.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/logfmt.hpp"
#include "uccl_ep/platform/numeric.hpp"

namespace uccl::ep {
namespace {

using platform::fp8E4m3ToFloat;
using platform::floatToFp8E4m3;

bool isNanCode(int c) { return (c & 0x7f) == 0x7f; }

TEST(Fp8, EveryFiniteCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    if (isNanCode(c)) continue;
    EXPECT_EQ(floatToFp8E4m3(fp8E4m3ToFloat(static_cast<uint8_t>(c))), c) << "code " << c;
  }
  EXPECT_TRUE(std::isnan(fp8E4m3ToFloat(0x7f)));
  EXPECT_EQ(fp8E4m3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(fp8E4m3ToFloat(0x01), 1.0f / 512.0f);  // smallest subnormal
  EXPECT_EQ(fp8E4m3ToFloat(0x08), 1.0f / 64.0f);   // smallest normal
  EXPECT_EQ(fp8E4m3ToFloat(0x38), 1.0f);
}

TEST(Fp8, RoundsToNearestEvenBetweenNeighbours) {
  for (int c = 0; c < 0x7e; ++c) {  // positive finite codes and their upper neighbour
    const float lo = fp8E4m3ToFloat(static_cast<uint8_t>(c)), hi = fp8E4m3ToFloat(static_cast<uint8_t>(c + 1));
    const float mid = 0.5f * (lo + hi);
    EXPECT_EQ(floatToFp8E4m3(mid), (c % 2 == 0) ? c : c + 1) << "midpoint above code " << c;
    EXPECT_EQ(floatToFp8E4m3(std::nextafter(mid, 0.0f)), c);
    EXPECT_EQ(floatToFp8E4m3(std::nextafter(mid, 1e9f)), c + 1);
    EXPECT_EQ(floatToFp8E4m3(-mid), 0x80 | ((c % 2 == 0) ? c : c + 1));
  }
}

TEST(Fp8, SaturatesAndKeepsNan) {
  EXPECT_EQ(floatToFp8E4m3(449.0f), 0x7e);
  EXPECT_EQ(floatToFp8E4m3(500.0f), 0x7e);
  EXPECT_EQ(floatToFp8E4m3(1e30f), 0x7e);
  EXPECT_EQ(floatToFp8E4m3(INFINITY), 0x7e);
  EXPECT_EQ(floatToFp8E4m3(-INFINITY), 0xfe);
  EXPECT_EQ(floatToFp8E4m3(NAN), 0x7f);
  EXPECT_EQ(floatToFp8E4m3(1e-9f), 0x00);
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(platform::floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(platform::floatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie -> even
  EXPECT_EQ(platform::floatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(platform::floatToBf16(-2.0f), 0xc000);
  EXPECT_TRUE(std::isnan(platform::bf16ToFloat(platform::floatToBf16(NAN))));
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 100.0f);
  for (int i = 0; i < 10000; ++i) {
    const float v = d(rng);
    const float r = platform::bf16ToFloat(platform::floatToBf16(v));
    EXPECT_LE(std::fabs(r - v), std::fabs(v) * std::ldexp(1.0f, -8)) << v;
  }
}

TEST(Fp8, ScalesArePowersOfTwoWhenRounded) {
  EXPECT_EQ(platform::roundScaleUp(0.3f), 0.5f);
  EXPECT_EQ(platform::roundScaleUp(0.25f), 0.25f);
  EXPECT_EQ(platform::roundScaleUp(3.0f), 4.0f);
  EXPECT_FLOAT_EQ(platform::fp8Scale(448.0f, false), 1.0f);
  EXPECT_FLOAT_EQ(platform::fp8Scale(0.0f, false), 1e-4f / 448.0f);  // amax clamped
  EXPECT_EQ(platform::fp8Scale(5.0f, true), 1.0f / 64.0f);            // 5/448 = 0.01116 -> 2^-6
  EXPECT_EQ(platform::ue8m0Byte(1.0f), 127u);
  EXPECT_EQ(platform::ue8m0Byte(1.0f / 64.0f), 121u);
  // Small integers survive the cast exactly under a power-of-two scale (the benchmark encodes ranks so).
  for (int c = 1; c <= 16; ++c) {
    const float s = platform::fp8Scale(static_cast<float>(c), true);
    EXPECT_EQ(fp8E4m3ToFloat(floatToFp8E4m3(c / s)) * s, static_cast<float>(c)) << c;
  }
}

TEST(Logfmt, PackUnpackRoundTrips) {
  std::mt19937 rng(3);
  for (int i = 0; i < 1000; ++i) {
    uint32_t c[8], back[8];
    uint16_t w[5];
    for (auto& x : c) x = rng() & 0x3ffu;
    kernels::ll::logfmtPack8(c, w);
    kernels::ll::logfmtUnpack8(w, back);
    for (int j = 0; j < 8; ++j) ASSERT_EQ(back[j], c[j]);
  }
}

TEST(Logfmt, ErrorWithinTheStepBound) {
  using namespace kernels::ll;
  std::mt19937 rng(11);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int g = 0; g < 200; ++g) {
    std::vector<float> v(128);
    float amax = 0, amin = INFINITY;
    for (auto& x : v) {
      x = d(rng) * (g % 7 + 1);
      if (g % 5 == 0 && (&x - v.data()) % 9 == 0) x = 0.0f;  // some exact zeros
      amax = std::max(amax, std::fabs(x));
      if (x != 0.0f) amin = std::min(amin, std::fabs(x));
    }
    const LogfmtParams p = logfmtParams(amax, amin);
    const float bound = std::exp2(p.step / 2) - 1 + 1e-5f;
    for (float x : v) {
      const float y = logfmtDecode(logfmtEncode(x, p), p);
      if (x == 0.0f) {
        EXPECT_EQ(y, 0.0f);
        continue;
      }
      EXPECT_EQ(std::signbit(x), std::signbit(y));
      if (std::log2(std::fabs(x)) >= p.lo) {
        EXPECT_LE(std::fabs(y - x), bound * std::fabs(x)) << x;
      }
    }
    EXPECT_NEAR(logfmtDecode(logfmtEncode(amax, p), p), amax, amax * bound);
  }
  // All zeros, and a constant group.
  const LogfmtParams z = logfmtParams(0.0f, INFINITY);
  EXPECT_EQ(logfmtDecode(logfmtEncode(0.0f, z), z), 0.0f);
  const LogfmtParams c = logfmtParams(3.0f, 3.0f);
  EXPECT_FLOAT_EQ(logfmtDecode(logfmtEncode(-3.0f, c), c), -3.0f);
  // The widest range keeps the error near 1%.
  const LogfmtParams wide = logfmtParams(1.0f, 1e-9f);
  EXPECT_LT(std::exp2(wide.step / 2) - 1, 0.011f);
}

}  // namespace
}  // namespace uccl::ep
