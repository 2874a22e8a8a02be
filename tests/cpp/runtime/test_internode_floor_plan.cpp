// The transport floor of an internode call (runtime/internode_floor_plan.hpp): the same writes, bytes and signals the
// kernels hand the proxies, to the same peers and offsets, and the counters a rank then waits for.
#include <gtest/gtest.h>

#include <map>

#include "runtime/internode_floor_plan.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {
namespace {

namespace in = kernels::internode;

InternodeFloorArgs args(int rank, bool counts, int slots = 8) {
  InternodeFloorArgs a;
  a.layout = in::makeRdmaLayout(2, 2, 4, 2, slots, 1024);  // 4 ranks as 2 nodes of 2, 2 channels
  a.layout.region_bytes = a.layout.regionNeed();
  a.rank = rank;
  a.ranks_per_node = 2;
  a.send_chunk = 3;
  a.signal_base = 100;
  a.counts = counts;
  a.sent.assign(4, 0);
  a.received.assign(4, 0);
  a.num_rings = 4;
  a.num_threads = 2;
  return a;
}

TEST(InternodeFloorPlan, TheCountsExchangeReachesEveryRankOfTheOtherNodes) {
  const proxy::FloorPlan p = internodeFloorPlan(args(1, true));
  ASSERT_EQ(p.ops.size(), 2u);  // ranks 2 and 3: node 1
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(p.ops[i].peer, 2 + i);
    EXPECT_EQ(p.ops[i].signal_index, 100 + in::arrivedSignal(1));
    EXPECT_EQ(p.ops[i].signal_value, 1);
    EXPECT_EQ(p.ops[i].bytes, args(1, true).layout.rowBytes());
    EXPECT_EQ(p.expect[i].peer, 2 + i);
    EXPECT_EQ(p.expect[i].signal_index, 100 + in::arrivedSignal(static_cast<int>(2 + i)));
  }
  EXPECT_TRUE(internodeFloorPlan(args(1, false)).ops.empty());
}

TEST(InternodeFloorPlan, ACombineSaysItBeganToEveryRankOfTheOtherNodes) {
  InternodeFloorArgs a = args(2, false);
  a.entered = true;
  const proxy::FloorPlan p = internodeFloorPlan(a);
  ASSERT_EQ(p.ops.size(), 2u);  // ranks 0 and 1: node 0
  ASSERT_EQ(p.expect.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(p.ops[i].peer, i);
    EXPECT_EQ(p.ops[i].bytes, 0u);  // a signal alone
    EXPECT_EQ(p.ops[i].signal_index, 100 + in::enteredSignal(4, 2));
    EXPECT_EQ(p.ops[i].signal_value, 1);
    EXPECT_EQ(p.expect[i].signal_index, 100 + in::enteredSignal(4, static_cast<int>(i)));
    EXPECT_EQ(p.expect[i].value, 1);
  }
  a.counts = true;
  EXPECT_THROW(internodeFloorPlan(a), InvalidArgument);
}

TEST(InternodeFloorPlan, StreamsGoInChunksToThePeerAndWrapTheRing) {
  InternodeFloorArgs a = args(1, false, /*slots=*/8);
  a.sent = {0, 10, 0, 0};      // channel 0, node 1: 10 records (chunks 3 + 3 + 3 + 1; the last wraps at slot 8)
  a.received = {0, 4, 0, 0};   // and 4 back from rank 3 on channel 0
  const proxy::FloorPlan p = internodeFloorPlan(a);
  const in::RdmaLayout& L = a.layout;
  uint64_t bytes = 0;
  int64_t tail = 0, head = 0;
  for (const proxy::FloorOp& o : p.ops) {
    EXPECT_EQ(o.peer, 3u);  // the rank with local index 1 on node 1
    EXPECT_EQ(o.lane, static_cast<uint32_t>(proxy::threadOfRing(1, 2)));  // ring c * N + b = 1
    if (o.bytes > 0) {
      EXPECT_EQ(o.signal_index, 100 + in::tailSignal(4, 2, 0, 0));
      EXPECT_EQ((o.src_offset - L.slotOff(0, 0, 1, 0)) % L.record_bytes, 0u);
      EXPECT_EQ(o.dst_offset - L.slotOff(1, 0, 0, 0), o.src_offset - L.slotOff(0, 0, 1, 0));
      EXPECT_LE(o.dst_offset + o.bytes, L.slotOff(1, 0, 0, 0) + size_t(L.slots) * L.record_bytes);  // in the ring
      bytes += o.bytes;
      tail += o.signal_value;
    } else {
      EXPECT_EQ(o.signal_index, 100 + in::headSignal(4, 2, 0, 0));
      head += o.signal_value;
    }
  }
  EXPECT_EQ(bytes, 10 * L.record_bytes);
  EXPECT_EQ(tail, 10);
  EXPECT_EQ(head, 4);
  EXPECT_EQ(p.writes(), 5u);  // 3 + 3 + (2 | 1 at the wrap) + 1
  std::map<uint32_t, int64_t> expect;
  for (const proxy::FloorExpect& e : p.expect) expect[e.signal_index] = e.value;
  EXPECT_EQ(expect.at(100 + in::tailSignal(4, 2, 0, 1)), 4);   // 4 records arrive from node 1
  EXPECT_EQ(expect.at(100 + in::headSignal(4, 2, 0, 1)), 10);  // and the room of the 10 sent comes back
}

TEST(InternodeFloorPlan, ArgumentsThatDoNotFitAreRejected) {
  InternodeFloorArgs a = args(1, false);
  a.sent.resize(3);
  EXPECT_THROW(internodeFloorPlan(a), InvalidArgument);
  a = args(4, false);
  EXPECT_THROW(internodeFloorPlan(a), InvalidArgument);
  a = args(0, false);
  a.received[1] = -1;
  EXPECT_THROW(internodeFloorPlan(a), InvalidArgument);
  a = args(0, false);
  a.layout.region_bytes = a.layout.regionNeed() - 16;
  EXPECT_THROW(internodeFloorPlan(a), InvalidArgument);
}

}  // namespace
}  // namespace uccl::ep::runtime
