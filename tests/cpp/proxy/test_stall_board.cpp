// The stall board (proxy/stall_board.hpp): a ring that times out names, besides its own peer, what the group's other
// threads wait on, transport calls that do not return first. The case it exists for: rank 0's ring stalls on rank 1,
// which is alive but stuck behind a stopped rank 2, while another proxy thread of rank 0 is blocked inside a post to
// rank 2; the error must name rank 2.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "held_transport.hpp"
#include "proxy/stall_board.hpp"
#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/ring/host_ring.hpp"
#include "wait_until.hpp"

namespace uccl::ep::proxy {
namespace {

using testing::HeldState;
using testing::HeldTransport;
using testing::kSecond;
using testing::waitUntil;

constexpr uint64_t kMs = 1000 * 1000;

TEST(StallBoard, NamesBlockedPostsFirstThenRingsOldestFirstAndLeavesOutTheCaller) {
  StallBoard b;
  StallBoard::Entry* self = b.addRing("ring 1 (proxy thread 1)");
  StallBoard::Entry* old_ring = b.addRing("ring 0 (proxy thread 0)");
  StallBoard::Entry* young_ring = b.addRing("ring 2 (proxy thread 0)");
  StallBoard::Entry* post = b.addPosting("proxy thread 0");
  StallBoard::Entry* short_post = b.addPosting("proxy thread 1");
  const uint64_t now = 10000 * kMs;
  EXPECT_EQ(b.describeOthers(self, now, 500 * kMs), "");  // nothing set yet
  StallBoard::set(self, 1, now - 3000 * kMs);
  StallBoard::set(young_ring, 3, now - 1000 * kMs);
  StallBoard::set(old_ring, 2, now - 2500 * kMs);
  StallBoard::set(post, 2, now - 600 * kMs);
  StallBoard::set(short_post, 3, now - 1 * kMs);  // an ordinary post in progress
  EXPECT_EQ(b.describeOthers(self, now, 500 * kMs),
            " The group also waits: proxy thread 0 inside a post to rank 2 for 0.6 s, ring 0 (proxy thread 0) on "
            "rank 2 for 2.5 s, ring 2 (proxy thread 0) on rank 3 for 1.0 s");
  StallBoard::clear(post);
  StallBoard::clear(young_ring);
  EXPECT_EQ(b.describeOthers(self, now, 500 * kMs),
            " The group also waits: ring 0 (proxy thread 0) on rank 2 for 2.5 s");
}

// Rank 0 of 3 with two proxy threads and a ring on each (ring 0 on thread 0, ring 1 on thread 1); posts to rank 2 do
// not return until unblock(), and no operation completes.
struct ThreeRanks {
  HeldState state;
  alignas(64) std::vector<uint8_t> src = std::vector<uint8_t>(4096, 0xab);
  alignas(64) std::vector<uint8_t> dst = std::vector<uint8_t>(4096, 0);
  std::vector<int64_t> counters = std::vector<int64_t>(16, 0);
  ring::HostRing ring0{6, 0}, ring1{6, 1};
  std::vector<std::unique_ptr<ProxyGroup>> groups;

  ThreeRanks() {
    state.block_posts_to = 2;
    ProxyConfig base;
    base.world = 3;
    base.num_threads = 2;
    base.timeout_ns = 300 * kMs;
    base.transport_factory = [this](const transport::TransportOptions&) {
      return std::make_unique<HeldTransport>(&state);
    };
    std::vector<transport::Blob> infos;
    for (int rank = 0; rank < 3; ++rank) {
      ProxyConfig c = base;
      c.rank = rank;
      groups.push_back(std::make_unique<ProxyGroup>(c));
      groups.back()->addRegion(0, src.data(), src.size(), transport::MemoryKind::kHost);
      groups.back()->addRegion(1, dst.data(), dst.size(), transport::MemoryKind::kHost);
      groups.back()->setSignalRegion(counters.data(), counters.size());
      infos.push_back(groups.back()->localInfo());
    }
    rank0().addRing(ring0.view(), RingKind::kNormal);
    rank0().addRing(ring1.view(), RingKind::kNormal);
    for (auto& g : groups) g->connect(infos);
    rank0().start();
  }
  ~ThreeRanks() {
    state.unblock();  // else the blocked thread never returns to be joined
    for (auto& g : groups) g->stop();
  }
  ProxyGroup& rank0() { return *groups[0]; }
  // Ring 1 writes to rank 2; returns once its post is blocked.
  bool blockThread1() {
    if (ring::push(ring1.view(), ring::makeWrite(2, 0, 0, 1, 0, 64), kSecond).status != ring::Status::kOk) return false;
    return waitUntil([&] {
      std::lock_guard<std::mutex> l(state.mu);
      return state.blocked_posts == 1;
    });
  }
};

// Ring 0 writes to rank 1, which is alive but never completes it (stuck behind rank 2).
TEST(StallBoard, ARingThatTimesOutOnALivePeerAlsoNamesThePeerAnotherThreadIsBlockedOn) {
  ThreeRanks t;
  ASSERT_TRUE(t.blockThread1());
  const uint64_t ticket = ring::push(t.ring0.view(), ring::makeWrite(1, 0, 0, 1, 0, 64), kSecond).ticket;
  EXPECT_EQ(ring::waitCompleted(t.ring0.view(), ticket, 10 * kSecond), ring::Status::kConsumerError);
  const std::string error = t.rank0().firstError();
  EXPECT_NE(error.find("ring 0 (proxy thread 0): the operation at position 0 to rank 1 did not complete"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find(" The group also waits: proxy thread 1 inside a post to rank 2 for "), std::string::npos)
      << error;
}

// Nothing else stalls: the blocked thread cannot time itself out, so asking the group for errors names rank 2, and
// the rings' waiters are released.
TEST(StallBoard, APostThatNeverReturnsIsNamedOnceTheGroupIsAskedAfterTheTimeout) {
  ThreeRanks t;
  ASSERT_TRUE(t.blockThread1());
  EXPECT_FALSE(t.rank0().hasError());  // younger than the timeout
  ASSERT_TRUE(waitUntil([&] { return t.rank0().hasError(); }, 5));
  const std::string error = t.rank0().firstError();
  EXPECT_NE(error.find("rank 0: proxy thread 1 has been inside a post to rank 2 for "), std::string::npos) << error;
  EXPECT_NE(error.find("longer than UCCL_EP_TIMEOUT_SECS (0.3 s): the transport does not return; is rank 2 alive?"),
            std::string::npos)
      << error;
  EXPECT_EQ(ring::waitCompleted(t.ring1.view(), 0, kSecond), ring::Status::kConsumerError);
}

}  // namespace
}  // namespace uccl::ep::proxy
