// The libfabric transport over tcp;ofi_rxm and shm: two Transport objects in one process (rank 0 and rank 1 of a
// world of 2) plus a rank writing into its own memory. Every wait polls both sides (rxm and shm progress only
// when polled) and fails with a message after a deadline.
#include <gtest/gtest.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include <algorithm>
#include <thread>
#include <atomic>
#include <chrono>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <tuple>
#include <random>
#include <vector>

#include "transport/backends.hpp"
#include "transport/fabric/fabric_info.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kDeadline = std::chrono::seconds(20);

class FabricTransportTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!fabricProviderAvailable(GetParam())) GTEST_SKIP() << "libfabric provider " << GetParam() << " absent";
    std::vector<Blob> addrs;
    for (int r = 0; r < 2; ++r) {
      TransportOptions o;
      o.kind = GetParam();
      o.rank = r;
      o.world = 2;
      o.all_peers_local = true;
      o.timeout_ns = 10'000'000'000ull;
      t_[r] = createFabricTransport(o, GetParam());
      addrs.push_back(t_[r]->address());
    }
    for (auto& t : t_) t->connect(addrs);
  }

  // Polls both ranks into local_/remote_ until `done` holds; fails the test naming `what` after the deadline.
  bool waitFor(const std::function<bool()>& done, const std::string& what) {
    const auto end = Clock::now() + kDeadline;
    while (!done()) {
      pollOnce();
      if (Clock::now() > end) {
        ADD_FAILURE() << GetParam() << ": timed out waiting for " << what;
        return false;
      }
    }
    return true;
  }
  void pollOnce() {
    Completion c[16];
    for (int r = 0; r < 2; ++r) {
      const size_t n = t_[r]->poll(c, 16);
      for (size_t i = 0; i < n; ++i) {
        (c[i].kind == Completion::Kind::kLocal ? local_[r] : remote_[r]).push_back(c[i]);
      }
    }
  }
  bool hasLocal(int rank, uint64_t wr_id) const {
    for (const Completion& c : local_[rank])
      if (c.wr_id == wr_id) return true;
    return false;
  }
  // Posts one request, retrying while the queue is full, and waits for its local completion.
  Completion runOne(int rank, const WorkRequest& wr) {
    const auto end = Clock::now() + kDeadline;
    while (t_[rank]->post(&wr, 1) == 0) {
      pollOnce();
      if (Clock::now() > end) {
        ADD_FAILURE() << GetParam() << ": post never accepted wr_id " << wr.wr_id;
        return Completion{};
      }
    }
    waitFor([&] { return hasLocal(rank, wr.wr_id); }, "local completion of wr_id " + std::to_string(wr.wr_id));
    for (const Completion& c : local_[rank])
      if (c.wr_id == wr.wr_id) return c;
    return Completion{};
  }
  static WorkRequest write(uint32_t peer, const LocalMemory& src, const LocalMemory& dst, size_t len, uint64_t id) {
    WorkRequest wr;
    wr.kind = OpKind::kWrite;
    wr.peer = peer;
    wr.local_mem = src.id;
    wr.length = len;
    wr.remote = decodeRemote(encodeRemote(dst.remote));  // what a peer would get through the bootstrap
    wr.wr_id = id;
    return wr;
  }

  std::unique_ptr<Transport> t_[2];
  std::vector<Completion> local_[2], remote_[2];
};

TEST_P(FabricTransportTest, ReportsCapabilities) {
  const uint32_t caps = t_[0]->capabilities();
  EXPECT_NE(t_[0]->name().find("fabric/"), std::string::npos);
  EXPECT_TRUE(caps & kRemoteCqData) << t_[0]->name();
  EXPECT_EQ(t_[0]->immediateBytes(), 8u);
  // Both providers run FI_SUM on FI_INT64 (rxm emulates it over tcp messages, shm in the target's progress).
  EXPECT_TRUE(caps & kNativeAtomics) << t_[0]->name();
  // rxm refuses FI_ORDER_WAW together with FI_ATOMIC (it grants only RMA-only and atomic-only orders, and
  // max_order_waw_size 0); shm grants WAW, RMA_WAW and ATOMIC_WAW for any size when asked.
  EXPECT_EQ((caps & kOrderedDelivery) != 0, GetParam() == "shm") << t_[0]->name();
  EXPECT_FALSE(caps & kGpuMemory);
}

