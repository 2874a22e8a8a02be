// The RDMA buffer layout of internode normal mode (kernels/internode.hpp): records hold the token record and the
// positions, rings, slots and counts areas are aligned, disjoint and in order, channels cover every token once, and
// the signal words and counters of different streams never share a word.
#include <gtest/gtest.h>

#include <set>

#include "kernels/internode.hpp"
#include "runtime/size_hints.hpp"

namespace uccl::ep::kernels::internode {
namespace {

TEST(InternodeLayout, ARecordHoldsTheTokenRecordAndOnePositionPerRankOfTheNode) {
  for (size_t hidden_bytes : {size_t{7168}, size_t{14336}, size_t{4096}, size_t{2064}}) {
    for (int topk : {0, 1, 8, kMaxTopk}) {
      for (int P : {1, 2, 4, 8, kMaxNodeRanks}) {
        const size_t scales = (hidden_bytes + 127) / 128 * 4;
        const intranode::Layout l = intranode::makeLayout(16, 256, hidden_bytes, scales, topk, hidden_bytes);
        const size_t r = recordBytes(l.token_stride, P);
        EXPECT_EQ(r % 16, 0u);
        EXPECT_GE(r, l.token_stride + size_t(P) * 4);
        EXPECT_LT(r, l.token_stride + size_t(P) * 4 + 16);
        EXPECT_LE(r, maxRecordBytes(hidden_bytes, P));
      }
    }
  }
}

TEST(InternodeLayout, CountsAreasThenRingsDisjointAlignedAndInOrder) {
  const RdmaLayout l = makeRdmaLayout(12, 4, 32, 8, 128, recordBytes(14336 + 448 + 112, 8));
  EXPECT_EQ(l.countsOutOff(0), 0u);
  EXPECT_EQ(l.countsOutOff(1), (l.rowHeadInts() + size_t(l.ranks) * l.rowExpertInts()) * 4);
  EXPECT_EQ(l.countsInOff(0, 0), l.countsOutOff(2));
  for (int parity = 0; parity < 2; ++parity) {
    for (int s = 0; s < l.ranks; ++s) {
      EXPECT_EQ(l.countsInOff(parity, s) % 16, 0u);
      EXPECT_EQ(l.countsInOff(parity, s) + l.rowBytes(),
                s + 1 < l.ranks ? l.countsInOff(parity, s + 1) : l.countsInOff(parity + 1, 0));
    }
  }
  EXPECT_GE(l.ringsOff(), l.countsInOff(2, 0));
  EXPECT_EQ(l.ringsOff() % 128, 0u);
}

// Each (area, node) pair has a region of the same size for the Buffer's life, whatever the call's channels, record
// size or ring depth: the rings of a call lie inside their pair's region, disjoint, aligned and in order.
TEST(InternodeLayout, RingsStayInsideTheRegionOfTheirAreaAndNode) {
  const size_t bytes = size_t{4} << 30;
  for (const RdmaLayout& shape : {makeRdmaLayout(12, 4, 32, 8, 128, 7296), makeRdmaLayout(3, 4, 32, 0, 64, 14464),
                                  makeRdmaLayout(kMaxChannels, 4, 32, 8, 256, 14464)}) {
    RdmaLayout l = shape;
    l.region_bytes = l.regionOf(bytes);
    EXPECT_EQ(l.region_bytes % 16, 0u);
    EXPECT_LE(l.ringsOff() + 2 * size_t(l.nodes) * l.region_bytes, bytes);
    EXPECT_LE(l.regionNeed(), l.region_bytes);
    EXPECT_LE(l.neededBytes(), bytes);
    for (int area = 0; area < 2; ++area) {
      for (int n = 0; n < l.nodes; ++n) {
        const size_t region = l.ringsOff() + (size_t(area) * l.nodes + n) * l.region_bytes;
        size_t prev_end = region;
        for (int c = 0; c < l.channels; ++c) {
          const size_t first = l.slotOff(area, c, n, 0);
          EXPECT_EQ(first, prev_end + kRingCounterBytes) << area << " " << c << " " << n;
          EXPECT_EQ(first % 16, 0u);
          EXPECT_EQ(l.slotOff(area, c, n, 1) - first, l.record_bytes);
          prev_end = first + size_t(l.slots) * l.record_bytes;
        }
        EXPECT_LE(prev_end, region + l.region_bytes);
      }
    }
  }
}

TEST(InternodeLayout, CountsRowsHaveRoomForEveryChannelAndExpert) {
  const RdmaLayout l = makeRdmaLayout(12, 4, 32, 8, 128, 7296);
  EXPECT_EQ(l.rowHeadInts() % 4, 0u);
  EXPECT_EQ(l.nodeChannelIndex(l.nodes - 1, kMaxChannels - 1) + 1, size_t(l.ranks + l.nodes * kMaxChannels));
  EXPECT_LE(l.nodeChannelIndex(l.nodes - 1, kMaxChannels - 1), l.rowHeadInts() - 1);
  EXPECT_GE(l.rowExpertInts() * size_t(l.ranks), size_t(kMaxNormalExperts));
}

// The counts areas do not move when a call's channels, record size or ring depth change: a peer may write its next
// row while this rank still reads the last one.
TEST(InternodeLayout, TheCountsAreasDoNotDependOnTheCall) {
  const RdmaLayout a = makeRdmaLayout(12, 4, 32, 8, 128, 7296);
  const RdmaLayout b = makeRdmaLayout(3, 4, 32, 0, 64, 14464);
  for (int parity = 0; parity < 3; ++parity) EXPECT_EQ(a.countsOutOff(parity), b.countsOutOff(parity));
  for (int s = 0; s < 32; ++s) EXPECT_EQ(a.countsInOff(1, s), b.countsInOff(1, s));
  EXPECT_EQ(a.ringsOff(), b.ringsOff());
}

TEST(InternodeLayout, ChannelsCoverEveryTokenOnceInOrder) {
  for (int T : {0, 1, 5, 10, 127, 4096, 4097}) {
    for (int C : {1, 3, 10, kMaxChannels}) {
      EXPECT_EQ(channelBegin(0, T, C), 0);
      EXPECT_EQ(channelBegin(C, T, C), T);
      for (int t = 0; t < T; ++t) {
        const int c = channelOf(t, T, C);
        ASSERT_GE(c, 0);
        ASSERT_LT(c, C);
        ASSERT_LE(channelBegin(c, T, C), t) << T << " " << C << " " << t;
        ASSERT_LT(t, channelBegin(c + 1, T, C)) << T << " " << C << " " << t;
      }
    }
  }
}

TEST(InternodeLayout, SignalWordsAndCountersOfDifferentStreamsAreDistinct) {
  for (int nodes : {2, 4, 32}) {
    const int ranks = nodes * 4;
    std::set<size_t> signals, counters{kCallsCounter, kCombinesCounter};
    for (int c = 0; c < kMaxChannels; ++c) {
      for (int n = 0; n < nodes; ++n) EXPECT_TRUE(counters.insert(startCounter(nodes, c, n)).second);
    }
    for (int s = 0; s < ranks; ++s) {
      EXPECT_TRUE(signals.insert(arrivedSignal(s)).second);
      EXPECT_TRUE(signals.insert(enteredSignal(ranks, s)).second);
    }
    for (int c = 0; c < kMaxChannels; ++c) {
      for (int n = 0; n < nodes; ++n) {
        EXPECT_TRUE(signals.insert(tailSignal(ranks, nodes, c, n)).second);
        EXPECT_TRUE(signals.insert(headSignal(ranks, nodes, c, n)).second);
        EXPECT_TRUE(counters.insert(sentCounter(nodes, c, n)).second);
        EXPECT_TRUE(counters.insert(consumedCounter(nodes, c, n)).second);
      }
    }
    EXPECT_EQ(signals.size(), signalWords(ranks, nodes));
    EXPECT_EQ(*signals.rbegin() + 1, signalWords(ranks, nodes));
    EXPECT_EQ(counters.size(), counterWords(nodes));
    EXPECT_EQ(*counters.rbegin() + 1, counterWords(nodes));
  }
}

// One source of truth: the hint a Config gives for num_rdma_bytes is what the largest call of its shape needs (top-k
// at its limit), rounded up to 128 bytes.
TEST(InternodeLayout, TheSizeHintIsWhatTheLargestCallNeeds) {
  for (int nodes : {2, 4, 16, 32}) {
    for (int P : {1, 4, 8}) {
      for (long long hidden_bytes : {7168LL, 14336LL, 2064LL}) {
        runtime::SizeHintArgs a;
        a.num_sms = 24;
        a.recv_tokens = 128;
        a.hidden_bytes = hidden_bytes;
        a.num_ranks = nodes * P;
        a.num_ranks_per_node = P;
        const size_t hint = runtime::rdmaBufferSizeHint(a);
        const size_t scales = (size_t(hidden_bytes) + 127) / 128 * 4;
        const intranode::Layout t = intranode::makeLayout(a.num_ranks, a.num_ranks, size_t(hidden_bytes), scales,
                                                          kMaxTopk, size_t(hidden_bytes));
        const RdmaLayout l = makeRdmaLayout(a.num_sms / 2, nodes, a.num_ranks, 1, a.recv_tokens, recordBytes(t.token_stride, P));
        if (P == 1 && nodes == 1) continue;
        EXPECT_GE(hint, l.neededBytes()) << nodes << " nodes of " << P << ", hidden_bytes " << hidden_bytes;
        EXPECT_LT(hint - l.neededBytes(), kBufferSizeUnit) << nodes << " nodes of " << P << ", hidden_bytes "
                                                           << hidden_bytes;
        RdmaLayout fitted = l;
        fitted.region_bytes = fitted.regionOf(hint);
        EXPECT_LE(fitted.regionNeed(), fitted.region_bytes);
      }
    }
  }
}

}  // namespace
}  // namespace uccl::ep::kernels::internode
