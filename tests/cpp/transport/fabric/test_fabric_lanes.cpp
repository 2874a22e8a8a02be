// A peer that stops answering (dead, or never progressing) holds back only the operations to it: the completions of
// operations posted after it to live peers still arrive. On shm this needs one endpoint per peer (the transport's
// lanes, fabric_transport.hpp): with one endpoint, shm reports completions in order and the first one waiting for a
// silent peer held back every later one.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "transport/backends.hpp"

namespace uccl::ep::transport {
namespace {

constexpr int kWorld = 3;
constexpr int kSilent = 2;  // never polled: its provider never answers anything

std::vector<std::unique_ptr<Transport>> connectedRanks(const std::string& provider) {
  std::vector<std::unique_ptr<Transport>> t;
  std::vector<Blob> addrs;
  for (int r = 0; r < kWorld; ++r) {
    TransportOptions o;
    o.kind = provider;
    o.rank = r;
    o.world = kWorld;
    o.all_peers_local = true;
    t.push_back(createFabricTransport(o, provider));
    addrs.push_back(t.back()->address());
  }
  for (auto& x : t) x->connect(addrs);
  return t;
}

WorkRequest write(uint32_t peer, const LocalMemory& src, const LocalMemory& dst, size_t len, uint64_t id) {
  WorkRequest wr;
  wr.kind = OpKind::kWrite;
  wr.peer = peer;
  wr.local_mem = src.id;
  wr.length = len;
  wr.remote = decodeRemote(encodeRemote(dst.remote));
  wr.wr_id = id;
  return wr;
}

class FabricLanes : public ::testing::TestWithParam<std::string> {};

TEST_P(FabricLanes, ASilentPeerHoldsBackNoCompletionToALiveOne) {
  if (!fabricProviderAvailable(GetParam())) GTEST_SKIP() << "libfabric provider " << GetParam() << " absent";
  auto t = connectedRanks(GetParam());
  // Above shm's inject size, so that the write waits for its target's answer (as one with delivery complete does).
  constexpr size_t kBytes = 64 * 1024;
  std::vector<std::vector<uint8_t>> mem(kWorld, std::vector<uint8_t>(kBytes, 0));
  for (size_t i = 0; i < kBytes; ++i) mem[0][i] = static_cast<uint8_t>(i * 7 + 1);
  std::vector<LocalMemory> m;
  for (int r = 0; r < kWorld; ++r) m.push_back(t[r]->registerMemory(mem[r].data(), kBytes, MemoryKind::kHost));

  // First every rank answers: rank 0 reaches both peers once (connections and peer mappings made, as in a job whose
  // peer dies later). Then rank kSilent stops answering, and rank 0 writes to it, then to rank 1.
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  const auto run = [&](const std::vector<WorkRequest>& wrs, int answering, uint64_t wanted) {
    size_t posted = 0;
    bool done = false;
    while (!done && std::chrono::steady_clock::now() < end) {
      if (posted < wrs.size()) posted += t[0]->post(wrs.data() + posted, wrs.size() - posted);
      Completion c[8];
      const size_t n = t[0]->poll(c, 8);
      for (size_t i = 0; i < n; ++i) {
        EXPECT_TRUE(c[i].ok) << t[0]->describe(c[i]);
        done |= c[i].kind == Completion::Kind::kLocal && c[i].wr_id == wanted;
      }
      for (int r = 1; r < answering; ++r) (void)t[r]->poll(c, 8);
    }
    return done;
  };
  ASSERT_TRUE(run({write(kSilent, m[0], m[kSilent], kBytes, 1), write(1, m[0], m[1], kBytes, 2)}, kWorld, 2) &&
              run({write(kSilent, m[0], m[kSilent], kBytes, 3)}, kWorld, 3))
      << GetParam() << ": the writes with every rank answering did not complete";
  const bool live_done = run({write(kSilent, m[0], m[kSilent], kBytes, 4), write(1, m[0], m[1], kBytes, 5)}, 2, 5);
  EXPECT_TRUE(live_done) << GetParam() << ": the write to live rank 1 did not complete while rank " << kSilent
                         << " stayed silent";
  EXPECT_EQ(mem[1], mem[0]) << "the live peer's bytes";
}

// shm: one name per peer in the address (one endpoint each), all of one length; other providers keep one.
TEST_P(FabricLanes, ShmAddressesNameOneEndpointPerRank) {
  if (!fabricProviderAvailable(GetParam())) GTEST_SKIP() << "libfabric provider " << GetParam() << " absent";
  TransportOptions o;
  o.kind = GetParam();
  o.world = 1;
  o.all_peers_local = true;
  const size_t one = createFabricTransport(o, GetParam())->address().size();
  auto t = connectedRanks(GetParam());
  EXPECT_EQ(t[0]->address().size(), GetParam() == "shm" ? kWorld * one : one);
}

INSTANTIATE_TEST_SUITE_P(Providers, FabricLanes, ::testing::Values("tcp", "shm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace uccl::ep::transport