TEST_P(FabricTransportTest, RegistrationBlobRoundTrip) {
  std::vector<uint8_t> buf(8192);
  const LocalMemory m = t_[1]->registerMemory(buf.data(), buf.size(), MemoryKind::kHost);
  EXPECT_EQ(m.base, buf.data());
  EXPECT_EQ(m.size, buf.size());
  EXPECT_EQ(m.remote.size, buf.size());
  EXPECT_TRUE(m.remote.addr == 0 || m.remote.addr == reinterpret_cast<uint64_t>(buf.data()));
  const RemoteMemory back = decodeRemote(encodeRemote(m.remote));
  EXPECT_EQ(back.addr, m.remote.addr);
  EXPECT_EQ(back.key, m.remote.key);
  EXPECT_EQ(back.size, m.remote.size);
  std::vector<uint8_t> other(4096);
  const LocalMemory m2 = t_[1]->registerMemory(other.data(), other.size(), MemoryKind::kHost);
  EXPECT_NE(m2.id, m.id);
  EXPECT_NE(m2.remote.key, m.remote.key);
  t_[1]->deregisterMemory(m.id);
  EXPECT_THROW(t_[1]->deregisterMemory(m.id), Error);
  EXPECT_THROW(t_[1]->registerMemory(buf.data(), buf.size(), MemoryKind::kDevice), Error);
}

// Keys are the only thing that names a region to a peer: they must not be guessable from one another (they counted
// up from 1). Random 64-bit keys: eight of them all below 2^32, or any two consecutive, has odds below 2^-250.
TEST_P(FabricTransportTest, RegionKeysAreRandomNotCounted) {
  std::vector<std::vector<uint8_t>> bufs(8, std::vector<uint8_t>(4096));
  std::vector<uint64_t> keys;
  for (auto& b : bufs) keys.push_back(t_[1]->registerMemory(b.data(), b.size(), MemoryKind::kHost).remote.key);
  bool all_small = true;
  for (size_t i = 0; i < keys.size(); ++i) {
    all_small = all_small && keys[i] < (uint64_t{1} << 32);
    for (size_t j = 0; j < keys.size(); ++j) {
      if (i != j) EXPECT_GT(keys[i] > keys[j] ? keys[i] - keys[j] : keys[j] - keys[i], 1u) << i << " " << j;
    }
  }
  EXPECT_FALSE(all_small) << "keys look counted, not drawn";
}

TEST_P(FabricTransportTest, WritesOfEverySizeArriveByteForByte) {
  constexpr size_t kMax = 1 << 20;
  std::vector<uint8_t> src(kMax), dst(kMax), self(kMax);
  const LocalMemory s = t_[0]->registerMemory(src.data(), kMax, MemoryKind::kHost);
  const LocalMemory d = t_[1]->registerMemory(dst.data(), kMax, MemoryKind::kHost);
  const LocalMemory me = t_[0]->registerMemory(self.data(), kMax, MemoryKind::kHost);
  uint64_t id = 1;
  for (size_t len = 4096; len <= kMax; len *= 4) {
    for (size_t i = 0; i < len; ++i) src[i] = static_cast<uint8_t>((i * 131 + len) >> 3);
    std::fill(dst.begin(), dst.end(), 0);
    std::fill(self.begin(), self.end(), 0);
    for (const auto& [peer, target, bytes] : {std::tuple{1u, d, &dst}, std::tuple{0u, me, &self}}) {
      const Completion c = runOne(0, write(peer, s, target, len, id++));
      ASSERT_TRUE(c.ok) << t_[0]->describe(c);
      EXPECT_EQ(c.peer, peer);
      // Delivery complete: the local completion means the bytes are at the target.
      const auto mism = std::mismatch(src.begin(), src.begin() + len, bytes->begin());
      ASSERT_EQ(mism.first, src.begin() + len)
          << len << "-byte write to rank " << peer << " differs at byte " << (mism.first - src.begin());
      EXPECT_EQ((*bytes)[len], 0) << "write of " << len << " bytes ran past its end";
    }
  }
  EXPECT_TRUE(remote_[0].empty() && remote_[1].empty()) << "plain writes must not raise kRemoteData";
}

