// The normal-mode nvl buffer layout (kernels/intranode.hpp): every region is aligned, the regions are disjoint
// and in order, a token's fields stay inside its stride, and the sizes grow as the kernels index them. The pushed
// words and the staging offset are where a peer's kernels store: identical formulas on both sides.
#include <gtest/gtest.h>

#include "kernels/intranode.hpp"

namespace uccl::ep::kernels::intranode {
namespace {

TEST(IntranodeLayout, RegionsAreAlignedDisjointAndOrdered) {
  for (int ranks : {1, 2, 3, 8, 12, 16, 24, 72}) {
    for (int topk : {0, 1, 8, 16}) {
      for (size_t scales : {size_t{0}, size_t{4} * 56, size_t{4} * 14}) {
        const Layout l = makeLayout(ranks, 256 * ranks, 7168, scales, topk, 7168 * 2);
        EXPECT_EQ(l.done_off, kHeaderBytes);
        EXPECT_GE(l.pushed_off, l.done_off + size_t(ranks) * 8) << ranks;
        EXPECT_GE(l.void_off, l.pushed_off + size_t(ranks) * 8) << ranks;
        EXPECT_GE(l.counts_off, l.void_off + size_t(ranks) * 8) << ranks;
        EXPECT_GE(l.flags_off, l.counts_off + size_t(ranks) * 4);
        EXPECT_GE(l.expert_counts_off, l.flags_off + size_t(kChunkFlags) * 8);
        EXPECT_GE(l.data_off, l.expert_counts_off + size_t(256) * ranks * 4);
        for (size_t off : {l.pushed_off, l.void_off, l.counts_off, l.flags_off, l.expert_counts_off, l.data_off}) {
          EXPECT_EQ(off % kAlign, 0u);
        }
        EXPECT_EQ(l.token_stride % 16, 0u);
        EXPECT_EQ(l.idxOff() % 8, 0u);
        EXPECT_EQ(l.srcIdxOff(), l.scalesOff() + scales);
        EXPECT_GE(l.token_stride, l.srcIdxOff() + 4);
        EXPECT_EQ(l.combine_row_stride % 16, 0u);
        EXPECT_GE(l.combine_row_stride, size_t(7168) * 2 + size_t(topk) * 4);
        for (int tokens : {0, 1, 4096}) {
          EXPECT_EQ(l.stagingOff(tokens) % kAlign, 0u);
          EXPECT_GE(l.stagingOff(tokens), l.listsOff() + size_t(ranks) * tokens * 4);
          for (int64_t received : {int64_t{0}, int64_t{3}, int64_t{8} * 4096}) {
            EXPECT_EQ(l.dispatchBytes(tokens, received), l.stagingOff(tokens) + size_t(received) * l.token_stride);
          }
        }
        EXPECT_EQ(l.combineBytes(10), l.data_off + 10 * l.combine_row_stride);
      }
    }
  }
}

// Combine and cached dispatch count no experts (num_experts 0): no expert-count area, the same rows.
TEST(IntranodeLayout, NoExpertCountsLeaveNoArea) {
  const Layout with = makeLayout(8, 256, 7168, 0, 8, 7168 * 2);
  const Layout without = makeLayout(8, 0, 7168, 0, 8, 7168 * 2);
  EXPECT_EQ(without.data_off, without.expert_counts_off);
  EXPECT_LT(without.data_off, with.data_off);
  EXPECT_EQ(without.combine_row_stride, with.combine_row_stride);
  EXPECT_EQ(without.token_stride, with.token_stride);
}

// The chunk flags hold only epochs: dispatch (experts counted) and combine layouts put them at one offset, so no
// row or count of another call's layout ever lands on a flag word.
TEST(IntranodeLayout, ChunkFlagsSitAtOneOffsetForEveryLayout) {
  for (int ranks : {2, 8, 72}) {
    const Layout dispatch = makeLayout(ranks, 256 * ranks, 7168, 224, 8, 7168 * 2);
    const Layout cached = makeLayout(ranks, 0, 7168, 0, 8, 7168 * 2);
    const Layout combine = makeLayout(ranks, 0, 4096 * 2, 0, 0, 4096 * 2);
    EXPECT_EQ(dispatch.flags_off, cached.flags_off);
    EXPECT_EQ(dispatch.flags_off, combine.flags_off);
    for (const Layout* l : {&dispatch, &cached, &combine}) EXPECT_GE(l->data_off, l->flags_off + kChunkFlags * 8u);
  }
}

TEST(IntranodeLayout, HeaderWordsSitOnTheirOwnL2Lines) {
  EXPECT_GE(kReadyOff - kSeqOff, 128u);
  EXPECT_GE(kNumTokensOff - kReadyOff, 128u);
  EXPECT_GE(kClaimSendOff - kNumTokensOff, 128u);
  EXPECT_GE(kClaimRecvOff - kClaimSendOff, 128u);
  EXPECT_GE(kFailedOff - kClaimRecvOff, 128u);
  EXPECT_LE(kFailedOff + 8, kHeaderBytes);
}

}  // namespace
}  // namespace uccl::ep::kernels::intranode
