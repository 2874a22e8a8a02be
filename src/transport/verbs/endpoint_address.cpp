#include "transport/verbs/endpoint_address.hpp"

#include <cstring>

#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport::verbs {
namespace {

constexpr uint64_t kMagic = 0x3150454253425256ull;  // "VRBSBEP1"
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 4 + 2 + 2 + 16;

void put(Blob& b, uint64_t v, int bytes) { appendLe(b, v, bytes); }
uint64_t get(const Blob& b, size_t* off, int bytes) {
  const uint64_t v = loadLe(b.data() + *off, bytes);
  *off += bytes;
  return v;
}

}  // namespace

Blob encodeAddress(const EndpointAddress& a) {
  Blob b;
  b.reserve(kHeaderBytes + 8 * a.qpn.size());
  put(b, kMagic, 8);
  put(b, a.rank, 4);
  put(b, a.world, 4);
  put(b, a.port, 1);
  put(b, a.link_layer, 1);
  put(b, a.mtu, 1);
  put(b, a.use_grh, 1);
  put(b, a.lid, 2);
  put(b, 0, 2);
  b.insert(b.end(), a.gid.raw, a.gid.raw + 16);
  for (size_t i = 0; i < a.qpn.size(); ++i) {
    put(b, a.qpn[i], 4);
    put(b, a.psn[i], 4);
  }
  return b;
}

EndpointAddress decodeAddress(const Blob& b, uint32_t from_rank) {
  size_t off = 0;
  if (b.size() < kHeaderBytes || get(b, &off, 8) != kMagic) {
    UCCL_EP_THROW("verbs: address blob of rank {} is malformed ({} bytes, expected a VRBSBEP1 header of {})", from_rank,
                  b.size(), kHeaderBytes);
  }
  EndpointAddress a;
  a.rank = static_cast<uint32_t>(get(b, &off, 4));
  a.world = static_cast<uint32_t>(get(b, &off, 4));
  a.port = static_cast<uint8_t>(get(b, &off, 1));
  a.link_layer = static_cast<uint8_t>(get(b, &off, 1));
  a.mtu = static_cast<uint8_t>(get(b, &off, 1));
  a.use_grh = static_cast<uint8_t>(get(b, &off, 1));
  a.lid = static_cast<uint16_t>(get(b, &off, 2));
  off += 2;
  std::memcpy(a.gid.raw, b.data() + off, 16);
  off += 16;
  if (a.rank != from_rank || b.size() != kHeaderBytes + 8ull * a.world) {
    UCCL_EP_THROW(
        "verbs: address blob at index {} claims rank {} of world {} with {} bytes (expected rank {} and {} "
        "bytes)",
        from_rank, a.rank, a.world, b.size(), from_rank, kHeaderBytes + 8ull * a.world);
  }
  for (uint32_t i = 0; i < a.world; ++i) {
    a.qpn.push_back(static_cast<uint32_t>(get(b, &off, 4)));
    a.psn.push_back(static_cast<uint32_t>(get(b, &off, 4)));
  }
  return a;
}

}  // namespace uccl::ep::transport::verbs