TEST_P(FabricTransportTest, WriteWithImmArrivesAfterItsData) {
  constexpr size_t kLen = 256 << 10;
  std::vector<uint8_t> src(kLen, 0x5a), dst(kLen, 0);
  const LocalMemory s = t_[0]->registerMemory(src.data(), kLen, MemoryKind::kHost);
  const LocalMemory d = t_[1]->registerMemory(dst.data(), kLen, MemoryKind::kHost);
  for (uint64_t round = 0; round < 8; ++round) {
    std::fill(dst.begin(), dst.end(), 0);
    std::fill(src.begin(), src.end(), static_cast<uint8_t>(round + 1));
    WorkRequest wr = write(1, s, d, kLen, 100 + round);
    wr.kind = OpKind::kWriteImm;
    wr.imm = 0xfedcba9876543210ull ^ round;
    // The first post to a peer may meet -FI_EAGAIN while the provider connects (post returns 0).
    waitFor([&] { return t_[0]->post(&wr, 1) == 1; }, "the write-with-imm to be accepted");
    // Poll only the target until the immediate shows up (the sender is polled too, for rxm's progress), then
    // check the data before anything else runs.
    bool seen = false;
    const auto end = Clock::now() + kDeadline;
    Completion c[8];
    while (!seen && Clock::now() < end) {
      const size_t n = t_[1]->poll(c, 8);
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(c[i].kind, Completion::Kind::kRemoteData);
        ASSERT_TRUE(c[i].ok) << t_[1]->describe(c[i]);
        EXPECT_EQ(c[i].imm, wr.imm);
        // Both providers grant FI_SOURCE, and fi_cq_readfrom names the writer.
        EXPECT_EQ(c[i].peer, 0u);
        ASSERT_EQ(std::count(dst.begin(), dst.end(), static_cast<uint8_t>(round + 1)), static_cast<long>(kLen))
            << "the immediate arrived before all of its data, round " << round;
        seen = true;
      }
      Completion l[8];
      const size_t m = t_[0]->poll(l, 8);
      local_[0].insert(local_[0].end(), l, l + m);
    }
    ASSERT_TRUE(seen) << GetParam() << ": no kRemoteData for round " << round;
    waitFor([&] { return hasLocal(0, wr.wr_id); }, "local completion of the write-with-imm");
  }
}

TEST_P(FabricTransportTest, ZeroLengthWriteWithImmDeliversTheImmediate) {
  std::vector<uint8_t> src(64), dst(64);
  const LocalMemory s = t_[0]->registerMemory(src.data(), src.size(), MemoryKind::kHost);
  const LocalMemory d1 = t_[1]->registerMemory(dst.data(), dst.size(), MemoryKind::kHost);
  std::vector<uint8_t> own(64);
  const LocalMemory d0 = t_[0]->registerMemory(own.data(), own.size(), MemoryKind::kHost);
  for (uint32_t peer : {1u, 0u}) {  // to the other rank and to itself
    WorkRequest wr = write(peer, s, peer == 1 ? d1 : d0, 0, 200 + peer);
    wr.kind = OpKind::kWriteImm;
    wr.imm = 0x1234 + peer;
    wr.local_mem = 9999;  // zero length names no local bytes, so no region is looked up
    const Completion c = runOne(0, wr);
    ASSERT_TRUE(c.ok) << t_[0]->describe(c);
    waitFor([&] { return !remote_[peer].empty(); }, "the zero-length immediate at rank " + std::to_string(peer));
    ASSERT_EQ(remote_[peer].size(), 1u);
    EXPECT_EQ(remote_[peer][0].imm, wr.imm);
    EXPECT_EQ(remote_[peer][0].peer, 0u);
  }
}

