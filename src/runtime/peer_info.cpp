#include "runtime/peer_info.hpp"

#include <unistd.h>

#include <climits>
#include <fstream>
#include <string>

#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {
namespace {

using transport::Blob;

void appendString(Blob& out, const std::string& s) { transport::appendBlob(out, Blob(s.begin(), s.end())); }

std::string readString(const Blob& in, size_t* off) {
  const Blob b = transport::readBlob(in, off);
  return std::string(b.begin(), b.end());
}

int readInt(const Blob& in, size_t* off, const char* field, int rank) {
  const int64_t v = static_cast<int64_t>(transport::readU64(in, off));
  if (v < INT_MIN || v > INT_MAX) UCCL_EP_THROW("info of rank {}: field {} = {} is out of range", rank, field, v);
  return static_cast<int>(v);
}

}  // namespace

Blob encodePeerInfo(const PeerInfo& info) {
  Blob out;
  transport::appendU64(out, kPeerInfoMagic);
  transport::appendU64(out, info.version);
  transport::appendU64(out, static_cast<uint64_t>(static_cast<int64_t>(info.rank)));
  transport::appendU64(out, static_cast<uint64_t>(static_cast<int64_t>(info.world)));
  transport::appendU64(out, static_cast<uint64_t>(static_cast<int64_t>(info.ranks_per_node)));
  transport::appendU64(out, static_cast<uint64_t>(info.num_nvl_bytes));
  transport::appendU64(out, static_cast<uint64_t>(info.num_rdma_bytes));
  appendString(out, info.hostname);
  appendString(out, info.boot_id);
  appendString(out, info.pci_bus_id);
  appendString(out, info.gpu_ipc_handle);
  appendString(out, info.nvl_ipc_handle);
  transport::appendU64(out, info.uses_proxy ? 1 : 0);
  transport::appendU64(out, info.normal_mnnvl ? 1 : 0);
  appendString(out, info.fabric_domain);
  transport::appendBlob(out, info.proxy_info);
  return out;
}

PeerInfo decodePeerInfo(const Blob& blob, int rank) {
  PeerInfo info;
  size_t off = 0;
  try {
    const uint64_t magic = transport::readU64(blob, &off);
    if (magic != kPeerInfoMagic) {
      UCCL_EP_THROW("it does not start with the uccl-ep peer info tag ({:#x}, expected {:#x}); was it made by "
                    "Buffer.localInfo() of the same library?",
                    magic, kPeerInfoMagic);
    }
    const uint64_t version = transport::readU64(blob, &off);
    if (version != kPeerInfoVersion) {
      UCCL_EP_THROW("format version {} (this rank speaks version {}): every rank must run the same uccl-ep build",
                    version, kPeerInfoVersion);
    }
    info.version = static_cast<uint32_t>(version);
    info.rank = readInt(blob, &off, "rank", rank);
    info.world = readInt(blob, &off, "world", rank);
    info.ranks_per_node = readInt(blob, &off, "ranks_per_node", rank);
    info.num_nvl_bytes = static_cast<int64_t>(transport::readU64(blob, &off));
    info.num_rdma_bytes = static_cast<int64_t>(transport::readU64(blob, &off));
    info.hostname = readString(blob, &off);
    info.boot_id = readString(blob, &off);
    info.pci_bus_id = readString(blob, &off);
    info.gpu_ipc_handle = readString(blob, &off);
    info.nvl_ipc_handle = readString(blob, &off);
    const uint64_t uses_proxy = transport::readU64(blob, &off);
    if (uses_proxy > 1) UCCL_EP_THROW("uses_proxy = {} (expected 0 or 1)", uses_proxy);
    info.uses_proxy = uses_proxy == 1;
    const uint64_t mnnvl = transport::readU64(blob, &off);
    if (mnnvl > 1) UCCL_EP_THROW("normal_mnnvl = {} (expected 0 or 1)", mnnvl);
    info.normal_mnnvl = mnnvl == 1;
    info.fabric_domain = readString(blob, &off);
    info.proxy_info = transport::readBlob(blob, &off);
    if (off != blob.size()) UCCL_EP_THROW("{} trailing bytes after the last field", blob.size() - off);
  } catch (const Error& e) {
    UCCL_EP_THROW("malformed buffer info from rank {} ({} bytes): {}", rank, blob.size(), e.what());
  }
  return info;
}

