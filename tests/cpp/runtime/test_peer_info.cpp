// The peer info blob of runtime::Buffer::localInfo(): round trip, and malformed or mismatched input rejected
// with a message naming the rank.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/peer_info.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {
namespace {

PeerInfo sample(int rank) {
  PeerInfo p;
  p.rank = rank;
  p.world = 8;
  p.ranks_per_node = 4;
  p.num_nvl_bytes = 1 << 20;
  p.num_rdma_bytes = int64_t{3} << 30;
  p.hostname = "node-a";
  p.boot_id = "6b1e6f3c-1d2e-4f5a-9b8c-7d6e5f4a3b2c";
  p.pci_bus_id = "0000:1a:00.0";
  p.gpu_ipc_handle = std::string(64, '\0');
  for (int i = 0; i < 64; ++i) p.gpu_ipc_handle[i] = static_cast<char>(i * 7 + rank);
  p.nvl_ipc_handle = std::string(64, '\xff');
  p.uses_proxy = true;
  p.normal_mnnvl = true;
  p.fabric_domain = "cluster:3";
  p.proxy_info = {1, 2, 3, 0, 255};
  return p;
}

// Runs f, expecting uccl::ep::Error whose message holds every one of `parts`.
template <typename F>
void expectError(F&& f, std::initializer_list<const char*> parts) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* part : parts) EXPECT_NE(msg.find(part), std::string::npos) << "'" << part << "' not in: " << msg;
  }
}

TEST(PeerInfo, RoundTrip) {
  const PeerInfo a = sample(5);
  const PeerInfo b = decodePeerInfo(encodePeerInfo(a), 5);
  EXPECT_EQ(b.version, kPeerInfoVersion);
  EXPECT_EQ(b.rank, 5);
  EXPECT_EQ(b.world, 8);
  EXPECT_EQ(b.ranks_per_node, 4);
  EXPECT_EQ(b.num_nvl_bytes, a.num_nvl_bytes);
  EXPECT_EQ(b.num_rdma_bytes, a.num_rdma_bytes);
  EXPECT_EQ(b.hostname, a.hostname);
  EXPECT_EQ(b.boot_id, a.boot_id);
  EXPECT_EQ(b.pci_bus_id, a.pci_bus_id);
  EXPECT_EQ(b.gpu_ipc_handle, a.gpu_ipc_handle);
  EXPECT_EQ(b.nvl_ipc_handle, a.nvl_ipc_handle);
  EXPECT_TRUE(b.uses_proxy);
  EXPECT_EQ(b.normal_mnnvl, a.normal_mnnvl);
  EXPECT_EQ(b.fabric_domain, a.fabric_domain);
  EXPECT_EQ(b.proxy_info, a.proxy_info);
  EXPECT_NO_THROW(checkPeerInfo(b, 5, sample(2)));
}

TEST(PeerInfo, MnnvlSettingMustAgree) {
  PeerInfo other = sample(3);
  other.normal_mnnvl = !sample(2).normal_mnnvl;
  try {
    checkPeerInfo(other, 3, sample(2));
    FAIL() << "a rank with another UCCL_EP_NORMAL_MNNVL setting was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("UCCL_EP_NORMAL_MNNVL"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank 3"), std::string::npos) << e.what();
  }
}

TEST(PeerInfo, OneFabricDomainNeedsTheSameNonEmptyIdEverywhere) {
  std::vector<PeerInfo> infos = {sample(0), sample(1), sample(2)};
  for (PeerInfo& i : infos) i.fabric_domain = "0a1b2c3d4e5f60718293a4b5c6d7e8f9:7";
  EXPECT_TRUE(oneFabricDomain(infos));
  infos[2].fabric_domain = "0a1b2c3d4e5f60718293a4b5c6d7e8f9:8";  // another clique
  EXPECT_FALSE(oneFabricDomain(infos));
  for (PeerInfo& i : infos) i.fabric_domain = "";
  EXPECT_FALSE(oneFabricDomain(infos));  // no fabric: the node layout decides
  EXPECT_FALSE(oneFabricDomain({}));
}

TEST(PeerInfo, RoundTripEmptyFields) {
  PeerInfo a;
  a.rank = 0;
  a.world = 1;
  const PeerInfo b = decodePeerInfo(encodePeerInfo(a), 0);
  EXPECT_TRUE(b.hostname.empty());
  EXPECT_TRUE(b.nvl_ipc_handle.empty());
  EXPECT_TRUE(b.proxy_info.empty());
  EXPECT_FALSE(b.uses_proxy);
}

TEST(PeerInfo, EveryTruncationNamesTheRank) {
  const transport::Blob full = encodePeerInfo(sample(3));
  for (size_t n = 0; n < full.size(); ++n) {
    const transport::Blob cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    expectError([&] { decodePeerInfo(cut, 3); }, {"rank 3", "malformed"});
  }
}

TEST(PeerInfo, TrailingBytes) {
  transport::Blob b = encodePeerInfo(sample(1));
  b.push_back(0);
  expectError([&] { decodePeerInfo(b, 1); }, {"rank 1", "trailing"});
}

