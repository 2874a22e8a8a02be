// The proxy's rules, observed through a transport that completes only when told to.
#include <gtest/gtest.h>

#include <dirent.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <thread>
#include <vector>

#include "held_transport.hpp"
#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/ring/host_ring.hpp"
#include "uccl_ep/util/error.hpp"
#include "wait_until.hpp"

namespace uccl::ep::proxy {
namespace {

using ring::Status;
using testing::HeldState;
using testing::HeldTransport;
using transport::OpKind;

using testing::kSecond;
using testing::waitUntil;

// Rank 0 of a world of 2, one proxy thread, one ring, regions 0 and 1 of 4 KiB, 16 signal counters.
class ProxyTest : public ::testing::Test {
 protected:
  // start = false leaves the proxy stopped, so that a test can fill the ring before the proxy first looks at it.
  void build(ProxyConfig base = {}, bool start = true) {
    base.world = 2;
    base.num_threads = 1;
    base.transport_factory = [this](const transport::TransportOptions&) {
      return std::make_unique<HeldTransport>(&state_);
    };
    std::vector<transport::Blob> infos;
    for (int rank = 0; rank < 2; ++rank) {
      ProxyConfig c = base;
      c.rank = rank;
      groups_[rank] = std::make_unique<ProxyGroup>(c);
      groups_[rank]->addRegion(0, src_.data(), src_.size(), transport::MemoryKind::kHost);
      groups_[rank]->addRegion(1, dst_.data(), dst_.size(), transport::MemoryKind::kHost);
      groups_[rank]->setSignalRegion(counters_.data(), counters_.size());
      infos.push_back(groups_[rank]->localInfo());
    }
    groups_[0]->addRing(ring_.view(), RingKind::kNormal);
    for (auto& g : groups_) g->connect(infos);
    if (start) groups_[0]->start();
  }
  void TearDown() override {
    for (auto& g : groups_) {
      if (g) g->stop();
    }
  }
  uint64_t push(const ring::Descriptor& d) {
    const ring::PushResult r = ring::push(ring_.view(), d, kSecond);
    EXPECT_EQ(r.status, Status::kOk);
    return r.ticket;
  }
  uint64_t completed() const { return __atomic_load_n(&ring_.view().control->completed, __ATOMIC_ACQUIRE); }

  HeldState state_;
  ring::HostRing ring_{6, 0};
  alignas(64) std::vector<uint8_t> src_ = std::vector<uint8_t>(4096, 0xab);
  alignas(64) std::vector<uint8_t> dst_ = std::vector<uint8_t>(4096, 0);
  std::vector<int64_t> counters_ = std::vector<int64_t>(16, 0);
  std::unique_ptr<ProxyGroup> groups_[2];
};

TEST_F(ProxyTest, WritesArePostedWithTranslatedAddresses) {
  build();
  push(ring::makeWrite(1, 0, 128, 1, 256, 512));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 1; }));
  const transport::WorkRequest w = state_.posted[0];
  EXPECT_EQ(w.kind, OpKind::kWrite);
  EXPECT_EQ(w.peer, 1u);
  EXPECT_EQ(w.local_offset, 128u);
  EXPECT_EQ(w.length, 512u);
  EXPECT_EQ(w.remote_offset, 256u);
  EXPECT_EQ(w.remote.addr, reinterpret_cast<uint64_t>(dst_.data())) << "rank 1's region 1, from its blob";
  EXPECT_EQ(w.remote.size, dst_.size());
}

TEST_F(ProxyTest, RetiresInOrderWhateverOrderCompletionsArrive) {
  build();
  for (int i = 0; i < 3; ++i) push(ring::makeWrite(1, 0, 0, 1, 64 * i, 64));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 3; }));
  state_.complete(2);
  state_.complete(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(completed(), 0u) << "positions 1 and 2 retired before position 0";
  state_.complete(0);
  ASSERT_TRUE(waitUntil([&] { return completed() == 3; }));
  EXPECT_EQ(ring::waitCompleted(ring_.view(), 2, kSecond), Status::kOk);
}

TEST_F(ProxyTest, InflightDescriptorCapHoldsBackTheRing) {
  ProxyConfig c;
  c.max_inflight_normal = 4;
  build(c);
  for (int i = 0; i < 10; ++i) push(ring::makeWrite(1, 0, 0, 1, 0, 16));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 4; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(state_.postedCount(), 4u);
  for (int i = 0; i < 4; ++i) state_.complete(i);
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 8; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(state_.postedCount(), 8u);
}

