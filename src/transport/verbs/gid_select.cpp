#include "transport/verbs/gid_select.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <cstring>

#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::transport::verbs {
namespace {

bool isZero(const ibv_gid& g) {
  static const uint8_t kZero[16] = {};
  return std::memcmp(g.raw, kZero, 16) == 0;
}
bool isIpv4Mapped(const ibv_gid& g) {
  static const uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(g.raw, kPrefix, 12) == 0;
}
bool isLinkLocal(const ibv_gid& g) { return g.raw[0] == 0xfe && (g.raw[1] & 0xc0) == 0x80; }

// Lower is better; -1: never pick.
int rank(const ibv_gid_entry& e) {
  if (isZero(e.gid)) return -1;
  if (e.gid_type == IBV_GID_TYPE_ROCE_V2) return isIpv4Mapped(e.gid) ? 0 : (isLinkLocal(e.gid) ? 2 : 1);
  if (e.gid_type == IBV_GID_TYPE_ROCE_V1) return 3;
  return -1;
}

}  // namespace

const char* gidTypeName(uint32_t type) {
  switch (type) {
    case IBV_GID_TYPE_IB:
      return "IB";
    case IBV_GID_TYPE_ROCE_V1:
      return "RoCEv1";
    case IBV_GID_TYPE_ROCE_V2:
      return "RoCEv2";
    default:
      return "unknown";
  }
}

std::string gidToString(const ibv_gid& gid) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(AF_INET6, gid.raw, buf, sizeof(buf)) == nullptr) return "?";
  return buf;
}

GidChoice selectGid(const VerbsApi& api, ibv_context* ctx, const std::string& device, uint8_t port,
                    const ibv_port_attr& port_attr, int env_gid_index) {
  GidChoice c;
  if (port_attr.link_layer != IBV_LINK_LAYER_ETHERNET) {
    // InfiniBand: LID routing inside the subnet; UCCL_IB_GID_INDEX is not needed and is ignored.
    return c;
  }
  c.use_grh = true;
  ibv_gid_entry e{};
  if (env_gid_index >= 0) {
    if (env_gid_index >= port_attr.gid_tbl_len) {
      UCCL_EP_THROW("verbs: UCCL_IB_GID_INDEX={} is outside the GID table of {} port {} ({} entries)", env_gid_index,
                    device, port, port_attr.gid_tbl_len);
    }
    const int rc = api.queryGidEx(ctx, port, static_cast<uint32_t>(env_gid_index), &e);
    if (rc != 0 || isZero(e.gid)) {
      UCCL_EP_THROW("verbs: UCCL_IB_GID_INDEX={} names an empty GID on {} port {} (ibv_query_gid_ex rc={})",
                    env_gid_index, device, port, rc);
    }
    c.index = env_gid_index;
    c.gid = e.gid;
    c.type = e.gid_type;
    return c;
  }
  int best = -1;
  for (int i = 0; i < port_attr.gid_tbl_len; ++i) {
    e = ibv_gid_entry{};
    if (api.queryGidEx(ctx, port, static_cast<uint32_t>(i), &e) != 0) continue;  // empty slots fail (ENODATA)
    const int r = rank(e);
    if (r < 0 || (best >= 0 && r >= best)) continue;
    best = r;
    c.index = i;
    c.gid = e.gid;
    c.type = e.gid_type;
    if (r == 0) break;
  }
  if (c.index < 0) {
    UCCL_EP_THROW("verbs: no usable RoCE GID on {} port {} (scanned {} entries; set UCCL_IB_GID_INDEX)", device, port,
                  port_attr.gid_tbl_len);
  }
  if (c.type == IBV_GID_TYPE_ROCE_V1) {
    log().warn("verbs: {} port {} has no RoCEv2 GID; using RoCEv1 GID index {} (not routable across subnets)", device,
               port, c.index);
  }
  return c;
}

}  // namespace uccl::ep::transport::verbs