TEST_P(FabricTransportTest, FetchAddSumsExactly) {
  ASSERT_TRUE(t_[0]->capabilities() & kNativeAtomics) << t_[0]->name();
  alignas(8) int64_t counters[2] = {0, 0};
  const LocalMemory remote = t_[1]->registerMemory(&counters[0], sizeof(int64_t), MemoryKind::kHost);
  const LocalMemory self = t_[0]->registerMemory(&counters[1], sizeof(int64_t), MemoryKind::kHost);
  constexpr int kAdds = 1000;
  std::vector<WorkRequest> wrs;
  for (int i = 0; i < kAdds; ++i) {
    for (uint32_t peer : {1u, 0u}) {
      WorkRequest wr;
      wr.kind = OpKind::kFetchAdd;
      wr.peer = peer;
      wr.remote = peer == 1 ? remote.remote : self.remote;
      wr.imm = static_cast<uint64_t>(i + 1);
      wr.wr_id = 10000 + wrs.size();
      wrs.push_back(wr);
    }
  }
  size_t posted = 0;
  waitFor(
      [&] {
        posted += t_[0]->post(wrs.data() + posted, wrs.size() - posted);
        return posted == wrs.size() && local_[0].size() == wrs.size();
      },
      "2000 fetch-add completions");
  for (const Completion& c : local_[0]) ASSERT_TRUE(c.ok) << t_[0]->describe(c);
  constexpr int64_t kSum = int64_t{kAdds} * (kAdds + 1) / 2;
  EXPECT_EQ(counters[0], kSum) << "remote counter";
  EXPECT_EQ(counters[1], kSum) << "self counter";
}

TEST_P(FabricTransportTest, BackpressureThenEveryRequestCompletesOnce) {
  constexpr size_t kCount = 20000;  // far beyond tx_attr->size (2048 tcp, 1024 shm)
  std::vector<uint8_t> src(64 * 1024), dst(64 * 1024);
  const LocalMemory s = t_[0]->registerMemory(src.data(), src.size(), MemoryKind::kHost);
  const LocalMemory d = t_[1]->registerMemory(dst.data(), dst.size(), MemoryKind::kHost);
  std::vector<WorkRequest> wrs;
  for (size_t i = 0; i < kCount; ++i) {
    WorkRequest wr = write(1, s, d, 64, i);
    wr.local_offset = (i % 1024) * 64;
    wr.remote_offset = wr.local_offset;
    wrs.push_back(wr);
  }
  size_t posted = 0;
  bool shortPost = false;
  waitFor(
      [&] {
        const size_t want = wrs.size() - posted;
        const size_t n = want ? t_[0]->post(wrs.data() + posted, want) : 0;
        shortPost |= n < want;
        posted += n;
        return posted == kCount && local_[0].size() >= kCount;
      },
      "20000 write completions");
  EXPECT_TRUE(shortPost) << "post() never pushed back with " << kCount << " requests";
  ASSERT_EQ(local_[0].size(), kCount);
  std::set<uint64_t> ids;
  for (const Completion& c : local_[0]) {
    ASSERT_TRUE(c.ok) << t_[0]->describe(c);
    EXPECT_TRUE(ids.insert(c.wr_id).second) << "wr_id " << c.wr_id << " completed twice";
  }
  EXPECT_EQ(ids.size(), kCount);
}

TEST_P(FabricTransportTest, UnsignaledRequestsAreNotReported) {
  std::vector<uint8_t> src(4096, 7), dst(4096);
  const LocalMemory s = t_[0]->registerMemory(src.data(), src.size(), MemoryKind::kHost);
  const LocalMemory d = t_[1]->registerMemory(dst.data(), dst.size(), MemoryKind::kHost);
  std::vector<WorkRequest> wrs;
  for (uint64_t i = 0; i < 64; ++i) {
    WorkRequest wr = write(1, s, d, 64, i);
    wr.remote_offset = wr.local_offset = i * 64;
    wr.signaled = (i % 16 == 15);
    wrs.push_back(wr);
  }
  size_t posted = 0;
  waitFor(
      [&] {
        posted += t_[0]->post(wrs.data() + posted, wrs.size() - posted);
        return posted == wrs.size() && local_[0].size() == 4;
      },
      "the four signaled completions");
  for (int i = 0; i < 100; ++i) pollOnce();
  ASSERT_EQ(local_[0].size(), 4u);
  for (const Completion& c : local_[0]) EXPECT_EQ(c.wr_id % 16, 15u);
  waitFor([&] { return std::count(dst.begin(), dst.end(), 7) == 4096; }, "all unsignaled bytes");
}