TEST_F(ProxyTest, InflightByteCapHoldsBackWrites) {
  ProxyConfig c;
  c.max_inflight_bytes = 1024;
  build(c);
  for (int i = 0; i < 4; ++i) push(ring::makeWrite(1, 0, 0, 1, 0, 512));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 2; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(state_.postedCount(), 2u) << "more than 1024 bytes in flight";
  state_.complete(0);
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 3; }));
}

TEST_F(ProxyTest, ImmediateSignalRidesOnThePrecedingWriteWhenOrdered) {
  ProxyConfig c;
  c.signal_path = SignalPath::kImmediate;
  build(c, /*start=*/false);  // both descriptors sit in the ring before the proxy's first look (else, on a slow
                              // machine, it may post the write alone before the signal arrives)
  push(ring::makeWrite(1, 0, 0, 1, 0, 64));
  push(ring::makeSignal(1, 5, -7));
  groups_[0]->start();
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() >= 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(state_.postedCount(), 1u) << "write and signal were not fused";
  EXPECT_EQ(state_.posted[0].kind, OpKind::kWriteImm);
  EXPECT_EQ(state_.posted[0].imm, (uint64_t{5} << 32) | static_cast<uint32_t>(-7));
}

TEST_F(ProxyTest, SignalWaitsForEarlierWritesOnUnorderedTransport) {
  state_.caps = transport::kRemoteCqData;  // no ordering, no atomics (EFA-like)
  state_.imm_bytes = 4;
  build();
  EXPECT_EQ(groups_[0]->signalPath(), SignalPath::kImmediate);
  push(ring::makeWrite(1, 0, 0, 1, 0, 64));
  push(ring::makeSignal(1, 3, 2));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(state_.postedCount(), 1u) << "signal posted before the write completed";
  state_.complete(0);
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 2; }));
  const transport::WorkRequest s = state_.posted[1];
  EXPECT_EQ(s.kind, OpKind::kWriteImm);
  EXPECT_EQ(s.length, 0u);
  EXPECT_EQ(s.imm, (uint64_t{3} << 16) | 2u) << "4-byte immediate: index << 16 | value";
}

TEST_F(ProxyTest, AtomicSignalTargetsTheCounter) {
  build();  // ordered + atomics: auto picks the atomic path
  ASSERT_EQ(groups_[0]->signalPath(), SignalPath::kAtomic);
  push(ring::makeWrite(1, 0, 0, 1, 0, 64));
  push(ring::makeSignal(1, 9, -1025));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 2; }));
  const transport::WorkRequest s = state_.posted[1];
  EXPECT_EQ(s.kind, OpKind::kFetchAdd);
  EXPECT_EQ(s.remote_offset, 9 * sizeof(int64_t));
  EXPECT_EQ(static_cast<int64_t>(s.imm), -1025);
  EXPECT_EQ(s.remote.addr, reinterpret_cast<uint64_t>(counters_.data()));
}

TEST_F(ProxyTest, SelfSignalIsAppliedAfterEarlierWrites) {
  build();
  push(ring::makeWrite(1, 0, 0, 1, 0, 64));
  push(ring::makeSignal(0, 4, 11));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(__atomic_load_n(&counters_[4], __ATOMIC_ACQUIRE), 0) << "applied before the earlier write completed";
  state_.complete(0);
  ASSERT_TRUE(waitUntil([&] { return __atomic_load_n(&counters_[4], __ATOMIC_ACQUIRE) == 11; }));
}

TEST_F(ProxyTest, ImmediatesFromPeersAreApplied) {
  build();
  state_.remoteData((uint64_t{2} << 32) | static_cast<uint32_t>(-3), 1);
  state_.remoteData((uint64_t{2} << 32) | 10u, 1);
  ASSERT_TRUE(waitUntil([&] { return __atomic_load_n(&counters_[2], __ATOMIC_ACQUIRE) == 7; }));
  EXPECT_EQ(groups_[0]->stats(0).signals_applied, 2u);
}