void checkPeerInfo(const PeerInfo& peer, int index, const PeerInfo& self) {
  if (peer.rank != index) {
    UCCL_EP_THROW("buffer info at index {} comes from rank {}: infos must be ordered by rank (all-gather over the "
                  "same group the Buffer was built with)",
                  index, peer.rank);
  }
  if (peer.world != self.world) {
    UCCL_EP_THROW("rank {} was built for a world of {} ranks, rank {} for {}", index, peer.world, self.rank,
                  self.world);
  }
  if (peer.ranks_per_node != self.ranks_per_node) {
    UCCL_EP_THROW("rank {} has {} ranks per node, rank {} has {}: every rank must see the same node layout "
                  "(UCCL_EP_RANKS_PER_NODE / local world size)",
                  index, peer.ranks_per_node, self.rank, self.ranks_per_node);
  }
  if (peer.num_nvl_bytes != self.num_nvl_bytes || peer.num_rdma_bytes != self.num_rdma_bytes) {
    UCCL_EP_THROW("rank {} has num_nvl_bytes={}, num_rdma_bytes={}; rank {} has num_nvl_bytes={}, "
                  "num_rdma_bytes={}: every rank must build its Buffer with the same sizes",
                  index, peer.num_nvl_bytes, peer.num_rdma_bytes, self.rank, self.num_nvl_bytes, self.num_rdma_bytes);
  }
  if (peer.uses_proxy != self.uses_proxy) {
    UCCL_EP_THROW("rank {} {} and rank {} {}: the ranks disagree on low_latency_mode, "
                  "allow_nvlink_for_low_latency_mode or the node layout",
                  index, peer.uses_proxy ? "runs proxies" : "runs no proxies", self.rank,
                  self.uses_proxy ? "does" : "does not");
  }
  if (peer.uses_proxy && peer.proxy_info.empty()) UCCL_EP_THROW("rank {} runs proxies but sent no proxy info", index);
  if (peer.normal_mnnvl != self.normal_mnnvl) {
    UCCL_EP_THROW("rank {} {} UCCL_EP_NORMAL_MNNVL (or DEEP_EP_NORMAL_MNNVL) and rank {} {}: set it the same way "
                  "on every rank",
                  index, peer.normal_mnnvl ? "sets" : "does not set", self.rank, self.normal_mnnvl ? "does" : "does not");
  }
}

bool oneFabricDomain(const std::vector<PeerInfo>& infos) {
  if (infos.empty() || infos.front().fabric_domain.empty()) return false;
  for (const PeerInfo& i : infos) {
    if (i.fabric_domain != infos.front().fabric_domain) return false;
  }
  return true;
}

bool sameHost(const PeerInfo& a, const PeerInfo& b) {
  if (!a.boot_id.empty() && !b.boot_id.empty()) return a.boot_id == b.boot_id;
  return a.hostname == b.hostname;
}

NormalPath decideNormalPath(const std::vector<PeerInfo>& peers, const std::string& setting) {
  if (setting == "staged") return {false, "staged (UCCL_EP_NORMAL_PATH=staged)"};
  for (size_t a = 0; a < peers.size(); ++a) {
    for (size_t b = a + 1; b < peers.size(); ++b) {
      if (!sameHost(peers[a], peers[b]) || peers[a].pci_bus_id != peers[b].pci_bus_id) continue;
      if (setting == "pipelined") {
        UCCL_EP_THROW_ARG("UCCL_EP_NORMAL_PATH=pipelined, but ranks {} and {} share GPU {} on host {}: the pipelined "
                          "kernels need one GPU per rank (unset it, or set auto or staged)",
                          peers[a].rank, peers[b].rank, peers[a].pci_bus_id, describeHost(peers[a]));
      }
      return {false, fmt::format("staged (ranks {} and {} share GPU {})", peers[a].rank, peers[b].rank,
                                 peers[a].pci_bus_id)};
    }
  }
  return {true, setting == "pipelined" ? "pipelined (UCCL_EP_NORMAL_PATH=pipelined)" : "pipelined (one GPU per rank)"};
}

int ranksOnGpu(const std::vector<PeerInfo>& peers, const PeerInfo& self) {
  int n = 0;
  for (const PeerInfo& p : peers) n += sameHost(p, self) && p.pci_bus_id == self.pci_bus_id;
  return n > 0 ? n : 1;
}

std::string describeHost(const PeerInfo& info) {
  return fmt::format("'{}' (boot id {})", info.hostname, info.boot_id.empty() ? "unknown" : info.boot_id);
}

std::string localHostname() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

std::string localBootId() {
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (!f || !std::getline(f, id)) return "";
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

}  // namespace uccl::ep::runtime