TEST_P(FabricTransportTest, BadInputThrowsNamingIt) {
  std::vector<uint8_t> buf(4096);
  const LocalMemory m = t_[0]->registerMemory(buf.data(), buf.size(), MemoryKind::kHost);
  auto message = [&](const WorkRequest& wr) -> std::string {
    try {
      t_[0]->post(&wr, 1);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no exception)";
  };
  WorkRequest wr = write(1, m, m, 64, 1);
  wr.local_mem = 42;
  EXPECT_NE(message(wr).find("local_mem 42"), std::string::npos) << message(wr);
  wr = write(7, m, m, 64, 2);
  EXPECT_NE(message(wr).find("peer 7"), std::string::npos) << message(wr);
  wr = write(1, m, m, 8192, 3);
  EXPECT_NE(message(wr).find("local_mem"), std::string::npos) << message(wr);
  t_[0]->deregisterMemory(m.id);
  wr = write(1, m, m, 64, 4);
  EXPECT_NE(message(wr).find("not registered"), std::string::npos) << message(wr);
  EXPECT_THROW(t_[0]->connect({}), Error);
}

// Writing past the end of the remote key's range (what the proxy's own bounds checks exist to prevent). What the
// providers do in libfabric 1.17, asserted so that a change shows up:
//  - tcp;ofi_rxm: the target rejects it and the initiator gets an error completion (FI_ECANCELED, prov_errno
//    ENOENT); the target then drops the connection, so the next request to that peer fails too (ENOTCONN).
//  - shm: no completion ever arrives and the queue to that peer stays full (post() takes nothing); the target
//    sees nothing either. The proxy's in-flight timeout is what reports it.
// Either way the bytes never land, and the error is fatal for that peer.
TEST_P(FabricTransportTest, OutOfRangeWriteFailsAndIsFatalForThePeer) {
  // What the providers do with a write past the remote key's range: the reason the proxy bounds-checks every
  // descriptor before posting. tcp reports an error completion naming the peer; shm never completes it.
  std::vector<uint8_t> src(8192, 3), dst(4096);
  const LocalMemory s = t_[0]->registerMemory(src.data(), src.size(), MemoryKind::kHost);
  const LocalMemory d = t_[1]->registerMemory(dst.data(), dst.size(), MemoryKind::kHost);
  WorkRequest wr = write(1, s, d, 4096, 77);
  wr.remote_offset = 2048;  // [2048, 6144) of a 4096-byte region
  waitFor([&] { return t_[0]->post(&wr, 1) == 1; }, "the out-of-range write to be accepted");
  const auto end = Clock::now() + std::chrono::seconds(GetParam() == "tcp" ? 20 : 2);
  while (Clock::now() < end && !hasLocal(0, 77)) pollOnce();
  EXPECT_TRUE(remote_[1].empty());
  if (GetParam() == "tcp") {
    ASSERT_TRUE(hasLocal(0, 77)) << "tcp gave no completion for the out-of-range write";
    const Completion& bad = local_[0][0];
    EXPECT_FALSE(bad.ok) << "tcp accepted a write past the remote region";
    EXPECT_EQ(bad.peer, 1u);
    const std::string text = t_[0]->describe(bad);
    EXPECT_NE(text.find("with peer 1"), std::string::npos) << text;
    EXPECT_NE(text.find("fabric/tcp;ofi_rxm"), std::string::npos) << text;
  } else {
    EXPECT_TRUE(local_[0].empty()) << "shm now completes an out-of-range write: " << t_[0]->describe(local_[0][0]);
  }
}

// A peer without the region's key cannot write it over tcp: writes carrying the region's address and size but a
// wrong key (a neighbour of the real key, small counted values, random guesses) complete with an error and change
// nothing; the same write with the real key then lands. (Keys are random 64-bit values, RegionKeysAreRandomNotCounted.)
// tcp only: shm never completes a write the target refuses (OutOfRangeWriteFailsAndIsFatalForThePeer).
class FabricTcpKeyTest : public FabricTransportTest {};