TEST_F(ProxyTest, OutOfRangeDescriptorIsRejectedAndNothingMoves) {
  build();
  const uint64_t t = push(ring::makeWrite(1, 0, 4096 - 64, 1, 0, 128));  // source overruns region 0
  EXPECT_EQ(ring::waitCompleted(ring_.view(), t, 10 * kSecond), Status::kConsumerError);
  EXPECT_EQ(state_.postedCount(), 0u);
  ASSERT_TRUE(groups_[0]->hasError());
  const std::string e = groups_[0]->firstError();
  EXPECT_NE(e.find("ring 0"), std::string::npos) << e;
  EXPECT_NE(e.find("position 0"), std::string::npos) << e;
  EXPECT_NE(e.find("exceed region 0"), std::string::npos) << e;
  EXPECT_THROW(groups_[0]->checkError(), Error);
  EXPECT_EQ(ring::push(ring_.view(), ring::makeNop(), kSecond).status, Status::kOk) << "ring memory still usable";
}

TEST_F(ProxyTest, CorruptedDescriptorsAreRejected) {
  struct Case {
    ring::Descriptor d;
    const char* why;
  };
  ring::Descriptor bad_version = ring::makeNop();
  bad_version.hi ^= uint64_t{3} << ring::bits::kVersion;
  ring::Descriptor bad_opcode = ring::makeNop();
  bad_opcode.hi |= uint64_t{0xf} << ring::bits::kOpcode;
  const Case cases[] = {
      {bad_version, "version"},
      {bad_opcode, "unknown opcode"},
      {ring::makeWrite(7, 0, 0, 1, 0, 64), "destination rank 7"},
      {ring::makeWrite(1, 3, 0, 1, 0, 64), "source region 3 is not registered"},
      {ring::makeWrite(1, 0, 0, 1, 4096, 16), "destination bytes"},
      {ring::makeSignal(1, 16, 1), "signal index 16"},
  };
  for (const Case& c : cases) {
    TearDown();
    state_.posted.clear();
    ring_ = ring::HostRing(6, 0);
    groups_[0].reset();
    groups_[1].reset();
    build();
    const uint64_t t = push(c.d);
    EXPECT_EQ(ring::waitCompleted(ring_.view(), t, 10 * kSecond), Status::kConsumerError) << c.why;
    EXPECT_NE(groups_[0]->firstError().find(c.why), std::string::npos) << groups_[0]->firstError();
    EXPECT_EQ(state_.postedCount(), 0u) << c.why;
  }
}

TEST_F(ProxyTest, FailedCompletionIsReportedNamingThePeer) {
  build();
  const uint64_t t = push(ring::makeWrite(1, 0, 0, 1, 0, 64));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 1; }));
  state_.complete(0, /*ok=*/false);
  EXPECT_EQ(ring::waitCompleted(ring_.view(), t, 10 * kSecond), Status::kConsumerError);
  EXPECT_NE(groups_[0]->firstError().find("peer 1"), std::string::npos) << groups_[0]->firstError();
}

TEST_F(ProxyTest, StalledOperationIsReportedNamingThePeer) {
  ProxyConfig c;
  c.timeout_ns = 200 * 1000 * 1000;
  build(c);
  const uint64_t t = push(ring::makeWrite(1, 0, 0, 1, 0, 64));  // never completed by the held transport
  EXPECT_EQ(ring::waitCompleted(ring_.view(), t, 10 * kSecond), Status::kConsumerError);
  EXPECT_NE(groups_[0]->firstError().find("to rank 1 did not complete"), std::string::npos)
      << groups_[0]->firstError();
}

// enable_shrink: rank 1 is lost; rank 0's writes to itself (the live peer here) must retire past it, with no error.
ProxyConfig shrinkConfig(uint64_t timeout_ns) {
  ProxyConfig c;
  c.enable_shrink = true;
  c.timeout_ns = timeout_ns;
  return c;
}

TEST_F(ProxyTest, ShrinkFailedCompletionDeclaresThePeerDeadWithoutAnError) {
  build(shrinkConfig(100 * kSecond));
  push(ring::makeWrite(1, 0, 0, 1, 0, 64));
  push(ring::makeWrite(0, 0, 0, 1, 64, 64));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 2; }));
  state_.complete(0, /*ok=*/false);
  state_.complete(1);
  ASSERT_TRUE(waitUntil([&] { return completed() == 2; }));
  EXPECT_FALSE(groups_[0]->hasError()) << groups_[0]->firstError();
  EXPECT_EQ(groups_[0]->deadPeers(), std::vector<int>{1});
  // Later operations to the dead peer complete without being posted; those to the live one are posted.
  push(ring::makeWrite(1, 0, 0, 1, 0, 64));
  push(ring::makeSignal(1, 0, 1));
  const uint64_t t = push(ring::makeWrite(0, 0, 0, 1, 128, 64));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 3; }));
  EXPECT_EQ(state_.posted[2].peer, 0u);
  state_.complete(2);
  EXPECT_EQ(ring::waitCompleted(ring_.view(), t, kSecond), Status::kOk);
  EXPECT_EQ(state_.postedCount(), 3u) << "an operation to the dead peer was posted";
  EXPECT_FALSE(groups_[0]->hasError()) << groups_[0]->firstError();
}

