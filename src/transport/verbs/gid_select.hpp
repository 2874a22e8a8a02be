// Addressing on the selected port: LID on InfiniBand, a GID (preferably RoCEv2, IPv4-mapped) on Ethernet.
//
// InfiniBand link layer: the peer is named by its LID and no GRH is used (one subnet). Ethernet (RoCE): every
// packet carries a GRH, so a GID index is needed. UCCL_IB_GID_INDEX (>= 0) picks one explicitly; otherwise the
// GID table is scanned with ibv_query_gid_ex and ranked: RoCEv2 IPv4-mapped (::ffff:a.b.c.d) first, then
// other RoCEv2 non-link-local, then RoCEv2 link-local, then RoCEv1 (with a warning: v1 is not routable).
#pragma once

#include <infiniband/verbs.h>

#include <string>

#include "transport/verbs/verbs_api.hpp"

namespace uccl::ep::transport::verbs {

struct GidChoice {
  bool use_grh = false;  // false on InfiniBand: address by LID
  int index = -1;
  ibv_gid gid{};
  uint32_t type = IBV_GID_TYPE_IB;
};

// Throws naming the device, port and the index asked for or the table scanned.
GidChoice selectGid(const VerbsApi& api, ibv_context* ctx, const std::string& device, uint8_t port,
                    const ibv_port_attr& port_attr, int env_gid_index);

std::string gidToString(const ibv_gid& gid);
const char* gidTypeName(uint32_t type);

}  // namespace uccl::ep::transport::verbs