TEST_P(FabricTcpKeyTest, AWriteWithoutTheRegionsKeyChangesNothing) {
  std::vector<uint8_t> src(4096, 0xee), dst(4096, 0x11);
  const LocalMemory s = t_[0]->registerMemory(src.data(), src.size(), MemoryKind::kHost);
  const LocalMemory d = t_[1]->registerMemory(dst.data(), dst.size(), MemoryKind::kHost);
  std::mt19937_64 guess(12345);
  std::vector<uint64_t> keys = {d.remote.key ^ 1, d.remote.key + 1, 0, 1, 2, 3, 4, 5};
  for (int i = 0; i < 8; ++i) keys.push_back(guess());
  uint64_t id = 100;
  for (uint64_t key : keys) {
    if (key == d.remote.key) continue;
    WorkRequest wr = write(1, s, d, src.size(), ++id);
    wr.remote.key = key;
    const Completion c = runOne(0, wr);
    EXPECT_FALSE(c.ok) << "a write with key " << key << " (the region's is " << d.remote.key << ") succeeded";
    EXPECT_TRUE(std::all_of(dst.begin(), dst.end(), [](uint8_t v) { return v == 0x11; }))
        << "a write with key " << key << " changed the region";
  }
  EXPECT_TRUE(remote_[1].empty()) << "the refused writes raised completions at the target";
}

// A process outside the job, with its own libfabric tcp endpoint: it has learnt rank 1's endpoint address, and even
// the region's address and key. Its RMA read must still fail: regions are registered for remote write only.
struct Stranger {
  fi_info* info = nullptr;
  fid_fabric* fabric = nullptr;
  fid_domain* domain = nullptr;
  fid_av* av = nullptr;
  fid_cq* cq = nullptr;
  fid_ep* ep = nullptr;
  fid_mr* mr = nullptr;
  ~Stranger() {
    for (fid* f : {mr ? &mr->fid : nullptr, ep ? &ep->fid : nullptr, cq ? &cq->fid : nullptr,
                   av ? &av->fid : nullptr, domain ? &domain->fid : nullptr, fabric ? &fabric->fid : nullptr}) {
      if (f != nullptr) fi_close(f);
    }
    if (info != nullptr) fi_freeinfo(info);
  }
  // Reads `len` bytes of (addr, key) at the peer with endpoint address `peer` into `into`; the completion's error
  // (0 when the read succeeded, -FI_ETIMEDOUT when nothing completed within 10 s).
  int read(const Blob& peer, uint64_t addr, uint64_t key, void* into, size_t len) {
    fi_info* hints = fi_allocinfo();
    hints->fabric_attr->prov_name = strdup("tcp;ofi_rxm");
    hints->ep_attr->type = FI_EP_RDM;
    hints->caps = FI_RMA | FI_READ;
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
    EXPECT_EQ(fi_getinfo(FI_VERSION(1, 9), nullptr, nullptr, 0, hints, &info), 0);
    fi_freeinfo(hints);
    if (info == nullptr) return -FI_ENODATA;
    EXPECT_EQ(fi_fabric(info->fabric_attr, &fabric, nullptr), 0);
    EXPECT_EQ(fi_domain(fabric, info, &domain, nullptr), 0);
    fi_av_attr av_attr{};
    av_attr.type = FI_AV_TABLE;
    EXPECT_EQ(fi_av_open(domain, &av_attr, &av, nullptr), 0);
    fi_cq_attr cq_attr{};
    cq_attr.format = FI_CQ_FORMAT_CONTEXT;
    EXPECT_EQ(fi_cq_open(domain, &cq_attr, &cq, nullptr), 0);
    EXPECT_EQ(fi_endpoint(domain, info, &ep, nullptr), 0);
    EXPECT_EQ(fi_ep_bind(ep, &av->fid, 0), 0);
    EXPECT_EQ(fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV), 0);
    EXPECT_EQ(fi_enable(ep), 0);
    fi_addr_t target = FI_ADDR_NOTAVAIL;
    EXPECT_EQ(fi_av_insert(av, peer.data(), 1, &target, 0, nullptr), 1);
    EXPECT_EQ(fi_mr_reg(domain, into, len, FI_READ | FI_WRITE, 0, 0, 0, &mr, nullptr), 0);
    if (mr == nullptr) return -FI_ENOMEM;
    static fi_context2 ctx;
    ssize_t rc;
    const auto end = Clock::now() + std::chrono::seconds(10);
    while ((rc = fi_read(ep, into, len, fi_mr_desc(mr), target, addr, key, &ctx)) == -FI_EAGAIN) {
      fi_cq_entry e;
      fi_cq_read(cq, &e, 1);
      if (Clock::now() > end) return -FI_ETIMEDOUT;
    }
    if (rc != 0) return static_cast<int>(rc);
    while (Clock::now() < end) {
      fi_cq_entry e;
      const ssize_t n = fi_cq_read(cq, &e, 1);
      if (n == 1) return 0;
      if (n == -FI_EAVAIL) {
        fi_cq_err_entry err{};
        fi_cq_readerr(cq, &err, 0);
        return err.err != 0 ? -err.err : -FI_EIO;
      }
    }
    return -FI_ETIMEDOUT;
  }
};

