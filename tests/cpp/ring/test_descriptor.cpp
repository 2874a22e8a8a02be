// The descriptor's encoding: every field survives a round trip at its limits, and lap parity alternates.
#include <gtest/gtest.h>

#include "uccl_ep/ring/descriptor.hpp"

namespace uccl::ep::ring {
namespace {

TEST(Descriptor, WriteRoundTripAtFieldLimits) {
  const uint64_t max_off = kMaxRegionBytes - kOffsetUnit;
  const Descriptor d = makeWrite(kMaxRanks - 1, kMaxRegions - 1, max_off, 5, 16, static_cast<uint32_t>(kMaxWriteBytes));
  const Decoded x = decode(d);
  EXPECT_EQ(x.version, kDescriptorVersion);
  EXPECT_EQ(x.opcode, Opcode::kWrite);
  EXPECT_EQ(x.dst_rank, kMaxRanks - 1);
  EXPECT_EQ(x.src_region, kMaxRegions - 1);
  EXPECT_EQ(x.dst_region, 5u);
  EXPECT_EQ(x.src_offset, max_off);
  EXPECT_EQ(x.dst_offset, 16u);
  EXPECT_EQ(x.length, kMaxWriteBytes);
  EXPECT_EQ(d.hi & bits::kParityMask, 0u) << "producers never set parity themselves";
}

TEST(Descriptor, SignalCarriesNegativeValues) {
  const Decoded x = decode(makeSignal(7, 123456, -1025));
  EXPECT_EQ(x.opcode, Opcode::kSignal);
  EXPECT_EQ(x.dst_rank, 7u);
  EXPECT_EQ(x.signal_index, 123456u);
  EXPECT_EQ(x.signal_value, -1025);
  EXPECT_EQ(x.reserved, 0u);
}

TEST(Descriptor, NopAndZeroAreDistinct) {
  EXPECT_EQ(decode(makeNop()).opcode, Opcode::kNop);
  EXPECT_EQ(decode(Descriptor{0, 0}).opcode, Opcode::kInvalid);
  EXPECT_EQ(decode(Descriptor{0, 0}).version, 0u) << "a zeroed slot never decodes as a valid version";
}

TEST(Descriptor, ParityAlternatesPerLap) {
  const uint64_t log2 = 3;  // 8 slots
  for (uint64_t pos = 0; pos < 64; ++pos) {
    const uint64_t lap = pos >> log2;
    EXPECT_EQ(parityFor(pos, log2) != 0, lap % 2 == 0) << "pos " << pos;
  }
}

}  // namespace
}  // namespace uccl::ep::ring
