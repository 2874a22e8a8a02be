// What one rank tells every other rank about itself (Buffer::localInfo), and its wire format. Plain C++ (no
// CUDA): IPC handles travel as opaque bytes, so the encoding is unit-tested on machines without a GPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::runtime {

inline constexpr uint64_t kPeerInfoMagic = 0x4f464e4950455055ull;  // "UPEPINFO" read little-endian
inline constexpr uint32_t kPeerInfoVersion = 3;  // 3: the gpu buffer travels as a SharedAllocation blob

struct PeerInfo {
  uint32_t version = kPeerInfoVersion;
  int rank = 0;
  int world = 1;
  int ranks_per_node = 1;
  int64_t num_nvl_bytes = 0;
  int64_t num_rdma_bytes = 0;
  std::string hostname;
  std::string boot_id;          // /proc/sys/kernel/random/boot_id: unique per host and boot
  std::string pci_bus_id;       // this rank's GPU
  std::string gpu_ipc_handle;   // SharedAllocation::exportBlob() of the gpu buffer (always a CUDA IPC handle)
  std::string nvl_ipc_handle;   // SharedAllocation::exportBlob() of the nvl buffer (ipc, fd or fabric handle);
                                // empty when num_nvl_bytes == 0
  bool uses_proxy = false;
  bool normal_mnnvl = false;    // UCCL_EP_NORMAL_MNNVL / DEEP_EP_NORMAL_MNNVL set on this rank
  std::string fabric_domain;    // the GPU's NVLink fabric domain from the driver (fabricDomainId), "" when none
  transport::Blob proxy_info;   // ProxyGroup::localInfo(); empty without proxies
};

transport::Blob encodePeerInfo(const PeerInfo& info);
// `rank` is the index this blob came in at (for the messages only). Throws uccl::ep::Error naming the rank when
// the blob is truncated, has trailing bytes, a wrong magic or another version.
PeerInfo decodePeerInfo(const transport::Blob& blob, int rank);

// Checks a decoded peer against this rank: it sits at `index`, and agrees on world, ranks_per_node, buffer
// sizes and whether proxies run. Throws uccl::ep::Error naming the peer and the field.
void checkPeerInfo(const PeerInfo& peer, int index, const PeerInfo& self);

// Every rank reports the same non-empty NVLink fabric domain: the driver says the whole group is one NVLink
// domain (an MNNVL system such as GB200 NVL72), without UCCL_EP_NORMAL_MNNVL.
bool oneFabricDomain(const std::vector<PeerInfo>& infos);

// Same machine: equal boot ids when both ranks know theirs, else equal host names.
bool sameHost(const PeerInfo& a, const PeerInfo& b);
// "host (boot id ...)", for messages.
std::string describeHost(const PeerInfo& info);

// The normal-mode path within the NVLink domain (kernels/intranode.hpp). `peers` are the ranks this rank exchanges
// rows with (itself included). Pipelined when no two of them run on one GPU (same host, same PCI bus id), staged
// otherwise: the pipelined kernels wait for other ranks' blocks, which ranks sharing a GPU (MPS) cannot promise.
// `setting` is UCCL_EP_NORMAL_PATH: "auto", "staged" (always allowed) or "pipelined" (refused, naming the two
// ranks, where a GPU is shared). `why` says what decided, for Buffer.normal_path and the benches.
struct NormalPath {
  bool pipelined = false;
  std::string why;
};
NormalPath decideNormalPath(const std::vector<PeerInfo>& peers, const std::string& setting);

// How many of `peers` run on `self`'s GPU (same host, same PCI bus id), itself included. Kernels whose blocks wait
// for other ranks size their grids by it, so that the launches of all ranks sharing a GPU fit on it at once.
int ranksOnGpu(const std::vector<PeerInfo>& peers, const PeerInfo& self);

// This machine's identity, as localInfo() reports it.
std::string localHostname();
std::string localBootId();  // empty when /proc does not have it

}  // namespace uccl::ep::runtime
