// Device and port selection (UCCL_IB_HCA), GID selection (RoCEv2 auto-detection, UCCL_IB_GID_INDEX, IB LID),
// and SL/TC in the address handle.
#include <cstdlib>

#include "transport/verbs/device_select.hpp"
#include "verbs_test_util.hpp"

namespace uccl::ep::transport::verbs::testing {
namespace {

TEST(VerbsDevice, UnsetUsesDevicesWithActivePortsRoundRobinByThread) {
  FakeVerbs f;
  f.addDevice("mlx5_0").ports[0].state = IBV_PORT_DOWN;
  f.addDevice("mlx5_1");
  f.addDevice("mlx5_2");
  EXPECT_EQ(make(f, 0, 1, Env{}, 0)->name(), "verbs/mlx5_1:1");
  EXPECT_EQ(make(f, 0, 1, Env{}, 1)->name(), "verbs/mlx5_2:1");
  EXPECT_EQ(make(f, 0, 1, Env{}, 2)->name(), "verbs/mlx5_1:1");
  EXPECT_EQ(f.openContexts(), 0);  // probing closed what it opened; destroyed transports closed theirs
}

TEST(VerbsDevice, HcaNamePicksFirstActivePortOrTheOneAsked) {
  FakeVerbs f;
  FakeDevice& d = f.addDevice("mlx5_0", 2);
  d.ports[0].state = IBV_PORT_DOWN;
  f.addDevice("mlx5_1");
  Env e;
  e.ib_hca = "mlx5_0";
  EXPECT_EQ(make(f, 0, 1, e)->name(), "verbs/mlx5_0:2");
  e.ib_hca = "mlx5_0:2";
  EXPECT_EQ(make(f, 0, 1, e)->name(), "verbs/mlx5_0:2");
  e.ib_hca = "mlx5_0:1";
  const std::string err = errorOf([&] { make(f, 0, 1, e); });
  EXPECT_NE(err.find("mlx5_0 port 1 is DOWN (expected ACTIVE)"), std::string::npos) << err;
  e.ib_hca = "mlx5_0:3";
  EXPECT_NE(errorOf([&] { make(f, 0, 1, e); }).find("mlx5_0 has 2 port(s)"), std::string::npos);
  EXPECT_EQ(f.openContexts(), 0);
}

TEST(VerbsDevice, HcaCommaListRoundRobinByThread) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  f.addDevice("mlx5_1");
  Env e;
  e.ib_hca = "mlx5_1:1,mlx5_0:1";
  EXPECT_EQ(make(f, 0, 1, e, 0)->name(), "verbs/mlx5_1:1");
  EXPECT_EQ(make(f, 0, 1, e, 1)->name(), "verbs/mlx5_0:1");
  EXPECT_EQ(make(f, 0, 1, e, 3)->name(), "verbs/mlx5_0:1");
}

TEST(VerbsDevice, UnknownHcaNameListsTheDevices) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  f.addDevice("mlx5_1");
  Env e;
  e.ib_hca = "mlx5_0,mlx5_9";  // thread 0 would use mlx5_0, but a typo anywhere in the list is an error
  const std::string err = errorOf([&] { make(f, 0, 1, e); });
  EXPECT_NE(err.find("UCCL_IB_HCA names 'mlx5_9'"), std::string::npos) << err;
  EXPECT_NE(err.find("devices: mlx5_0, mlx5_1"), std::string::npos) << err;
}

TEST(VerbsDevice, HcaListParsing) {
  auto l = parseHcaList("=mlx5_0:1,bnxt_re0");
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].name, "mlx5_0");
  EXPECT_EQ(l[0].port, 1);
  EXPECT_EQ(l[1].name, "bnxt_re0");
  EXPECT_EQ(l[1].port, 0);
  EXPECT_THROW(parseHcaList("^mlx5_0"), Error);
  EXPECT_THROW(parseHcaList("mlx5_0:x"), Error);
  EXPECT_THROW(parseHcaList("mlx5_0:0"), Error);
  EXPECT_THROW(parseHcaList("a,,b"), Error);
  EXPECT_THROW(parseHcaList(":1"), Error);
}

