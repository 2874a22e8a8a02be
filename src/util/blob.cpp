#include "uccl_ep/util/blob.hpp"

#include "uccl_ep/util/error.hpp"

namespace uccl::ep {

void appendLe(Blob& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

uint64_t loadLe(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

void appendU64(Blob& out, uint64_t v) { appendLe(out, v, 8); }

uint64_t readU64(const Blob& in, size_t* offset) {
  if (*offset > in.size() || in.size() - *offset < 8) {
    UCCL_EP_THROW("blob truncated: need 8 bytes at offset {}, blob has {}", *offset, in.size());
  }
  const uint64_t v = loadLe(in.data() + *offset, 8);
  *offset += 8;
  return v;
}

void appendBlob(Blob& out, const Blob& item) {
  appendU64(out, item.size());
  out.insert(out.end(), item.begin(), item.end());
}

Blob readBlob(const Blob& in, size_t* offset) {
  const uint64_t n = readU64(in, offset);
  if (n > in.size() - *offset) {
    UCCL_EP_THROW("blob truncated: item of {} bytes at offset {}, blob has {}", n, *offset, in.size());
  }
  Blob item(in.begin() + static_cast<ptrdiff_t>(*offset), in.begin() + static_cast<ptrdiff_t>(*offset + n));
  *offset += n;
  return item;
}

}  // namespace uccl::ep