TEST(PeerInfo, WrongMagicAndVersion) {
  transport::Blob b = encodePeerInfo(sample(6));
  b[0] ^= 1;
  expectError([&] { decodePeerInfo(b, 6); }, {"rank 6", "tag"});
  PeerInfo v = sample(6);
  v.version = kPeerInfoVersion + 1;
  expectError([&] { decodePeerInfo(encodePeerInfo(v), 6); }, {"rank 6", "version"});
  expectError([&] { decodePeerInfo(transport::Blob{'h', 'i'}, 7); }, {"rank 7"});
}

TEST(PeerInfo, MismatchesNameBothRanks) {
  const PeerInfo self = sample(0);
  PeerInfo p = sample(2);
  expectError([&] { checkPeerInfo(p, 3, self); }, {"index 3", "rank 2"});
  p.world = 16;
  expectError([&] { checkPeerInfo(p, 2, self); }, {"rank 2", "rank 0", "16"});
  p = sample(2);
  p.ranks_per_node = 8;
  expectError([&] { checkPeerInfo(p, 2, self); }, {"rank 2", "ranks per node"});
  p = sample(2);
  p.num_rdma_bytes += 128;
  expectError([&] { checkPeerInfo(p, 2, self); }, {"rank 2", "num_rdma_bytes"});
  p = sample(2);
  p.uses_proxy = false;
  expectError([&] { checkPeerInfo(p, 2, self); }, {"rank 2", "proxies"});
  p = sample(2);
  p.proxy_info.clear();
  expectError([&] { checkPeerInfo(p, 2, self); }, {"rank 2", "proxy info"});
}

TEST(PeerInfo, SameHost) {
  PeerInfo a = sample(0), b = sample(1);
  EXPECT_TRUE(sameHost(a, b));
  b.hostname = "container-b";  // same machine (boot id), another container name
  EXPECT_TRUE(sameHost(a, b));
  b.boot_id = "another-boot";
  EXPECT_FALSE(sameHost(a, b));
  a.boot_id.clear();  // no boot id on one side: host names decide
  EXPECT_FALSE(sameHost(a, b));
  b.hostname = a.hostname;
  EXPECT_TRUE(sameHost(a, b));
  EXPECT_NE(describeHost(a).find("node-a"), std::string::npos);
}

TEST(PeerInfo, NormalPathIsPipelinedOnlyWithOneGpuPerRank) {
  std::vector<PeerInfo> peers = {sample(0), sample(1), sample(2)};
  peers[1].pci_bus_id = "0000:2b:00.0";
  peers[2].pci_bus_id = "0000:3c:00.0";
  NormalPath p = decideNormalPath(peers, "auto");
  EXPECT_TRUE(p.pipelined);
  EXPECT_NE(p.why.find("one GPU per rank"), std::string::npos) << p.why;
  EXPECT_FALSE(decideNormalPath(peers, "staged").pipelined);
  EXPECT_TRUE(decideNormalPath(peers, "pipelined").pipelined);
  // Another host's GPU with the same bus id is another GPU.
  peers[2].pci_bus_id = peers[0].pci_bus_id;
  peers[2].boot_id = "another-boot";
  EXPECT_TRUE(decideNormalPath(peers, "auto").pipelined);
  // Two ranks on one GPU of one host: staged, and a forced pipelined path is refused naming both ranks.
  peers[2].boot_id = peers[0].boot_id;
  p = decideNormalPath(peers, "auto");
  EXPECT_FALSE(p.pipelined);
  EXPECT_NE(p.why.find("ranks 0 and 2 share GPU 0000:1a:00.0"), std::string::npos) << p.why;
  expectError([&] { decideNormalPath(peers, "pipelined"); }, {"UCCL_EP_NORMAL_PATH=pipelined", "ranks 0 and 2"});
}

TEST(PeerInfo, RanksOnAGpuCountSameHostAndBusId) {
  std::vector<PeerInfo> peers = {sample(0), sample(1), sample(2), sample(3)};
  EXPECT_EQ(ranksOnGpu(peers, peers[0]), 4);  // one GPU, one host: all four
  peers[1].pci_bus_id = "0000:2b:00.0";
  peers[3].boot_id = "another-boot";  // same bus id on another host: another GPU
  EXPECT_EQ(ranksOnGpu(peers, peers[0]), 2);
  EXPECT_EQ(ranksOnGpu(peers, peers[1]), 1);
  EXPECT_EQ(ranksOnGpu(peers, peers[3]), 1);
  EXPECT_EQ(ranksOnGpu({}, peers[0]), 1);  // never below one: the rank itself
}

TEST(PeerInfo, LocalIdentity) {
  EXPECT_FALSE(localHostname().empty());
  const std::string id = localBootId();
  if (!id.empty()) {
    EXPECT_EQ(id.find('\n'), std::string::npos);
  }
}

}  // namespace
}  // namespace uccl::ep::runtime