// A failed incoming operation names no source: with enable_shrink it is put on a peer whose process is gone (that
// peer is declared dead, no error); with none gone, or without enable_shrink, it is the proxy's error.
TEST_F(ProxyTest, ShrinkFailedIncomingOperationIsPutOnTheGonePeer) {
  build(shrinkConfig(100 * kSecond));
  {
    std::lock_guard<std::mutex> g(state_.mu);
    state_.gone_peer = 1;
  }
  state_.remoteFailure();
  ASSERT_TRUE(waitUntil([&] { return !groups_[0]->deadPeers().empty() || groups_[0]->hasError(); }));
  EXPECT_FALSE(groups_[0]->hasError()) << groups_[0]->firstError();
  EXPECT_EQ(groups_[0]->deadPeers(), std::vector<int>{1});
}

// The failure can come before its source is seen gone (a killed process is torn down after its copy fails): a peer
// gone 100 ms later still takes it.
TEST_F(ProxyTest, ShrinkFailedIncomingOperationIsPutOnAPeerGoneJustAfterIt) {
  build(shrinkConfig(100 * kSecond));
  state_.remoteFailure();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(groups_[0]->hasError()) << "failed before the grace ended: " << groups_[0]->firstError();
  {
    std::lock_guard<std::mutex> g(state_.mu);
    state_.gone_peer = 1;
  }
  ASSERT_TRUE(waitUntil([&] { return !groups_[0]->deadPeers().empty() || groups_[0]->hasError(); }));
  EXPECT_FALSE(groups_[0]->hasError()) << groups_[0]->firstError();
  EXPECT_EQ(groups_[0]->deadPeers(), std::vector<int>{1});
}

TEST_F(ProxyTest, FailedIncomingOperationWithNoGonePeerIsAnError) {
  build(shrinkConfig(100 * kSecond));
  state_.remoteFailure();
  ASSERT_TRUE(waitUntil([&] { return groups_[0]->hasError(); }));
  EXPECT_TRUE(groups_[0]->deadPeers().empty());
  EXPECT_NE(groups_[0]->firstError().find("failed operation"), std::string::npos) << groups_[0]->firstError();
}

TEST_F(ProxyTest, ShrinkGonePeerIsDeclaredDeadLongBeforeTheTimeout) {
  build(shrinkConfig(20 * kSecond));
  push(ring::makeWrite(1, 0, 0, 1, 0, 64));  // never completed: the peer is gone
  const uint64_t t = push(ring::makeWrite(0, 0, 0, 1, 64, 64));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 2; }));
  state_.complete(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(completed(), 0u) << "a peer that is only slow was dropped";
  EXPECT_TRUE(groups_[0]->deadPeers().empty());
  const auto start = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> g(state_.mu);
    state_.gone_peer = 1;
  }
  EXPECT_EQ(ring::waitCompleted(ring_.view(), t, 5 * kSecond), Status::kOk);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(groups_[0]->deadPeers(), std::vector<int>{1});
  state_.complete(0);  // a late completion of the forgotten write is dropped, not a duplicate
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(groups_[0]->hasError()) << groups_[0]->firstError();
}

TEST_F(ProxyTest, ShrinkStalledPeerIsDeclaredDeadAtHalfTheTimeout) {
  build(shrinkConfig(kSecond));
  push(ring::makeWrite(1, 0, 0, 1, 0, 64));  // never completed, the peer's process not known to be gone
  const uint64_t t = push(ring::makeWrite(0, 0, 0, 1, 64, 64));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 2; }));
  state_.complete(1);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(ring::waitCompleted(ring_.view(), t, 5 * kSecond), Status::kOk);
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GT(waited, std::chrono::milliseconds(400));
  EXPECT_LT(waited, std::chrono::milliseconds(900)) << "not before the timeout";
  EXPECT_EQ(groups_[0]->deadPeers(), std::vector<int>{1});
  EXPECT_FALSE(groups_[0]->hasError()) << groups_[0]->firstError();
}

