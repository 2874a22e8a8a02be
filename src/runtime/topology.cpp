#include "runtime/topology.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "runtime/peer_info.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

namespace {
constexpr const char* kOverrides = "set UCCL_EP_RANKS_PER_NODE or LOCAL_WORLD_SIZE, or launch ranks in host order";
constexpr int kHostsListed = 16;  // a message lists this many ranks' hosts; a large job would drown it

// "a, a, b, b, ... (64 ranks)": every rank's host, in rank order, for messages.
std::string hostsByRank(const std::vector<std::string>& host_ids) {
  const size_t n = std::min<size_t>(host_ids.size(), kHostsListed);
  std::string out;
  for (size_t r = 0; r < n; ++r) out += fmt::format("{}'{}'", r == 0 ? "" : ", ", host_ids[r]);
  if (host_ids.size() > n) out += fmt::format(", ... ({} ranks)", host_ids.size());
  return out;
}

// The node size the hosts imply: the ranks on this rank's host, provided every host holds one contiguous block of
// that many ranks. Anything else (interleaved ranks, hosts of different sizes) has no node numbering the kernels
// could use, and guessing one would put ranks of two hosts in one NVLink node.
int ranksPerNodeFromHosts(int rank, const std::vector<std::string>& host_ids) {
  const int n = static_cast<int>(host_ids.size());
  const int rpn = static_cast<int>(std::count(host_ids.begin(), host_ids.end(), host_ids[rank]));
  if (n % rpn == 0) {
    std::map<std::string, int> block_of;  // host -> its block; a host seen again in a later block is not contiguous
    bool ok = true;
    for (int r = 0; r < n && ok; ++r) {
      const int block = r / rpn;
      ok = host_ids[r] == host_ids[block * rpn] && block_of.emplace(host_ids[r], block).first->second == block;
    }
    if (ok) return rpn;
  }
  UCCL_EP_THROW(
      "topology: ranks are not in contiguous blocks of {} per host, as rank {} on host '{}' implies (hosts by rank: "
      "{}); {}",
      rpn, rank, host_ids[rank], hostsByRank(host_ids), kOverrides);
}

// An emulated node (UCCL_EP_RANKS_PER_NODE below the host's ranks) may split a host, but a node must never span
// two: its ranks would try to map each other's memory over NVLink.
void checkNodesWithinHosts(const Topology& t, const std::vector<std::string>& host_ids) {
  for (int r = 0; r < t.num_ranks; ++r) {
    const int lead = t.nodeOf(r) * t.ranks_per_node;
    if (host_ids[r] != host_ids[lead]) {
      UCCL_EP_THROW(
          "topology: node {} of {} ranks ({}={}) spans two hosts: rank {} is on '{}', rank {} on '{}'; a node may "
          "split a host but not span hosts (set {} to at most the ranks per host)",
          t.nodeOf(r), t.ranks_per_node, t.ranks_per_node_source, t.ranks_per_node, lead, host_ids[lead], r,
          host_ids[r], t.ranks_per_node_source);
    }
  }
}

// The environment's node size and the variable it came from; {0, ""} when neither variable is set.
std::pair<int, const char*> ranksPerNodeSetting(const Env& env) {
  if (env.ranks_per_node > 0) return {env.ranks_per_node, "UCCL_EP_RANKS_PER_NODE"};
  if (env.local_world_size > 0) return {env.local_world_size, "LOCAL_WORLD_SIZE"};
  return {0, ""};
}

const char* plural(int n, const char* one, const char* many) { return n == 1 ? one : many; }
}  // namespace

int Topology::nodeOf(int r) const {
  if (r < 0 || r >= num_ranks) UCCL_EP_THROW("topology: rank {} is not in [0, {})", r, num_ranks);
  return r / ranks_per_node;
}

bool Topology::sameNode(int a, int b) const { return nodeOf(a) == nodeOf(b); }

