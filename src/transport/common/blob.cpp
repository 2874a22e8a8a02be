#include "uccl_ep/transport/transport.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport {

namespace {
void putU64(Blob& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t getU64(const Blob& in, size_t* off) {
  if (*off + 8 > in.size()) UCCL_EP_THROW("blob truncated: need 8 bytes at offset {}, blob has {}", *off, in.size());
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{in[*off + i]} << (8 * i);
  *off += 8;
  return v;
}
constexpr uint64_t kRemoteMagic = 0x52454d4f54454d31ull;  // "REMOTEM1"
}  // namespace

Blob encodeRemote(const RemoteMemory& m) {
  Blob b;
  putU64(b, kRemoteMagic);
  putU64(b, m.addr);
  putU64(b, m.key);
  putU64(b, m.size);
  return b;
}

RemoteMemory decodeRemote(const Blob& b) {
  size_t off = 0;
  if (b.size() != 32 || getU64(b, &off) != kRemoteMagic) {
    UCCL_EP_THROW("malformed remote memory blob ({} bytes, expected 32 starting with the REMOTEM1 tag)", b.size());
  }
  RemoteMemory m;
  m.addr = getU64(b, &off);
  m.key = getU64(b, &off);
  m.size = getU64(b, &off);
  return m;
}

void appendBlob(Blob& out, const Blob& item) {
  putU64(out, item.size());
  out.insert(out.end(), item.begin(), item.end());
}

Blob readBlob(const Blob& in, size_t* offset) {
  const uint64_t n = getU64(in, offset);
  if (n > in.size() - *offset) UCCL_EP_THROW("blob truncated: item of {} bytes at offset {}, blob has {}", n, *offset, in.size());
  Blob item(in.begin() + static_cast<ptrdiff_t>(*offset), in.begin() + static_cast<ptrdiff_t>(*offset + n));
  *offset += n;
  return item;
}

}  // namespace uccl::ep::transport
