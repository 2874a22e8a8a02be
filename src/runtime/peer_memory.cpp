// runtime::Buffer::connect: every peer's info checked, its shared memory mapped through one mechanism
// (PeerMapping over the blob its SharedAllocation exported), the device peer tables filled, the proxies connected.
//
// Which peer pieces are mapped, and why:
//   gpu buffer  every peer of this node: low-latency rows and signals go straight over NVLink within a node.
//   nvl buffer  every peer of this rank's NVLink domain (its node, or the whole group when the domain spans nodes):
//               the normal-mode kernels read and write peers' nvl buffers directly.
#include <string>
#include <utility>
#include <vector>

#include "runtime/buffer_impl.hpp"
#include "runtime/cuda_check.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::runtime {

namespace {

template <typename T>
void upload(DeviceArray<T>& dst, const std::vector<T>& src, int rank, const char* what) {
  UCCL_EP_CUDA_OR_THROW(cudaMemcpy(dst.get(), src.data(), sizeof(T) * src.size(), cudaMemcpyHostToDevice),
                        "rank {}: connect(): {}", rank, what);
}

}  // namespace

void Buffer::Impl::mapPeers(const std::vector<PeerInfo>& peers) {
  const int world = cfg.num_ranks;
  const int rank = cfg.rank;
  std::vector<uint8_t*> gpu_base(world, nullptr);
  std::vector<uint8_t*> nvl_base(world, nullptr);
  gpu_base[rank] = gpuBuffer();
  nvl_base[rank] = nvlBuffer();
  auto map = [&](const std::string& blob, int p, const char* what) -> uint8_t* {
    try {
      peer_maps.push_back(PeerMapping::open(blob, cfg.device, p, env().timeoutNs()));
    } catch (const TimeoutError&) {
      throw;
    } catch (const Error& e) {
      UCCL_EP_THROW("rank {} (device {}, {}): cannot map the {} of rank {} (GPU {}, {}): {}", rank, cfg.device,
                    self.pci_bus_id, what, p, peers[p].pci_bus_id, describeHost(peers[p]), e.what());
    }
    return static_cast<uint8_t*>(peer_maps.back()->ptr());
  };
  const bool fabric = nvl_alloc && nvl_alloc->kind() == HandleKind::kFabric;
  for (int p = 0; p < world; ++p) {
    if (p == rank || !topo.inNvlDomain(rank, p)) continue;
    // CUDA IPC and POSIX fds reach this host only; across hosts only fabric handles map (an MNNVL domain).
    if (!sameHost(peers[p], self) && (topo.sameNode(rank, p) || (cfg.num_nvl_bytes > 0 && !fabric))) {
      UCCL_EP_THROW("rank {} runs on host {} and rank {} on host {}, but {}: set UCCL_EP_RANKS_PER_NODE (or the "
                    "launcher's local world size) to the ranks per host, and share the nvl buffer through fabric "
                    "handles across hosts (UCCL_EP_MEM_HANDLE=fabric, IMEX channels)",
                    p, describeHost(peers[p]), rank, describeHost(self),
                    topo.sameNode(rank, p) ? fmt::format("the node layout puts both on node {}", topo.nodeOf(rank))
                                           : fmt::format("the nvl buffer is shared through {} handles, which reach "
                                                         "one host only",
                                                         toString(nvl_alloc ? nvl_alloc->kind() : HandleKind::kCudaIpc)));
    }
  }
  for (int p = 0; p < world; ++p) {
    if (p == rank) continue;
    if (topo.sameNode(rank, p)) gpu_base[p] = map(peers[p].gpu_ipc_handle, p, "gpu buffer");
    if (cfg.num_nvl_bytes > 0 && topo.inNvlDomain(rank, p)) nvl_base[p] = map(peers[p].nvl_ipc_handle, p, "nvl buffer");
  }

  // Device peer tables. Low latency: NVLink peers only (self included); the rest go through the proxy.
  std::vector<uint8_t*> table_base(world, nullptr);
  std::vector<int64_t*> table_signals(world, nullptr);
  for (int p = 0; p < world; ++p) {
    if (!isLowLatencyNvlPeer(p) || gpu_base[p] == nullptr) continue;
    table_base[p] = gpu_base[p];
    table_signals[p] = reinterpret_cast<int64_t*>(gpu_base[p] + cfg.num_rdma_bytes);
  }
  upload(*peer_gpu_base, table_base, rank, "peer table");
  upload(*peer_gpu_signals, table_signals, rank, "peer table");
  upload(*peer_nvl, nvl_base, rank, "nvl peer table");
}

void Buffer::connect(const std::vector<std::string>& infos) {
  Impl& m = *impl_;
  m.requireUsable("connect()");
  if (m.connected) UCCL_EP_THROW("rank {}: connect() called twice", m.cfg.rank);
  const int world = m.cfg.num_ranks;
  const int rank = m.cfg.rank;
  if (infos.size() != static_cast<size_t>(world)) {
    UCCL_EP_THROW_ARG("rank {}: connect() got {} infos for a world of {} ranks (expected one per rank, index = rank)",
                      rank, infos.size(), world);
  }
  UCCL_EP_CUDA_OR_THROW(cudaSetDevice(m.cfg.device), "rank {}: connect(): selecting device {}", rank, m.cfg.device);

  std::vector<PeerInfo> peers;
  peers.reserve(world);
  for (int p = 0; p < world; ++p) {
    peers.push_back(decodePeerInfo(transport::Blob(infos[p].begin(), infos[p].end()), p));
    checkPeerInfo(peers.back(), p, m.self);
  }

  const Topology decided = m.topo;
  if (!m.topo.nvl_domain_spans_nodes && m.topo.num_nodes > 1 && oneFabricDomain(peers)) {
    // The driver puts every GPU in one NVLink domain: the domain spans the nodes, as UCCL_EP_NORMAL_MNNVL=1 says.
    log().info("rank {}: all {} ranks report NVLink fabric domain {}: the NVLink domain spans the {} nodes", rank,
               world, m.self.fabric_domain, m.topo.num_nodes);
    m.topo.nvl_domain_spans_nodes = true;
    m.topo.nvl_domain_source = "NVLink fabric domain " + m.self.fabric_domain;
  }
  std::vector<PeerInfo> domain;  // the ranks this one exchanges normal-mode rows with
  for (int p = 0; p < world; ++p) {
    if (m.topo.inNvlDomain(rank, p)) domain.push_back(peers[p]);
  }
  const NormalPath path = decideNormalPath(domain, env().normal_path);
  try {
    m.mapPeers(peers);
    if (m.proxies) {
      std::vector<transport::Blob> blobs;
      blobs.reserve(world);
      for (auto& peer : peers) blobs.push_back(std::move(peer.proxy_info));
      m.proxies->connect(blobs);
      m.proxies->start();
    }
  } catch (...) {
    // Leave the Buffer as before connect(): unmap what was mapped here.
    m.peer_maps.clear();
    m.topo = decided;
    throw;
  }
  m.normal_path = path;
  m.ranks_on_gpu = ranksOnGpu(peers, m.self);
  m.connected = true;
}

}  // namespace uccl::ep::runtime