TEST(VerbsDevice, EnvironmentVariablesReachTheEnv) {
  setenv("UCCL_IB_HCA", "mlx5_3:1", 1);
  setenv("UCCL_IB_GID_INDEX", "5", 1);
  setenv("UCCL_IB_SL", "2", 1);
  setenv("UCCL_IB_TC", "96", 1);
  const Env e = readEnv();
  unsetenv("UCCL_IB_HCA");
  unsetenv("UCCL_IB_GID_INDEX");
  unsetenv("UCCL_IB_SL");
  unsetenv("UCCL_IB_TC");
  EXPECT_EQ(e.ib_hca, "mlx5_3:1");
  EXPECT_EQ(e.gid_index, 5);
  EXPECT_EQ(e.ib_sl, 2);
  EXPECT_EQ(e.ib_tc, 96);
  EXPECT_EQ(readEnv().ib_hca, "");
  EXPECT_EQ(readEnv().gid_index, -1);
}

TEST(VerbsDevice, AvailabilityFollowsTheDeviceList) {
  FakeVerbs f;
  EXPECT_FALSE(verbsDeviceAvailableWithApi(f.api()));
  f.list_devices_null = true;  // what libibverbs does without kernel support
  EXPECT_FALSE(verbsDeviceAvailableWithApi(f.api()));
  f.list_devices_null = false;
  f.addDevice("mlx5_0");
  EXPECT_TRUE(verbsDeviceAvailableWithApi(f.api()));
}

TEST(VerbsDevice, NoDeviceIsAClearError) {
  FakeVerbs f;
  EXPECT_NE(errorOf([&] { make(f, 0, 1); }).find("no RDMA device found"), std::string::npos);
}

// ---- GID selection -------------------------------------------------------------------------------------------

// Rank 0 and 1 on one fake port with `gids`; returns rank 0's RTR attributes toward rank 1.
ibv_qp_attr rtrWith(FakeVerbs& f, const Env& e) {
  auto a = make(f, 0, 2, e);
  auto b = make(f, 1, 2, e);
  connectAll({a.get(), b.get()});
  const Transition* t = transitionTo(liveQps(f)[1], IBV_QPS_RTR);  // a's QP for peer 1
  EXPECT_NE(t, nullptr);
  return t ? t->attr : ibv_qp_attr{};
}

const std::vector<uint8_t> kLinkLocal = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, 0x55};
const std::vector<uint8_t> kGlobal6 = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07};

TEST(VerbsGid, AutoDetectPrefersIpv4MappedRoceV2) {
  FakeVerbs f;
  FakePort& p = f.addDevice("mlx5_0").ports[0];
  p.gids.clear();
  p.gids[0] = FakeVerbs::gidEntry(0, IBV_GID_TYPE_ROCE_V1, kLinkLocal);
  p.gids[1] = FakeVerbs::gidEntry(1, IBV_GID_TYPE_ROCE_V2, kLinkLocal);
  p.gids[2] = FakeVerbs::ipv4Gid(2, IBV_GID_TYPE_ROCE_V1, 10, 1, 2, 3);
  p.gids[4] = FakeVerbs::gidEntry(4, IBV_GID_TYPE_ROCE_V2, kGlobal6);  // slot 3 empty
  p.gids[5] = FakeVerbs::ipv4Gid(5, IBV_GID_TYPE_ROCE_V2, 10, 1, 2, 3);
  const ibv_qp_attr r = rtrWith(f, Env{});
  EXPECT_EQ(r.ah_attr.is_global, 1);
  EXPECT_EQ(r.ah_attr.grh.sgid_index, 5);
  EXPECT_EQ(0, std::memcmp(r.ah_attr.grh.dgid.raw, p.gids[5].gid.raw, 16));  // the peer's GID from its blob
  EXPECT_EQ(r.ah_attr.grh.hop_limit, 255);
}

