#include "proxy/endpoint_info.hpp"

#include <unistd.h>

#include "uccl_ep/util/process.hpp"

namespace uccl::ep::proxy {

transport::Blob encodeEndpointInfo(const transport::Blob& address, const transport::RemoteMemory* regions,
                                   const transport::RemoteMemory* signals) {
  transport::Blob out;
  transport::appendBlob(out, address);
  for (uint32_t i = 0; i < ring::kMaxRegions; ++i) {
    transport::appendBlob(out, regions[i].size != 0 ? transport::encodeRemote(regions[i]) : transport::Blob{});
  }
  transport::appendBlob(out, signals != nullptr ? transport::encodeRemote(*signals) : transport::Blob{});
  static const std::string space = processSpace();
  transport::appendU64(out, static_cast<uint64_t>(::getpid()));
  transport::appendBlob(out, transport::Blob(space.begin(), space.end()));
  return out;
}

EndpointInfo decodeEndpointInfo(const transport::Blob& blob) {
  EndpointInfo info;
  size_t off = 0;
  info.address = transport::readBlob(blob, &off);
  for (uint32_t i = 0; i < ring::kMaxRegions; ++i) {
    const transport::Blob b = transport::readBlob(blob, &off);
    if (!b.empty()) info.table.regions[i] = transport::decodeRemote(b);
  }
  const transport::Blob s = transport::readBlob(blob, &off);
  if (!s.empty()) {
    info.table.signals = transport::decodeRemote(s);
    info.table.num_signals = info.table.signals.size / sizeof(int64_t);
  }
  info.pid = static_cast<int>(transport::readU64(blob, &off));
  const transport::Blob space = transport::readBlob(blob, &off);
  info.process_space.assign(space.begin(), space.end());
  return info;
}

}  // namespace uccl::ep::proxy