TEST_F(ProxyTest, SelectiveSignallingWithCumulativeCompletions) {
  state_.caps |= transport::kCumulativeCompletions;
  build();
  for (int i = 0; i < 40; ++i) push(ring::makeWrite(1, 0, 0, 1, 0, 64));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 40; }));
  size_t first = 0;
  for (size_t n : state_.post_sizes) {
    for (size_t i = first; i < first + n; ++i) {
      EXPECT_EQ(state_.posted[i].signaled, i + 1 == first + n) << "request " << i << " of a post of " << n;
    }
    first += n;
  }
  EXPECT_LT(state_.post_sizes.size(), 40u) << "no chain was ever longer than one request";
  state_.complete(39);  // the last request's completion covers all earlier ones to that peer
  ASSERT_TRUE(waitUntil([&] { return completed() == 40; }));
}

TEST_F(ProxyTest, PartialPostsKeepOrder) {
  state_.accept_per_post = 3;
  build();
  for (int i = 0; i < 10; ++i) push(ring::makeWrite(1, 0, 16 * i, 1, 0, 16));
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 10; }));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(state_.posted[i].local_offset, 16u * i);
}

TEST(ProxyConfigTest, MismatchedThreadCountsAreRefused) {
  HeldState s;
  auto factory = [&](const transport::TransportOptions&) { return std::make_unique<HeldTransport>(&s); };
  ProxyConfig a;
  a.world = 2;
  a.num_threads = 2;
  a.transport_factory = factory;
  ProxyConfig b = a;
  b.rank = 1;
  b.num_threads = 3;
  ProxyGroup ga(a), gb(b);
  EXPECT_THROW(ga.connect({ga.localInfo(), gb.localInfo()}), Error);
}

TEST(ProxyRegions, ARegionAddedAgainReplacesTheEarlierOne) {
  HeldState s;
  ProxyConfig c;
  c.num_threads = 1;
  c.transport_factory = [&](const transport::TransportOptions&) { return std::make_unique<HeldTransport>(&s); };
  ProxyGroup g(c);
  alignas(16) static uint8_t first[256], second[512];
  g.addRegion(0, first, sizeof(first), transport::MemoryKind::kHost);
  g.addRegion(0, second, sizeof(second), transport::MemoryKind::kHost);  // as a runtime falling back to host memory
  EXPECT_EQ(s.deregistered, std::vector<uint32_t>{0}) << "the first registration was not released";
  ring::HostRing r(4, 0);
  g.addRing(r.view(), RingKind::kNormal);
  g.connect({g.localInfo()});
  g.start();
  ring::push(r.view(), ring::makeWrite(0, 0, 0, 0, 0, 512), kSecond);
  ASSERT_TRUE(waitUntil([&] { return s.postedCount() == 1; }));
  EXPECT_EQ(s.posted[0].remote.addr, reinterpret_cast<uint64_t>(second));
  EXPECT_EQ(s.posted[0].remote.size, sizeof(second));
  EXPECT_EQ(s.posted[0].local_mem, 1u);
  g.stop();
}

TEST(Numa, PinsToTheNodesCpus) {
  // Every Linux host has node 0 (NUMA or not); run in a thread of its own to leave the test runner unpinned.
  std::thread([] {
    ASSERT_TRUE(pinToNumaNode(0));
    cpu_set_t set;
    ASSERT_EQ(pthread_getaffinity_np(pthread_self(), sizeof(set), &set), 0);
    EXPECT_GT(CPU_COUNT(&set), 0);
    EXPECT_FALSE(pinToNumaNode(4095)) << "a node that does not exist";
  }).join();
}

TEST(Numa, NodeOfPciDeviceComesFromSysfs) {
  EXPECT_EQ(numaNodeOfPciDevice("0000:ff:1f.7"), -1) << "a device that does not exist";
  DIR* dir = opendir("/sys/bus/pci/devices");
  ASSERT_NE(dir, nullptr);
  int checked = 0;
  while (dirent* e = readdir(dir)) {
    const std::string id = e->d_name;
    if (id[0] == '.') continue;
    std::ifstream f("/sys/bus/pci/devices/" + id + "/numa_node");
    int want = -1;
    if (!(f >> want)) continue;
    std::string upper = id;
    for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    EXPECT_EQ(numaNodeOfPciDevice(id), want) << id;
    EXPECT_EQ(numaNodeOfPciDevice("0000" + upper), want) << "CUDA's 8-digit, upper-case spelling of " << id;
    ++checked;
  }
  closedir(dir);
  EXPECT_GT(checked, 0) << "no PCI device in sysfs to check against";
}

}  // namespace
}  // namespace uccl::ep::proxy
