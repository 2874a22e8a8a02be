// Provider selection for the libfabric backend: which fi_info we open, and what it honestly offers.
//
// Selection is a cold path, kept apart from the transport so the rules (optional features dropped in a fixed
// order, tcp domain choice) read in one place and can be logged as one decision.
#pragma once

#include <rdma/fabric.h>

#include <cstdint>
#include <memory>
#include <string>

#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::transport::fabric {

struct InfoDeleter {
  void operator()(fi_info* info) const { fi_freeinfo(info); }
};
using InfoPtr = std::unique_ptr<fi_info, InfoDeleter>;

// The features we ask for beyond the minimum (FI_RMA with remote write). Each may be refused by a provider;
// Selection records which ones the chosen fi_info granted.
struct Selection {
  InfoPtr info;           // a copy of the one chosen entry (next == nullptr)
  bool atomics = false;   // FI_ATOMIC granted (fi_atomicvalid is still checked on the endpoint)
  bool ordered = false;   // the ordering hints below were granted
  bool source = false;    // FI_SOURCE: receive completions carry the sender's fi_addr
  bool delivery = false;  // FI_DELIVERY_COMPLETE accepted in tx op_flags
  bool hmem = false;      // FI_HMEM granted (asked for with hmem): device memory may be registered (FI_MR_HMEM)
};

// The libfabric provider string for our short name: "tcp" -> "tcp;ofi_rxm", "shm", "efa". Throws otherwise.
std::string providerString(const std::string& provider);

// Runs fi_getinfo for FI_EP_RDM, dropping optional features (ordering first, then FI_SOURCE, then delivery
// complete, then atomics) until the provider answers, and picks the domain (see pickDomain in the .cpp). With hmem,
// FI_HMEM is required (caps FI_HMEM, mr_mode FI_MR_HMEM): the probe for registering GPU memory with the provider.
// Throws uccl::ep::Error naming the provider and what was tried when nothing matches.
Selection selectInfo(const TransportOptions& options, const std::string& provider, bool hmem = false);

// shm: a copy of `info` for one more endpoint, under a name of its own (shm names its region after the endpoint), its
// transmit and receive queues at most `depth` deep.
InfoPtr shmLaneInfo(const fi_info& info, size_t depth);

// kOrderedDelivery: write-after-write across RMA and atomics (FI_ORDER_WAW, which libfabric 1.17 defines for
// "RMA and atomic write operations" together) plus the RMA- and atomic-only variants, and data placement in
// order for any message size (max_order_waw_size covering max_msg_size), since the proxy's fence-free signal
// after a write of any size depends on it.
bool orderedDelivery(const fi_info& info);

// One line for the setup log: provider, domain, mr_mode, modes, orders, sizes.
std::string describeInfo(const fi_info& info);

// Removes the shm regions under `dir` that a dead process of this user left: files named as our shm endpoints
// (uccl_ep_<pid>_<tag>) whose pid no longer runs. Files of live pids, of other users and of other names stay. The
// shm transport runs it over /dev/shm once per process, before its first endpoint. Returns how many it removed.
size_t removeStaleShmRegions(const std::string& dir);

// The pid in a shm endpoint name as setShmName writes it (uccl_ep_<10-digit pid>_<16 hex digits>); 0 when `name` is
// not one.
int shmNamePid(const std::string& name);

}  // namespace uccl::ep::transport::fabric
