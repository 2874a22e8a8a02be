// The node size and the NVLink domain, decided once: from each source, with MNNVL as a separate fact, and the
// layouts that must be refused.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "message_of.hpp"
#include "runtime/peer_info.hpp"
#include "runtime/topology.hpp"

namespace uccl::ep::runtime {
namespace {

// `nodes` hosts of `per_host` ranks each, in rank order: "h0", "h0", ..., "h1", ...
std::vector<std::string> hosts(int nodes, int per_host) {
  std::vector<std::string> out;
  for (int n = 0; n < nodes; ++n) out.insert(out.end(), per_host, "h" + std::to_string(n));
  return out;
}

Env envWith(int ranks_per_node, int local_world_size = 0) {
  Env e;
  e.ranks_per_node = ranks_per_node;
  e.local_world_size = local_world_size;
  return e;
}

TEST(Topology, NodeSizeComesFromTheHostNamesWhenNoVariableIsSet) {
  const Topology t = decideTopology(5, 8, hosts(2, 4), false, Env{});
  EXPECT_EQ(t.ranks_per_node, 4);
  EXPECT_EQ(t.num_nodes, 2);
  EXPECT_EQ(t.ranks_per_node_source, "host names");
  EXPECT_FALSE(t.nvl_domain_spans_nodes);
  EXPECT_EQ(t.nvl_domain_source, "");
  EXPECT_EQ(t.nodeOf(5), 1);
  EXPECT_TRUE(t.sameNode(4, 7));
  EXPECT_FALSE(t.inNvlDomain(3, 4));
  EXPECT_EQ(t.nvlDomainSize(), 4);
}

TEST(Topology, OneHostIsOneNode) {
  const Topology t = decideTopology(0, 1, {"solo"}, false, Env{});
  EXPECT_EQ(t.ranks_per_node, 1);
  EXPECT_EQ(t.num_nodes, 1);
  EXPECT_EQ(t.describe(), "1 rank as 1 node of 1 (host names); NVLink domain: the 1 rank of each node");
}

TEST(Topology, RanksPerNodeVariableEmulatesNodesWithinAHost) {
  const Topology t = decideTopology(0, 8, hosts(1, 8), false, envWith(2));
  EXPECT_EQ(t.ranks_per_node, 2);
  EXPECT_EQ(t.num_nodes, 4);
  EXPECT_EQ(t.ranks_per_node_source, "UCCL_EP_RANKS_PER_NODE");
  EXPECT_FALSE(t.sameNode(1, 2));
}

TEST(Topology, RanksPerNodeVariableWinsOverLocalWorldSize) {
  const Topology t = decideTopology(0, 8, hosts(1, 8), false, envWith(4, 8));
  EXPECT_EQ(t.ranks_per_node, 4);
  EXPECT_EQ(t.ranks_per_node_source, "UCCL_EP_RANKS_PER_NODE");
}

TEST(Topology, LocalWorldSizeGivesTheNodeSizeWhenRanksPerNodeIsUnset) {
  const Topology t = decideTopology(0, 8, hosts(2, 4), false, envWith(0, 4));
  EXPECT_EQ(t.ranks_per_node, 4);
  EXPECT_EQ(t.num_nodes, 2);
  EXPECT_EQ(t.ranks_per_node_source, "LOCAL_WORLD_SIZE");
}

TEST(Topology, ANodeSizeAboveTheRankCountIsOneNode) {
  const Topology t = decideTopology(2, 4, hosts(1, 4), false, envWith(16));
  EXPECT_EQ(t.ranks_per_node, 4);
  EXPECT_EQ(t.num_nodes, 1);
}

TEST(Topology, ANodeSizeThatDoesNotDivideTheRanksLeavesASmallerLastNode) {
  const Topology t = decideTopology(9, 10, hosts(1, 10), false, envWith(4));
  EXPECT_EQ(t.num_nodes, 3);
  EXPECT_EQ(t.nodeOf(9), 2);
  EXPECT_EQ(t.nvlDomainSize(), 2);
  EXPECT_EQ(t.describe(),
            "10 ranks as 3 nodes of 4, the last of 2 (UCCL_EP_RANKS_PER_NODE); NVLink domain: the ranks of each node");
}

TEST(Topology, MnnvlSpansNodesWithoutMergingThem) {
  Env e = envWith(4);
  e.normal_mnnvl = true;
  e.normal_mnnvl_source = "UCCL_EP_NORMAL_MNNVL";
  const Topology t = decideTopology(0, 12, hosts(3, 4), false, e);
  EXPECT_EQ(t.ranks_per_node, 4);
  EXPECT_EQ(t.num_nodes, 3);
  EXPECT_TRUE(t.nvl_domain_spans_nodes);
  EXPECT_EQ(t.nvl_domain_source, "UCCL_EP_NORMAL_MNNVL");
  EXPECT_TRUE(t.inNvlDomain(0, 11));
  EXPECT_FALSE(t.sameNode(0, 11));
  EXPECT_EQ(t.nvlDomainSize(), 12);
  EXPECT_EQ(t.describe(),
            "12 ranks as 3 nodes of 4 (UCCL_EP_RANKS_PER_NODE); NVLink domain: all 12 ranks across nodes "
            "(UCCL_EP_NORMAL_MNNVL)");
}

TEST(Topology, DeepEpMnnvlVariableIsNamedAsTheSource) {
  Env e;
  e.normal_mnnvl = true;
  e.normal_mnnvl_source = "DEEP_EP_NORMAL_MNNVL";
  const Topology t = decideTopology(0, 8, hosts(2, 4), false, e);
  EXPECT_EQ(t.num_nodes, 2);
  EXPECT_EQ(t.nvl_domain_source, "DEEP_EP_NORMAL_MNNVL");
}

TEST(Topology, AllowMnnvlSpansNodesAndIsNamedBeforeTheVariables) {
  Env e;
  e.normal_mnnvl = true;
  e.normal_mnnvl_source = "UCCL_EP_NORMAL_MNNVL";
  const Topology t = decideTopology(0, 8, hosts(2, 4), true, e);
  EXPECT_TRUE(t.nvl_domain_spans_nodes);
  EXPECT_EQ(t.nvl_domain_source, "allow_mnnvl");
  EXPECT_EQ(t.num_nodes, 2);
  EXPECT_EQ(t.describe(),
            "8 ranks as 2 nodes of 4 (host names); NVLink domain: all 8 ranks across nodes (allow_mnnvl)");
}

TEST(Topology, DescribeNamesTheNodesOfAPlainCluster) {
  const Topology t = decideTopology(0, 12, hosts(3, 4), false, envWith(4));
  EXPECT_EQ(t.describe(), "12 ranks as 3 nodes of 4 (UCCL_EP_RANKS_PER_NODE); NVLink domain: the 4 ranks of each node");
}

TEST(Topology, HostsNotInContiguousBlocksAreAnErrorNamingTheHostsAndTheOverrides) {
  const std::vector<std::string> interleaved = {"a", "b", "a", "b"};
  const std::string msg = messageOf([&] { decideTopology(0, 4, interleaved, false, Env{}); });
  EXPECT_TRUE(mentions(msg, {"contiguous", "'a', 'b', 'a', 'b'", "UCCL_EP_RANKS_PER_NODE", "LOCAL_WORLD_SIZE"}));
}

TEST(Topology, HostsOfDifferentSizesAreAnError) {
  const std::vector<std::string> uneven = {"a", "a", "b", "b", "b", "b"};
  EXPECT_TRUE(mentions(messageOf([&] { decideTopology(0, 6, uneven, false, Env{}); }), {"blocks of 2", "'b'"}));
  EXPECT_TRUE(mentions(messageOf([&] { decideTopology(2, 6, uneven, false, Env{}); }), {"blocks of 4"}));
}

TEST(Topology, AHostSeenAgainAfterAnotherIsNotContiguous) {
  const std::vector<std::string> split = {"a", "a", "b", "b", "a", "a"};
  EXPECT_THROW(decideTopology(2, 6, split, false, Env{}), Error);
}

TEST(Topology, EmulatedNodeMayNotSpanTwoHosts) {
  const std::string msg = messageOf([] { decideTopology(0, 8, hosts(2, 4), false, envWith(8)); });
  EXPECT_TRUE(mentions(msg, {"node 0", "rank 0", "'h0'", "rank 4", "'h1'", "UCCL_EP_RANKS_PER_NODE"}));
}

TEST(Topology, LocalWorldSizeLargerThanTheHostsBlockIsNamedWhenItSpansHosts) {
  EXPECT_TRUE(mentions(messageOf([] { decideTopology(0, 8, hosts(4, 2), false, envWith(0, 4)); }),
                       {"LOCAL_WORLD_SIZE=4", "'h0'", "'h1'"}));
}

TEST(Topology, EmulatedNodeMaySplitAHost) {
  const Topology t = decideTopology(3, 8, hosts(2, 4), false, envWith(2));
  EXPECT_EQ(t.num_nodes, 4);
  EXPECT_EQ(t.nodeOf(3), 1);
}

TEST(Topology, BadArgumentsAreErrorsNamingTheValue) {
  EXPECT_TRUE(mentions(messageOf([] { decideTopology(0, 0, {}, false, Env{}); }), {"num_ranks = 0"}));
  EXPECT_TRUE(mentions(messageOf([] { decideTopology(4, 4, hosts(1, 4), false, Env{}); }), {"rank 4", "[0, 4)"}));
  EXPECT_TRUE(mentions(messageOf([] { decideTopology(-1, 4, hosts(1, 4), false, Env{}); }), {"rank -1"}));
  EXPECT_TRUE(mentions(messageOf([] { decideTopology(0, 4, hosts(1, 3), false, Env{}); }), {"3 host ids", "4 ranks"}));
}

TEST(Topology, RankQueriesOutsideTheGroupAreErrors) {
  const Topology t = decideTopology(0, 4, hosts(1, 4), false, Env{});
  EXPECT_THROW(t.nodeOf(4), Error);
  EXPECT_THROW(t.nodeOf(-1), Error);
  EXPECT_THROW(t.sameNode(0, 4), Error);
  Topology spanning = t;
  spanning.nvl_domain_spans_nodes = true;
  EXPECT_THROW(spanning.inNvlDomain(0, 9), Error);
}

TEST(RanksPerNodeFromEnv, PrefersTheVariableThenLocalWorldSizeThenTheFallbackCappedAtTheRanks) {
  EXPECT_EQ(ranksPerNodeFromEnv(16, 8, envWith(2, 4)), 2);
  EXPECT_EQ(ranksPerNodeFromEnv(16, 8, envWith(0, 4)), 4);
  EXPECT_EQ(ranksPerNodeFromEnv(16, 8, Env{}), 8);
  EXPECT_EQ(ranksPerNodeFromEnv(4, 8, Env{}), 4);
  EXPECT_EQ(ranksPerNodeFromEnv(4, 1, envWith(32)), 4);
  EXPECT_THROW(ranksPerNodeFromEnv(0, 8, Env{}), Error);
  EXPECT_THROW(ranksPerNodeFromEnv(4, 0, Env{}), Error);
}

TEST(RanksPerNodeFromEnv, MnnvlDoesNotChangeTheNodeSize) {
  Env e = envWith(0, 4);
  e.normal_mnnvl = true;
  EXPECT_EQ(ranksPerNodeFromEnv(16, 8, e), 4);
}

TEST(LocalHostId, NamesTheHostAndItsBootId) {
  const std::string id = localHostId();
  EXPECT_EQ(id.rfind(localHostname(), 0), 0u) << id;
  if (!localBootId().empty()) {
    EXPECT_EQ(id, localHostname() + "/" + localBootId());
  }
  EXPECT_EQ(localHostId(), id);
}

}  // namespace
}  // namespace uccl::ep::runtime