TEST(VerbsGid, AutoDetectRanksGlobalOverLinkLocalAndV2OverV1) {
  FakeVerbs f;
  FakePort& p = f.addDevice("mlx5_0").ports[0];
  p.gids.clear();
  p.gids[0] = FakeVerbs::gidEntry(0, IBV_GID_TYPE_ROCE_V1, kGlobal6);
  p.gids[1] = FakeVerbs::gidEntry(1, IBV_GID_TYPE_ROCE_V2, kLinkLocal);
  p.gids[2] = FakeVerbs::gidEntry(2, IBV_GID_TYPE_ROCE_V2, kGlobal6);
  EXPECT_EQ(rtrWith(f, Env{}).ah_attr.grh.sgid_index, 2);
  p.gids.erase(2);
  EXPECT_EQ(rtrWith(f, Env{}).ah_attr.grh.sgid_index, 1);
  p.gids.erase(1);
  EXPECT_EQ(rtrWith(f, Env{}).ah_attr.grh.sgid_index, 0);  // RoCEv1 only: used, with a warning
  p.gids.clear();
  EXPECT_NE(errorOf([&] { make(f, 0, 1); }).find("no usable RoCE GID on mlx5_0 port 1"), std::string::npos);
}

TEST(VerbsGid, ExplicitIndexWins) {
  FakeVerbs f;
  FakePort& p = f.addDevice("mlx5_0").ports[0];
  p.gids[1] = FakeVerbs::gidEntry(1, IBV_GID_TYPE_ROCE_V1, kGlobal6);
  Env e;
  e.gid_index = 1;
  EXPECT_EQ(rtrWith(f, e).ah_attr.grh.sgid_index, 1);
  e.gid_index = 3;  // empty slot
  EXPECT_NE(errorOf([&] { make(f, 0, 1, e); }).find("UCCL_IB_GID_INDEX=3 names an empty GID on mlx5_0 port 1"),
            std::string::npos);
  e.gid_index = 8;  // table has 8 entries
  EXPECT_NE(errorOf([&] { make(f, 0, 1, e); }).find("outside the GID table"), std::string::npos);
}

TEST(VerbsGid, InfinibandUsesLidWithoutGrh) {
  FakeVerbs f;
  FakePort& p = f.addDevice("mlx5_0").ports[0];
  p.link_layer = IBV_LINK_LAYER_INFINIBAND;
  p.lid = 0x2a;
  p.gids.clear();  // no GID needed
  Env e;
  e.ib_sl = 5;
  const ibv_qp_attr r = rtrWith(f, e);
  EXPECT_EQ(r.ah_attr.is_global, 0);
  EXPECT_EQ(r.ah_attr.dlid, 0x2a);
  EXPECT_EQ(r.ah_attr.sl, 5);
  EXPECT_EQ(r.ah_attr.port_num, 1);
}

TEST(VerbsGid, ServiceLevelAndTrafficClassReachTheAddressHandle) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  Env e;
  e.ib_sl = 3;
  e.ib_tc = 106;
  const ibv_qp_attr r = rtrWith(f, e);
  EXPECT_EQ(r.ah_attr.sl, 3);
  EXPECT_EQ(r.ah_attr.grh.traffic_class, 106);
  e.ib_sl = 16;
  EXPECT_NE(errorOf([&] { make(f, 0, 1, e); }).find("UCCL_IB_SL=16 (expected 0..15)"), std::string::npos);
  e.ib_sl = 0;
  e.ib_tc = 256;
  EXPECT_NE(errorOf([&] { make(f, 0, 1, e); }).find("UCCL_IB_TC=256"), std::string::npos);
}

}  // namespace
}  // namespace uccl::ep::transport::verbs::testing
