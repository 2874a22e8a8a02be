// What one endpoint tells its peers: its transport address and the remote view of its data regions (indexed as
// descriptors name them) and of its signal counters. Proxy threads and the transport floor exchange this one form.
#pragma once

#include <cstdint>
#include <string>

#include "uccl_ep/ring/descriptor.hpp"
#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::proxy {

// What this side knows of one peer's memory (for one endpoint index).
struct PeerTable {
  transport::RemoteMemory regions[ring::kMaxRegions];  // size 0: not registered
  transport::RemoteMemory signals;                     // int64 counters
  uint64_t num_signals = 0;
};

struct EndpointInfo {
  transport::Blob address;
  PeerTable table;
  int pid = 0;                // the endpoint's process
  std::string process_space;  // processSpace() of that process: where its pid can be judged
};

// regions[i].size == 0 marks region i as absent; signals == nullptr: no counters. The calling process's pid and
// processSpace() go with them.
transport::Blob encodeEndpointInfo(const transport::Blob& address, const transport::RemoteMemory* regions,
                                   const transport::RemoteMemory* signals);
// Throws uccl::ep::Error on a malformed blob.
EndpointInfo decodeEndpointInfo(const transport::Blob& blob);

}  // namespace uccl::ep::proxy
