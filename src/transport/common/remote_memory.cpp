// The wire form of RemoteMemory, shared by every backend.
#include "uccl_ep/transport/transport.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport {
namespace {
constexpr uint64_t kRemoteMagic = 0x52454d4f54454d31ull;  // "REMOTEM1"
}  // namespace

Blob encodeRemote(const RemoteMemory& m) {
  Blob b;
  appendU64(b, kRemoteMagic);
  appendU64(b, m.addr);
  appendU64(b, m.key);
  appendU64(b, m.size);
  return b;
}

RemoteMemory decodeRemote(const Blob& b) {
  size_t off = 0;
  if (b.size() != 32 || readU64(b, &off) != kRemoteMagic) {
    UCCL_EP_THROW("malformed remote memory blob ({} bytes, expected 32 starting with the REMOTEM1 tag)", b.size());
  }
  RemoteMemory m;
  m.addr = readU64(b, &off);
  m.key = readU64(b, &off);
  m.size = readU64(b, &off);
  return m;
}

}  // namespace uccl::ep::transport