bool Topology::inNvlDomain(int a, int b) const {
  const bool same = sameNode(a, b);  // range-checks both ranks even when the domain spans nodes
  return nvl_domain_spans_nodes || same;
}

int Topology::nvlDomainSize() const {
  if (nvl_domain_spans_nodes) return num_ranks;
  const int first = nodeOf(rank) * ranks_per_node;
  return std::min(ranks_per_node, num_ranks - first);
}

std::string Topology::describe() const {
  std::string nodes = fmt::format("{} {} as {} {} of {}", num_ranks, plural(num_ranks, "rank", "ranks"), num_nodes,
                                  plural(num_nodes, "node", "nodes"), ranks_per_node);
  const int last = num_ranks - (num_nodes - 1) * ranks_per_node;
  if (last != ranks_per_node) nodes += fmt::format(", the last of {}", last);
  nodes += fmt::format(" ({})", ranks_per_node_source);
  if (nvl_domain_spans_nodes) {
    return fmt::format("{}; NVLink domain: all {} ranks across nodes ({})", nodes, num_ranks, nvl_domain_source);
  }
  if (last != ranks_per_node) return nodes + "; NVLink domain: the ranks of each node";
  return fmt::format("{}; NVLink domain: the {} {} of each node", nodes, ranks_per_node,
                     plural(ranks_per_node, "rank", "ranks"));
}

Topology decideTopology(int rank, int num_ranks, const std::vector<std::string>& host_ids, bool allow_mnnvl,
                        const Env& env) {
  if (num_ranks < 1) UCCL_EP_THROW("topology: num_ranks = {} (expected at least 1)", num_ranks);
  if (rank < 0 || rank >= num_ranks) UCCL_EP_THROW("topology: rank {} is not in [0, {})", rank, num_ranks);
  if (host_ids.size() != static_cast<size_t>(num_ranks)) {
    UCCL_EP_THROW("topology: {} host ids for {} ranks (expected one per rank)", host_ids.size(), num_ranks);
  }
  Topology t;
  t.rank = rank;
  t.num_ranks = num_ranks;
  const auto [setting, source] = ranksPerNodeSetting(env);
  if (setting > 0) {
    t.ranks_per_node = std::min(setting, num_ranks);
    t.ranks_per_node_source = source;
  } else {
    t.ranks_per_node = ranksPerNodeFromHosts(rank, host_ids);
    t.ranks_per_node_source = "host names";
  }
  t.num_nodes = (num_ranks + t.ranks_per_node - 1) / t.ranks_per_node;
  checkNodesWithinHosts(t, host_ids);

  // The explicit argument is named first: it is what the caller's code asked for.
  if (allow_mnnvl) {
    t.nvl_domain_spans_nodes = true;
    t.nvl_domain_source = "allow_mnnvl";
  } else if (env.normal_mnnvl) {
    t.nvl_domain_spans_nodes = true;
    t.nvl_domain_source = env.normal_mnnvl_source.empty() ? "UCCL_EP_NORMAL_MNNVL" : env.normal_mnnvl_source;
  }
  return t;
}

int ranksPerNodeFromEnv(int num_ranks, int fallback, const Env& env) {
  if (num_ranks < 1) UCCL_EP_THROW("topology: num_ranks = {} (expected at least 1)", num_ranks);
  if (fallback < 1) UCCL_EP_THROW("topology: fallback ranks per node = {} (expected at least 1)", fallback);
  const int setting = ranksPerNodeSetting(env).first;
  return std::min(setting > 0 ? setting : fallback, num_ranks);
}

std::string localHostId() {
  // The host name alone is not enough: containers often share one ("localhost") across machines. The boot id
  // alone is not readable for messages. Together they name a host; where /proc lacks the boot id, the name must do.
  const std::string boot = localBootId();
  return boot.empty() ? localHostname() : localHostname() + "/" + boot;
}

}  // namespace uccl::ep::runtime
