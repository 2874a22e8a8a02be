#include "uccl_ep/transport/transport.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport {

void appendLe(Blob& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

uint64_t loadLe(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

void appendU64(Blob& out, uint64_t v) { appendLe(out, v, 8); }
uint64_t readU64(const Blob& in, size_t* off) {
  if (*off + 8 > in.size()) UCCL_EP_THROW("blob truncated: need 8 bytes at offset {}, blob has {}", *off, in.size());
  const uint64_t v = loadLe(in.data() + *off, 8);
  *off += 8;
  return v;
}
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

void appendBlob(Blob& out, const Blob& item) {
  appendU64(out, item.size());
  out.insert(out.end(), item.begin(), item.end());
}

Blob readBlob(const Blob& in, size_t* offset) {
  const uint64_t n = readU64(in, offset);
  if (n > in.size() - *offset) UCCL_EP_THROW("blob truncated: item of {} bytes at offset {}, blob has {}", n, *offset, in.size());
  Blob item(in.begin() + static_cast<ptrdiff_t>(*offset), in.begin() + static_cast<ptrdiff_t>(*offset + n));
  *offset += n;
  return item;
}

}  // namespace uccl::ep::transport
