// Which ranks share a node and which ranks map each other's nvl buffer: decided once, here, for the runtime and
// (through the bindings) for Python. Two separate facts: a multi-node NVLink (MNNVL) domain spans nodes, it does
// not make them one node. Plain C++ (no CUDA), so it is unit-tested on machines without a GPU.
#pragma once

#include <string>
#include <vector>

#include "uccl_ep/util/env.hpp"

namespace uccl::ep::runtime {

// Nodes are contiguous blocks of ranks: rank r is on node r / ranks_per_node (the kernels number nodes that way).
// The last node holds fewer ranks when ranks_per_node does not divide num_ranks.
struct Topology {
  int rank = 0, num_ranks = 1, ranks_per_node = 1, num_nodes = 1;
  std::string ranks_per_node_source;    // "UCCL_EP_RANKS_PER_NODE", "LOCAL_WORLD_SIZE", "host names"
  bool nvl_domain_spans_nodes = false;  // every rank maps every rank's nvl buffer (multi-node NVLink domain)
  std::string nvl_domain_source;        // "", "UCCL_EP_NORMAL_MNNVL", "DEEP_EP_NORMAL_MNNVL", "allow_mnnvl", or set
                                        // later by the runtime ("NVLink fabric domain <id>")

  int nodeOf(int r) const;  // r / ranks_per_node; throws for r outside [0, num_ranks)
  bool sameNode(int a, int b) const;
  bool inNvlDomain(int a, int b) const;  // nvl_domain_spans_nodes || sameNode(a, b)
  int nvlDomainSize() const;             // ranks in rank's NVLink domain
  // One line, e.g. "12 ranks as 3 nodes of 4 (UCCL_EP_RANKS_PER_NODE); NVLink domain: all 12 ranks across nodes
  // (UCCL_EP_NORMAL_MNNVL)" or "...; NVLink domain: the 4 ranks of each node".
  std::string describe() const;
};

// host_ids[r] is rank r's localHostId(). Node size: UCCL_EP_RANKS_PER_NODE when > 0, else LOCAL_WORLD_SIZE when
// > 0, else the ranks that share this rank's host id (the hosts must hold contiguous, equally sized blocks of
// ranks, rank r on node r / ranks_per_node; otherwise throws naming the hosts and the variables that override).
// A node size from the environment above num_ranks means one node. A node (block) whose ranks are on different
// hosts is an error naming the ranks and hosts (an emulated node may split a host, never span two).
// The NVLink domain spans nodes when allow_mnnvl is true or either MNNVL variable is true (they are separate
// facts: MNNVL never changes ranks_per_node or num_nodes); nvl_domain_source names allow_mnnvl first, then the
// variable. num_nodes = ceil(num_ranks / ranks_per_node).
// Throws uccl::ep::Error for rank/num_ranks out of range or host_ids.size() != num_ranks.
Topology decideTopology(int rank, int num_ranks, const std::vector<std::string>& host_ids, bool allow_mnnvl,
                        const Env& env);

// Node size for buffer size hints, where no group exists: UCCL_EP_RANKS_PER_NODE, else LOCAL_WORLD_SIZE, else
// `fallback`; capped at num_ranks. Throws for num_ranks < 1 or fallback < 1.
int ranksPerNodeFromEnv(int num_ranks, int fallback, const Env& env);

// This process's host identity: "hostname/boot id" (just the host name where /proc has no boot id). Two containers
// with one host name and different boot ids are different hosts; two on one kernel share a boot id.
std::string localHostId();

}  // namespace uccl::ep::runtime