TEST_P(FabricTcpKeyTest, AStrangerWithTheAddressAndTheKeyStillCannotReadARegion) {
  std::vector<uint8_t> secret(4096, 0x5a), stolen(4096, 0);
  const LocalMemory d = t_[1]->registerMemory(secret.data(), secret.size(), MemoryKind::kHost);
  const Blob victim = t_[1]->address();
  std::atomic<bool> done{false};
  std::thread progress([&] {  // rank 1 progresses only when polled
    while (!done) pollOnce();
  });
  Stranger stranger;
  const int rc = stranger.read(victim, d.remote.addr, d.remote.key, stolen.data(), stolen.size());
  done = true;
  progress.join();
  EXPECT_NE(rc, 0) << "a process outside the job read a region registered without remote read";
  EXPECT_TRUE(std::all_of(stolen.begin(), stolen.end(), [](uint8_t v) { return v == 0; }))
      << "bytes of the region reached the stranger";
}

// tcp domain choice: UCCL_SOCKET_IFNAME wins; an unknown interface is an error naming it.
TEST(FabricTcpDomain, IfnameSelectsTheDomainAndUnknownOnesThrow) {
  if (!fabricProviderAvailable("tcp")) GTEST_SKIP() << "tcp provider absent";
  TransportOptions o;
  o.world = 1;
  o.ifname = "lo";
  EXPECT_EQ(createFabricTransport(o, "tcp")->name(), "fabric/tcp;ofi_rxm:lo");
  o.ifname = "nosuchif0";
  try {
    createFabricTransport(o, "tcp");
    ADD_FAILURE() << "an unknown ifname was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nosuchif0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(createFabricTransport(o, "nosuchprovider"), Error);
  EXPECT_FALSE(fabricProviderAvailable("nosuchprovider"));
}

// Without ifname, ranks spread over hosts must not get loopback (it cannot reach another host).
TEST(FabricTcpDomain, RemotePeersNeverGetLoopback) {
  if (!fabricProviderAvailable("tcp")) GTEST_SKIP() << "tcp provider absent";
  TransportOptions o;
  o.world = 1;
  o.all_peers_local = true;
  EXPECT_EQ(createFabricTransport(o, "tcp")->name(), "fabric/tcp;ofi_rxm:lo");
  o.all_peers_local = false;
  try {
    EXPECT_NE(createFabricTransport(o, "tcp")->name(), "fabric/tcp;ofi_rxm:lo");
  } catch (const Error& e) {  // a host with loopback only: the error lists what exists
    EXPECT_NE(std::string(e.what()).find("lo("), std::string::npos) << e.what();
  }
}

// A process killed before closing its shm endpoint leaves /dev/shm/<name> behind, recording its pid as owner; a
// later process with the same pid used to fail fi_enable with EBUSY when it picked the same default name
// <pid>:<uid>:<n>. Here the stale files are copies of a live region (owner = this pid) under every default name
// this process could pick: opening more endpoints must still work, and addresses keep one length.
TEST(FabricShmNames, FilesLeftUnderThisPidsDefaultNamesDoNotBlockOpening) {
  if (!fabricProviderAvailable("shm")) GTEST_SKIP() << "shm provider absent";
  TransportOptions o;
  o.world = 1;
  o.all_peers_local = true;
  std::unique_ptr<Transport> first = createFabricTransport(o, "shm");
  const Blob a = first->address();
  const std::string own(reinterpret_cast<const char*>(a.data()));
  ASSERT_EQ(own.rfind("fi_shm://", 0), std::string::npos) << own;
  std::vector<std::string> planted;
  for (int n = 0; n < 8; ++n) {
    const std::string name = std::to_string(getpid()) + ":" + std::to_string(getuid()) + ":" + std::to_string(n);
    if (name == own) continue;
    const std::string cmd = "cp /dev/shm/" + own + " '/dev/shm/" + name + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    planted.push_back("/dev/shm/" + name);
  }
  std::vector<std::unique_ptr<Transport>> more;
  std::string error;
  try {
    for (int i = 0; i < 4; ++i) more.push_back(createFabricTransport(o, "shm"));
  } catch (const Error& e) {
    error = e.what();
  }
  for (const std::string& f : planted) std::remove(f.c_str());
  ASSERT_EQ(error, "");
  for (const auto& t : more) EXPECT_EQ(t->address().size(), a.size());
}

// A rank killed before closing its shm endpoints leaves its regions in /dev/shm. The next shm transport of this user
// removes those of dead pids, and only those: a live pid's region, another name, a directory stay.
TEST(FabricShmNames, RegionsOfDeadProcessesAreRemovedAndNoOthers) {
  char dir_template[] = "/tmp/uccl-ep-shm-sweep-XXXXXX";
  const char* dir = ::mkdtemp(dir_template);
  ASSERT_NE(dir, nullptr);
  const pid_t dead = ::fork();
  if (dead == 0) _exit(0);
  ASSERT_GT(dead, 0);
  ::waitpid(dead, nullptr, 0);  // reaped: the pid no longer runs
  auto region = [](pid_t pid, const char* tag) {
    char name[64];
    std::snprintf(name, sizeof(name), "uccl_ep_%010d_%s", static_cast<int>(pid), tag);
    return std::string(name);
  };
  const std::string gone = region(dead, "0123456789abcdef");
  const std::vector<std::string> kept = {region(::getpid(), "0123456789abcdef"), region(dead, "0123456789ABCDEF"),
                                         "uccl_ep_short", std::to_string(dead) + ":0:0"};
  for (const std::string& f : kept) std::fclose(std::fopen((std::string(dir) + "/" + f).c_str(), "w"));
  std::fclose(std::fopen((std::string(dir) + "/" + gone).c_str(), "w"));
  const std::string subdir = std::string(dir) + "/" + region(dead, "fedcba9876543210");
  ASSERT_EQ(::mkdir(subdir.c_str(), 0700), 0);

  EXPECT_EQ(fabric::removeStaleShmRegions(dir), 1u);
  EXPECT_NE(::access((std::string(dir) + "/" + gone).c_str(), F_OK), 0) << gone << " should be gone";
  for (const std::string& f : kept) {
    const std::string path = std::string(dir) + "/" + f;
    EXPECT_EQ(::access(path.c_str(), F_OK), 0) << f << " should stay";
    std::remove(path.c_str());
  }
  EXPECT_EQ(::access(subdir.c_str(), F_OK), 0) << "a directory is not a region";
  ::rmdir(subdir.c_str());
  ::rmdir(dir);
}

// The sweep reads the pid from names as setShmName writes them, and from nothing else.
TEST(FabricShmNames, ThePidIsReadFromOurNamesOnly) {
  EXPECT_EQ(fabric::shmNamePid("uccl_ep_0000001234_0123456789abcdef"), 1234);
  EXPECT_EQ(fabric::shmNamePid("uccl_ep_0000001234_0123456789ABCDEF"), 0);
  EXPECT_EQ(fabric::shmNamePid("uccl_ep_000001234_0123456789abcdef0"), 0);
  EXPECT_EQ(fabric::shmNamePid("1234:0:0"), 0);
}

INSTANTIATE_TEST_SUITE_P(Tcp, FabricTcpKeyTest, ::testing::Values("tcp"));
INSTANTIATE_TEST_SUITE_P(Providers, FabricTransportTest, ::testing::Values("tcp", "shm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace uccl::ep::transport
