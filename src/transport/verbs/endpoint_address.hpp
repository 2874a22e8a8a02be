// The address blob of one verbs endpoint: port addressing plus the QP this rank created for every peer.
//
// Peer j reads qpn[j] and psn[j] from my blob to connect its QP for me to my QP for it. Little-endian,
// versioned by a magic tag; decode checks sizes and the rank/world it was built for.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <vector>

#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::transport::verbs {

struct EndpointAddress {
  uint32_t rank = 0;
  uint32_t world = 0;
  uint8_t port = 0;
  uint8_t link_layer = 0;  // IBV_LINK_LAYER_*
  uint8_t mtu = 0;         // ibv_mtu of the port (active_mtu)
  uint8_t use_grh = 0;
  uint16_t lid = 0;
  ibv_gid gid{};
  std::vector<uint32_t> qpn;  // index: peer rank
  std::vector<uint32_t> psn;  // start PSN of qpn[i]'s send queue
};

Blob encodeAddress(const EndpointAddress& a);
// Throws naming `from_rank` on a malformed or mismatched blob.
EndpointAddress decodeAddress(const Blob& b, uint32_t from_rank);

}  // namespace uccl::ep::transport::verbs
