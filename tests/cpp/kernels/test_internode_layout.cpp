// The RDMA buffer layout of internode normal mode (kernels/internode.hpp): records hold every field, rings and
// slots are aligned, disjoint and in order, and the whole layout is what get_rdma_buffer_size_hint asks for.
#include <gtest/gtest.h>

#include "kernels/internode.hpp"
#include "runtime/size_hints.hpp"

namespace uccl::ep::kernels::internode {
namespace {

TEST(InternodeLayout, ARecordHoldsEveryFieldAlignedTo16Bytes) {
  for (size_t hidden_bytes : {size_t{7168}, size_t{14336}, size_t{4096}, size_t{2064}}) {
    for (int topk : {0, 1, 8, kMaxTopk}) {
      const size_t scales = (hidden_bytes + 127) / 128 * 4;
      const size_t r = recordBytes(hidden_bytes, scales, topk);
      EXPECT_EQ(r % 16, 0u);
      EXPECT_GE(r, hidden_bytes + size_t(topk) * 12 + scales + 4 + 8);
      EXPECT_LT(r, hidden_bytes + size_t(topk) * 12 + scales + 4 + 8 + 16);
    }
  }
}

TEST(InternodeLayout, RingsAndSlotsAreDisjointAlignedAndInOrder) {
  const RdmaLayout l = makeRdmaLayout(24, 4, 128, 14336, 448, 8);
  EXPECT_EQ(l.channels, 12);
  size_t prev_end = 0;
  for (int area = 0; area < 2; ++area) {
    for (int c = 0; c < l.channels; ++c) {
      for (int n = 0; n < l.nodes; ++n) {
        const size_t ring = l.ringOff(area, c, n);
        EXPECT_EQ(ring, prev_end) << area << " " << c << " " << n;
        EXPECT_EQ(ring % 16, 0u);
        EXPECT_EQ(l.slotOff(area, c, n, 0), ring + kRingCounterBytes);
        EXPECT_EQ(l.slotOff(area, c, n, 1) - l.slotOff(area, c, n, 0), l.record_bytes);
        prev_end = ring + l.ringBytes();
      }
    }
  }
  EXPECT_EQ(prev_end, l.totalBytes());
}

// One source of truth: the hint a Config gives for num_rdma_bytes is this layout's size, rounded up to 128 bytes.
TEST(InternodeLayout, TheSizeHintIsTheLayoutsSize) {
  for (int nodes : {2, 4, 16, 32}) {
    for (long long hidden_bytes : {7168LL, 14336LL, 2064LL}) {
      runtime::SizeHintArgs a;
      a.num_sms = 24;
      a.recv_tokens = 128;
      a.hidden_bytes = hidden_bytes;
      a.num_ranks = nodes * 8;
      a.num_ranks_per_node = 8;
      const size_t hint = runtime::rdmaBufferSizeHint(a);
      const RdmaLayout l = makeRdmaLayout(a.num_sms, nodes, a.recv_tokens, size_t(hidden_bytes),
                                          (size_t(hidden_bytes) + 127) / 128 * 4, kMaxTopk);
      EXPECT_GE(hint, l.totalBytes()) << nodes << " nodes, hidden_bytes " << hidden_bytes;
      EXPECT_LT(hint - l.totalBytes(), kBufferSizeUnit) << nodes << " nodes, hidden_bytes " << hidden_bytes;
    }
  }
}

}  // namespace
}  // namespace uccl::ep::kernels::internode
