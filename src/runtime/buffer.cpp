#include "runtime/buffer.hpp"

#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/buffer_impl.hpp"
#include "runtime/cuda_check.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::runtime {

namespace ll = kernels::ll;
namespace intranode = kernels::intranode;

namespace {

// Logs instead of throwing: for the tear-down path.
void logCuda(cudaError_t e, const char* what) { runtime::logCuda(e, what, "Buffer destroy"); }

constexpr int64_t kSizeUnit = 128;
constexpr uint32_t kRingCapacityLog2 = 12;

const char* opStep(int32_t op) {
  switch (op) {
    case ll::kOpDispatchSend: return "low-latency dispatch (send)";
    case ll::kOpDispatchRecv: return "low-latency dispatch (receive)";
    case ll::kOpCombineSend: return "low-latency combine (send)";
    case ll::kOpCombineRecv: return "low-latency combine (receive)";
    case intranode::kOpReuse: return "normal-mode dispatch/combine (waiting to reuse the nvl buffer)";
    case intranode::kOpReady: return "normal-mode dispatch/combine (waiting for the peers' data)";
    case intranode::kOpWorstOverflow: return "normal-mode dispatch (num_worst_tokens)";
    default: return "low-latency kernel (unknown step)";
  }
}

const char* ringStatusName(uint32_t status) {
  switch (static_cast<ring::Status>(status)) {
    case ring::Status::kOk: return "ok";
    case ring::Status::kTimeout: return "timed out: the proxy did not take or complete the ring's descriptors";
    case ring::Status::kConsumerError: return "the proxy consuming the ring failed";
  }
  return "unknown ring status";
}

}  // namespace


namespace {

void validateConfig(const BufferConfig& c) {
  if (c.world < 1) UCCL_EP_THROW("Buffer: world size {} (expected at least 1)", c.world);
  if (c.rank < 0 || c.rank >= c.world) UCCL_EP_THROW("Buffer: rank {} is not in [0, {})", c.rank, c.world);
  if (c.ranks_per_node < 1) {
    UCCL_EP_THROW("Buffer: ranks_per_node {} (expected at least 1; ranks [n * ranks_per_node, (n + 1) * "
                  "ranks_per_node) form node n)",
                  c.ranks_per_node);
  }
  if (c.world > static_cast<int>(ring::kMaxRanks)) {
    UCCL_EP_THROW("Buffer: world size {} exceeds the {} ranks a descriptor can name", c.world, ring::kMaxRanks);
  }
  if (c.num_nvl_bytes < 0 || c.num_nvl_bytes % kSizeUnit != 0) {
    UCCL_EP_THROW("Buffer: num_nvl_bytes = {} must be a non-negative multiple of {}", c.num_nvl_bytes, kSizeUnit);
  }
  if (c.num_rdma_bytes < 0 || c.num_rdma_bytes % kSizeUnit != 0) {
    UCCL_EP_THROW("Buffer: num_rdma_bytes = {} must be a non-negative multiple of {}", c.num_rdma_bytes, kSizeUnit);
  }
  int count = 0;
  UCCL_EP_CUDA_OR_THROW(cudaGetDeviceCount(&count), "Buffer (rank {}): counting CUDA devices", c.rank);
  if (c.device < 0 || c.device >= count) {
    UCCL_EP_THROW("Buffer (rank {}): CUDA device {} does not exist ({} visible)", c.rank, c.device, count);
  }
}

// UCCL_EP_NORMAL_MNNVL=1 or DEEP_EP_NORMAL_MNNVL=1: the whole group is one NVLink domain for normal mode.
bool normalMnnvlFromEnv() {
  for (const char* name : {"UCCL_EP_NORMAL_MNNVL", "DEEP_EP_NORMAL_MNNVL"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    const std::string s(v);
    if (s == "1" || s == "true" || s == "True") return true;
    if (s != "0" && s != "false" && s != "False") UCCL_EP_THROW("{}={}: expected 0 or 1", name, s);
  }
  return false;
}

// How the nvl buffer is shared. UCCL_EP_MEM_HANDLE=ipc|fd|fabric forces a kind; otherwise CUDA IPC within a node,
// and under MNNVL fabric handles where the device has them, else POSIX fds (one host: the same >8-rank path).
// A GPU on an NVLink fabric (the driver reports a fabric domain) shares through fabric handles where it may create
// them, so that the group can turn out to be one domain at connect() without a second allocation.
HandleKind nvlHandleKind(bool mnnvl, bool on_fabric, int device) {
  if (const std::optional<HandleKind> forced = memHandleSetting()) return *forced;
  if (mnnvl) return fabricHandlesSupported(device) ? HandleKind::kFabric : HandleKind::kPosixFd;
  if (on_fabric && fabricHandlesSupported(device)) return HandleKind::kFabric;
  return HandleKind::kCudaIpc;
}

std::string ipcHandleBytes(void* ptr, const char* what, int rank) {
  cudaIpcMemHandle_t h;
  UCCL_EP_CUDA_OR_THROW(cudaIpcGetMemHandle(&h, ptr), "Buffer (rank {}): IPC handle of the {}", rank, what);
  return std::string(reinterpret_cast<const char*>(&h), sizeof(h));
}

}  // namespace

void Buffer::Impl::release() noexcept {
  if (destroyed) return;
  destroyed = true;
  connected = false;
  if (!cuda_used) return;  // the configuration was rejected before anything was allocated
  try {
    logCuda(cudaSetDevice(cfg.device), "cudaSetDevice");
    // Kernels may still be using the memory, and proxies may still be draining rings.
    logCuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    if (proxies) {
      try {
        proxies->stop();
      } catch (const std::exception& e) {
        log().error("uccl-ep Buffer destroy (rank {}): stopping the proxies failed: {}", cfg.rank, e.what());
      }
    }
    for (void* p : opened_ipc) logCuda(cudaIpcCloseMemHandle(p), "cudaIpcCloseMemHandle");
    opened_ipc.clear();
    nvl_peers.clear();
    // The proxies deregister the regions and drop the rings before the memory behind them goes.
    proxies.reset();
    ring_views.reset();
    rings.clear();
    rdma_signals.reset();
    rdma_host.reset();
    rdma_base = nullptr;
    peer_gpu_base.reset();
    peer_gpu_signals.reset();
    peer_nvl.reset();
    host_counts.reset();
    scratch.reset();
    mask_values.reset();
    mask.reset();
    error.reset();
    if (gpu_buffer != nullptr) logCuda(cudaFree(gpu_buffer), "cudaFree(gpu buffer)");
    gpu_buffer = nullptr;
    nvl_alloc.reset();
    nvl_buffer = nullptr;
  } catch (const std::exception& e) {
    log().error("uccl-ep Buffer destroy (rank {}): {}", cfg.rank, e.what());
  } catch (...) {
    log().error("uccl-ep Buffer destroy (rank {}): unknown exception", cfg.rank);
  }
}

Buffer::Buffer(const BufferConfig& config) : impl_(std::make_unique<Impl>()) {
  validateConfig(config);
  Impl& m = *impl_;
  m.cfg = config;
  UCCL_EP_CUDA_OR_THROW(cudaSetDevice(config.device), "Buffer (rank {}): selecting device {}", config.rank,
                        config.device);
  m.cuda_used = true;
  UCCL_EP_CUDA_OR_THROW(cudaDeviceGetAttribute(&m.num_sms, cudaDevAttrMultiProcessorCount, config.device),
                        "Buffer (rank {}): SM count", config.rank);
  const int world = config.world;
  m.signal_count = static_cast<size_t>(4) * ll::kMaxExpertsPerRank * world;
  m.scratch_per_half = static_cast<size_t>(ll::kMaxTokensPerRank) * ll::kMaxTopk +
                       static_cast<size_t>(ll::kMaxExpertsPerRank) * world;

  // nvl buffer (exported to the NVLink domain) and gpu buffer (+ signal words, exported through CUDA IPC).
  m.normal_mnnvl = normalMnnvlFromEnv();
  m.self.normal_mnnvl = m.normal_mnnvl;
  m.self.fabric_domain = fabricDomainId(config.device);
  if (config.num_nvl_bytes > 0) {
    // Zeroed by create(): the normal-mode kernels' sequence, ready and done words start at zero on every rank.
    m.nvl_alloc = SharedAllocation::create(static_cast<size_t>(config.num_nvl_bytes), config.device,
                                           nvlHandleKind(m.normal_mnnvl, !m.self.fabric_domain.empty(), config.device), config.rank);
    m.nvl_buffer = m.nvl_alloc->ptr();
  }
  m.peer_nvl = std::make_unique<DeviceArray<uint8_t*>>(world);
  m.host_counts = std::make_unique<Mapped<intranode::HostCounts>>(1);
  const size_t gpu_bytes = static_cast<size_t>(config.num_rdma_bytes) + m.signal_count * sizeof(int64_t);
  UCCL_EP_CUDA_OR_THROW(cudaMalloc(reinterpret_cast<void**>(&m.gpu_buffer), gpu_bytes),
                        "Buffer (rank {}): allocating the {}-byte gpu buffer", config.rank, gpu_bytes);
  UCCL_EP_CUDA_OR_THROW(cudaMemset(m.gpu_buffer, 0, gpu_bytes), "Buffer (rank {}): zeroing the gpu buffer",
                        config.rank);

  // Error record, mask, scratch, peer tables.
  m.error = std::make_unique<Mapped<ll::ErrorRecord>>(1);
  m.mask = std::make_unique<DeviceArray<int32_t>>(world);
  UCCL_EP_CUDA_OR_THROW(cudaMemset(m.mask->get(), 0, sizeof(int32_t) * world), "Buffer (rank {}): zeroing the mask",
                        config.rank);
  m.mask_values = std::make_unique<DeviceArray<int32_t>>(2);
  const int32_t values[2] = {0, 1};
  UCCL_EP_CUDA_OR_THROW(cudaMemcpy(m.mask_values->get(), values, sizeof(values), cudaMemcpyHostToDevice),
                        "Buffer (rank {}): mask constants", config.rank);
  m.scratch = std::make_unique<DeviceArray<int32_t>>(2 * m.scratch_per_half);
  UCCL_EP_CUDA_OR_THROW(cudaMemset(m.scratch->get(), 0, sizeof(int32_t) * 2 * m.scratch_per_half),
                        "Buffer (rank {}): zeroing the scratch", config.rank);
  m.peer_gpu_base = std::make_unique<DeviceArray<uint8_t*>>(world);
  m.peer_gpu_signals = std::make_unique<DeviceArray<int64_t*>>(world);
  UCCL_EP_CUDA_OR_THROW(cudaMemset(m.peer_gpu_base->get(), 0, sizeof(uint8_t*) * world),
                        "Buffer (rank {}): peer table", config.rank);
  UCCL_EP_CUDA_OR_THROW(cudaMemset(m.peer_gpu_signals->get(), 0, sizeof(int64_t*) * world),
                        "Buffer (rank {}): peer table", config.rank);

  // Proxies: when some peer is not written directly. In normal mode that is a peer on another node; in
  // low-latency mode also a same-node peer when NVLink is not allowed. Without an RDMA buffer there is nothing
  // for them to move.
  bool needs_proxy = false;
  for (int p = 0; p < world && !needs_proxy; ++p) {
    needs_proxy = config.low_latency_mode ? !m.isLowLatencyNvlPeer(p) : m.nodeOf(p) != m.nodeOf(config.rank);
  }
  if (needs_proxy && config.num_rdma_bytes == 0) {
    log().warn("uccl-ep Buffer (rank {}): peers on other nodes but num_rdma_bytes = 0: no proxies are started",
               config.rank);
    needs_proxy = false;
  }
  m.uses_proxy = needs_proxy;

  char bus_id[64] = {};
  UCCL_EP_CUDA_OR_THROW(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), config.device),
                        "Buffer (rank {}): PCI bus id of device {}", config.rank, config.device);

  if (m.uses_proxy) {
    proxy::ProxyConfig pc = proxy::ProxyConfig::fromEnv(config.rank, world);
    pc.gpu_pci_bus_id = bus_id;
    pc.gpu_device = config.device;
    pc.all_peers_local = (world + config.ranks_per_node - 1) / config.ranks_per_node == 1;
    m.proxies = std::make_unique<proxy::ProxyGroup>(pc);
    m.transport_name = m.proxies->transport(0).name();

    const size_t rdma_bytes = static_cast<size_t>(config.num_rdma_bytes);
    if (m.proxies->transport(0).capabilities() & transport::kGpuMemory) {
      m.proxies->addRegion(0, m.gpu_buffer, rdma_bytes, transport::MemoryKind::kDevice);
      m.rdma_base = m.gpu_buffer;
    } else {
      m.rdma_host = std::make_unique<Mapped<uint8_t>>(rdma_bytes);
      m.proxies->addRegion(0, m.rdma_host->host(), rdma_bytes, transport::MemoryKind::kHost);
      m.rdma_base = m.rdma_host->device();
    }
    m.rdma_signals = std::make_unique<Mapped<int64_t>>(m.signal_count);
    m.proxies->setSignalRegion(m.rdma_signals->host(), m.signal_count);

    const int num_rings = 2 * m.proxies->numThreads();
    std::vector<ring::RingView> views;
    for (int i = 0; i < num_rings; ++i) {
      m.rings.push_back(std::make_unique<GpuRing>(kRingCapacityLog2, static_cast<uint32_t>(i)));
      m.proxies->addRing(m.rings.back()->hostView(), proxy::RingKind::kLowLatency);
      views.push_back(m.rings.back()->deviceView());
    }
    m.ring_views = std::make_unique<DeviceArray<ring::RingView>>(views.size());
    UCCL_EP_CUDA_OR_THROW(
        cudaMemcpy(m.ring_views->get(), views.data(), sizeof(ring::RingView) * views.size(), cudaMemcpyHostToDevice),
        "Buffer (rank {}): ring table", config.rank);
  }

  // What localInfo() reports.
  m.self.rank = config.rank;
  m.self.world = world;
  m.self.ranks_per_node = config.ranks_per_node;
  m.self.num_nvl_bytes = config.num_nvl_bytes;
  m.self.num_rdma_bytes = config.num_rdma_bytes;
  m.self.hostname = localHostname();
  m.self.boot_id = localBootId();
  m.self.pci_bus_id = bus_id;
  m.self.gpu_ipc_handle = ipcHandleBytes(m.gpu_buffer, "gpu buffer", config.rank);
  if (m.nvl_alloc) m.self.nvl_ipc_handle = m.nvl_alloc->exportBlob();
  m.self.uses_proxy = m.uses_proxy;

  log().debug("uccl-ep Buffer rank {}/{} on device {} ({}): nvl {} B, rdma {} B, proxies: {}", config.rank, world,
              config.device, bus_id, config.num_nvl_bytes, config.num_rdma_bytes,
              m.uses_proxy ? m.transport_name : std::string("none"));
}

Buffer::~Buffer() {
  try {
    destroy();
  } catch (const std::exception& e) {
    log().error("uccl-ep Buffer destructor: {}", e.what());
  } catch (...) {
    log().error("uccl-ep Buffer destructor: unknown exception");
  }
}

std::string Buffer::localInfo() const {
  impl_->requireUsable("localInfo()");
  PeerInfo info = impl_->self;
  if (impl_->proxies) info.proxy_info = impl_->proxies->localInfo();
  const transport::Blob b = encodePeerInfo(info);
  return std::string(b.begin(), b.end());
}

void Buffer::connect(const std::vector<std::string>& infos) {
  Impl& m = *impl_;
  m.requireUsable("connect()");
  if (m.connected) UCCL_EP_THROW("rank {}: connect() called twice", m.cfg.rank);
  const int world = m.cfg.world;
  const int rank = m.cfg.rank;
  if (infos.size() != static_cast<size_t>(world)) {
    UCCL_EP_THROW("rank {}: connect() got {} infos for a world of {} ranks (expected one per rank, index = rank)",
                  rank, infos.size(), world);
  }
  UCCL_EP_CUDA_OR_THROW(cudaSetDevice(m.cfg.device), "rank {}: connect(): selecting device {}", rank, m.cfg.device);

  std::vector<PeerInfo> peers;
  peers.reserve(world);
  for (int p = 0; p < world; ++p) {
    peers.push_back(decodePeerInfo(transport::Blob(infos[p].begin(), infos[p].end()), p));
    checkPeerInfo(peers.back(), p, m.self);
  }

  if (!m.normal_mnnvl && m.numNodesOfLayout() > 1 && oneFabricDomain(peers)) {
    // The driver puts every GPU in one NVLink domain: normal mode maps every rank, as UCCL_EP_NORMAL_MNNVL=1 would.
    log().info("rank {}: all {} ranks report NVLink fabric domain {}: normal mode treats them as one NVLink domain",
               rank, world, m.self.fabric_domain);
    m.normal_mnnvl = true;
  }
  std::vector<uint8_t*> gpu_base(world, nullptr);
  std::vector<void*> nvl_base(world, nullptr);
  try {
    for (int p = 0; p < world; ++p) {
      if (p == rank) {
        gpu_base[p] = m.gpu_buffer;
        nvl_base[p] = m.nvl_buffer;
        continue;
      }
      if (!m.inNvlDomain(p)) continue;
      const PeerInfo& peer = peers[p];
      const bool fabric = m.nvl_alloc && m.nvl_alloc->kind() == HandleKind::kFabric;
      if (!sameHost(peer, m.self) && !(fabric && m.nodeOf(p) != m.nodeOf(rank))) {
        UCCL_EP_THROW("rank {} runs on host {} and rank {} on host {}, but the node layout ({} ranks per node) puts "
                      "both on node {}: set UCCL_EP_RANKS_PER_NODE (or the launcher's local world size) to the "
                      "number of ranks per host",
                      p, describeHost(peer), rank, describeHost(m.self), m.cfg.ranks_per_node, m.nodeOf(rank));
      }
      auto open = [&](const std::string& bytes, const char* what) -> void* {
        cudaIpcMemHandle_t h;
        if (bytes.size() != sizeof(h)) {
          UCCL_EP_THROW("rank {}: the {} IPC handle of rank {} has {} bytes (expected {})", rank, what, p,
                        bytes.size(), sizeof(h));
        }
        std::memcpy(&h, bytes.data(), sizeof(h));
        void* ptr = nullptr;
        const cudaError_t e = cudaIpcOpenMemHandle(&ptr, h, cudaIpcMemLazyEnablePeerAccess);
        if (e != cudaSuccess) {
          cudaGetLastError();  // a failed open is not sticky: clear it so the next CUDA call does not report it
          UCCL_EP_THROW("rank {} (device {}, {}): cannot map the {} of rank {} (GPU {}) through CUDA IPC: {} ({}). "
                        "Both ranks must run on the same host with peer access between their GPUs",
                        rank, m.cfg.device, m.self.pci_bus_id, what, p, peer.pci_bus_id, cudaGetErrorName(e),
                        cudaGetErrorString(e));
        }
        m.opened_ipc.push_back(ptr);
        return ptr;
      };
      if (m.nodeOf(p) == m.nodeOf(rank)) gpu_base[p] = static_cast<uint8_t*>(open(peer.gpu_ipc_handle, "gpu buffer"));
      if (m.cfg.num_nvl_bytes > 0) {
        m.nvl_peers.push_back(PeerMapping::open(peer.nvl_ipc_handle, m.cfg.device, p, env().timeoutNs()));
        nvl_base[p] = m.nvl_peers.back()->ptr();
      }
    }

    // Device peer tables: low-latency NVLink peers only (self included).
    std::vector<uint8_t*> table_base(world, nullptr);
    std::vector<int64_t*> table_signals(world, nullptr);
    for (int p = 0; p < world; ++p) {
      if (!m.isLowLatencyNvlPeer(p) || gpu_base[p] == nullptr) continue;
      table_base[p] = gpu_base[p];
      table_signals[p] = reinterpret_cast<int64_t*>(gpu_base[p] + m.cfg.num_rdma_bytes);
    }
    UCCL_EP_CUDA_OR_THROW(cudaMemcpy(m.peer_gpu_base->get(), table_base.data(), sizeof(uint8_t*) * world,
                                     cudaMemcpyHostToDevice),
                          "rank {}: connect(): peer table", rank);
    UCCL_EP_CUDA_OR_THROW(cudaMemcpy(m.peer_gpu_signals->get(), table_signals.data(), sizeof(int64_t*) * world,
                                     cudaMemcpyHostToDevice),
                          "rank {}: connect(): peer table", rank);
    std::vector<uint8_t*> table_nvl(world, nullptr);
    for (int p = 0; p < world; ++p) table_nvl[p] = static_cast<uint8_t*>(nvl_base[p]);
    UCCL_EP_CUDA_OR_THROW(
        cudaMemcpy(m.peer_nvl->get(), table_nvl.data(), sizeof(uint8_t*) * world, cudaMemcpyHostToDevice),
        "rank {}: connect(): nvl peer table", rank);

    if (m.proxies) {
      std::vector<transport::Blob> blobs;
      blobs.reserve(world);
      for (auto& peer : peers) blobs.push_back(std::move(peer.proxy_info));
      m.proxies->connect(blobs);
      m.proxies->start();
    }
  } catch (...) {
    // Leave the Buffer as before connect(): close what was opened here.
    for (void* ptr : m.opened_ipc) cudaIpcCloseMemHandle(ptr);
    m.opened_ipc.clear();
    m.nvl_peers.clear();
    throw;
  }
  m.connected = true;
}

bool Buffer::connected() const { return impl_->connected; }

void Buffer::destroy() { impl_->release(); }

int Buffer::rank() const { return impl_->cfg.rank; }
int Buffer::world() const { return impl_->cfg.world; }
int Buffer::nodeOf(int rank) const {
  UCCL_EP_CHECK(rank >= 0 && rank < impl_->cfg.world, "rank {} is not in [0, {})", rank, impl_->cfg.world);
  return impl_->nodeOf(rank);
}
int Buffer::numNodes() const { return impl_->numNodesOfLayout(); }
bool Buffer::isLowLatencyNvlPeer(int peer) const {
  UCCL_EP_CHECK(peer >= 0 && peer < impl_->cfg.world, "rank {} is not in [0, {})", peer, impl_->cfg.world);
  return impl_->isLowLatencyNvlPeer(peer);
}
bool Buffer::usesProxy() const { return impl_->uses_proxy; }
std::string Buffer::transportName() const { return impl_->transport_name; }

uintptr_t Buffer::nvlBufferPtr() const { return reinterpret_cast<uintptr_t>(impl_->nvl_buffer); }
uintptr_t Buffer::rdmaBufferPtr() const { return reinterpret_cast<uintptr_t>(impl_->gpu_buffer); }

ll::Context Buffer::Impl::context(int half, int max_tokens, int hidden, int num_experts) const {
  requireConnected("a low-latency call");
  const int world = cfg.world;
  if (!cfg.low_latency_mode) {
    UCCL_EP_THROW("rank {}: low-latency call on a Buffer built with low_latency_mode=False", cfg.rank);
  }
  if (half != 0 && half != 1) UCCL_EP_THROW("rank {}: buffer half {} (expected 0 or 1)", cfg.rank, half);
  if (max_tokens < 1 || max_tokens > ll::kMaxTokensPerRank) {
    UCCL_EP_THROW("num_max_dispatch_tokens_per_rank = {} (expected 1 to {})", max_tokens, ll::kMaxTokensPerRank);
  }
  if (hidden < ll::kMinHidden || hidden > ll::kMaxHidden || hidden % ll::kChannelsPerScale != 0) {
    UCCL_EP_THROW("hidden = {} (expected a multiple of {} between {} and {})", hidden, ll::kChannelsPerScale,
                  ll::kMinHidden, ll::kMaxHidden);
  }
  if (num_experts <= 0 || num_experts % world != 0) {
    UCCL_EP_THROW("num_experts = {} (expected a positive multiple of the {} ranks)", num_experts, world);
  }
  if (num_experts / world > ll::kMaxExpertsPerRank) {
    UCCL_EP_THROW("num_experts = {} gives {} experts per rank (at most {} supported)", num_experts,
                  num_experts / world, ll::kMaxExpertsPerRank);
  }
  ll::Context c;
  c.layout = ll::makeLayout(max_tokens, hidden, world, num_experts);
  if (c.layout.totalBytes() > static_cast<size_t>(cfg.num_rdma_bytes)) {
    UCCL_EP_THROW("low-latency mode with num_max_dispatch_tokens_per_rank={}, hidden={}, num_ranks={}, "
                  "num_experts={} needs num_rdma_bytes >= {} (Buffer.get_low_latency_rdma_size_hint), the Buffer "
                  "has {}",
                  max_tokens, hidden, world, num_experts, c.layout.totalBytes(), cfg.num_rdma_bytes);
  }
  if (c.layout.totalSignals() > signal_count) {
    UCCL_EP_THROW("low-latency layout needs {} signal words, the Buffer has {}", c.layout.totalSignals(),
                  signal_count);
  }
  if (ll::scratchInts(c.layout) > scratch_per_half) {
    UCCL_EP_THROW("low-latency layout needs {} scratch words per half, the Buffer has {}", ll::scratchInts(c.layout),
                  scratch_per_half);
  }
  c.rank = cfg.rank;
  c.half = half;
  c.gpu_base = gpu_buffer;
  c.gpu_signals = gpuSignals();
  c.rdma_base = rdma_base;
  c.rdma_signals = rdma_signals ? rdma_signals->device() : nullptr;
  c.peer_gpu_base = peer_gpu_base->get();
  c.peer_gpu_signals = peer_gpu_signals->get();
  c.rings = ring_views ? ring_views->get() : nullptr;
  c.num_rings = static_cast<int>(rings.size());
  c.rdma_region = 0;
  c.mask = mask->get();
  c.enable_shrink = cfg.enable_shrink;
  c.error = error->device();
  c.timeout_ns = env().timeoutNs();
  c.scratch = scratch->get() + static_cast<size_t>(half) * scratch_per_half;
  c.num_sms = num_sms;
  return c;
}

ll::Context Buffer::lowLatencyContext(int half, int max_tokens, int hidden, int num_experts) const {
  return impl_->context(half, max_tokens, hidden, num_experts);
}

uintptr_t Buffer::lowLatencyCombineSendPtr(int half, int max_tokens, int hidden, int num_experts) const {
  const ll::Context c = impl_->context(half, max_tokens, hidden, num_experts);
  const uint8_t* base = c.rdma_base != nullptr ? c.rdma_base : c.gpu_base;
  return reinterpret_cast<uintptr_t>(base + c.layout.halfOffset(half) + c.layout.send_off);
}

void Buffer::lowLatencyDispatch(int half, int max_tokens, int hidden, int num_experts,
                                const ll::DispatchArgs& args, ll::Phase phase, uintptr_t stream) {
  checkErrors();
  const ll::Context c = impl_->context(half, max_tokens, hidden, num_experts);
  ll::launchDispatch(c, args, phase, reinterpret_cast<void*>(stream));
}

void Buffer::lowLatencyCombine(int half, int max_tokens, int hidden, int num_experts, const ll::CombineArgs& args,
                               ll::Phase phase, uintptr_t stream) {
  checkErrors();
  const ll::Context c = impl_->context(half, max_tokens, hidden, num_experts);
  ll::launchCombine(c, args, phase, reinterpret_cast<void*>(stream));
}

void Buffer::cleanLowLatencyBuffer(uintptr_t stream) {
  Impl& m = *impl_;
  m.requireConnected("clean_low_latency_buffer");
  checkErrors();
  auto s = reinterpret_cast<cudaStream_t>(stream);
  UCCL_EP_CUDA_OR_THROW(cudaMemsetAsync(m.gpuSignals(), 0, m.signal_count * sizeof(int64_t), s),
                        "rank {}: clean_low_latency_buffer: signal words", m.cfg.rank);
  UCCL_EP_CUDA_OR_THROW(cudaMemsetAsync(m.scratch->get(), 0, 2 * m.scratch_per_half * sizeof(int32_t), s),
                        "rank {}: clean_low_latency_buffer: scratch", m.cfg.rank);
  if (m.rdma_signals) {
    // Host-mapped words the proxies add to: zeroed from the CPU once earlier work on the stream is done.
    UCCL_EP_CUDA_OR_THROW(cudaStreamSynchronize(s), "rank {}: clean_low_latency_buffer: stream", m.cfg.rank);
    std::memset(static_cast<void*>(m.rdma_signals->host()), 0, m.signal_count * sizeof(int64_t));
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

void Buffer::updateMask(int rank, bool masked, uintptr_t stream) {
  Impl& m = *impl_;
  m.requireUsable("low_latency_update_mask_buffer");
  if (!m.cfg.enable_shrink) UCCL_EP_THROW("low_latency_update_mask_buffer needs a Buffer built with enable_shrink=True");
  if (rank < 0 || rank >= m.cfg.world) {
    UCCL_EP_THROW("low_latency_update_mask_buffer: rank {} is not in [0, {})", rank, m.cfg.world);
  }
  // Copied from a device constant: safe under graph capture and with no host memory to keep alive.
  UCCL_EP_CUDA_OR_THROW(cudaMemcpyAsync(m.mask->get() + rank, m.mask_values->get() + (masked ? 1 : 0),
                                        sizeof(int32_t), cudaMemcpyDeviceToDevice,
                                        reinterpret_cast<cudaStream_t>(stream)),
                        "rank {}: low_latency_update_mask_buffer", m.cfg.rank);
}

void Buffer::queryMask(uintptr_t out_int32_device, uintptr_t stream) const {
  const Impl& m = *impl_;
  m.requireUsable("low_latency_query_mask_buffer");
  if (!m.cfg.enable_shrink) UCCL_EP_THROW("low_latency_query_mask_buffer needs a Buffer built with enable_shrink=True");
  UCCL_EP_CUDA_OR_THROW(cudaMemcpyAsync(reinterpret_cast<void*>(out_int32_device), m.mask->get(),
                                        sizeof(int32_t) * m.cfg.world, cudaMemcpyDeviceToDevice,
                                        reinterpret_cast<cudaStream_t>(stream)),
                        "rank {}: low_latency_query_mask_buffer", m.cfg.rank);
}

void Buffer::cleanMask(uintptr_t stream) {
  Impl& m = *impl_;
  m.requireUsable("low_latency_clean_mask_buffer");
  if (!m.cfg.enable_shrink) UCCL_EP_THROW("low_latency_clean_mask_buffer needs a Buffer built with enable_shrink=True");
  UCCL_EP_CUDA_OR_THROW(
      cudaMemsetAsync(m.mask->get(), 0, sizeof(int32_t) * m.cfg.world, reinterpret_cast<cudaStream_t>(stream)),
      "rank {}: low_latency_clean_mask_buffer", m.cfg.rank);
}

void Buffer::checkErrors() const {
  const Impl& m = *impl_;
  m.requireUsable("checkErrors()");
  const ll::ErrorRecord* rec = m.error->host();
  // Written by the GPU through the mapping: read the code first (acquire), then the fields it publishes.
  const int32_t code = __atomic_load_n(&rec->code, __ATOMIC_ACQUIRE);
  const std::string proxy_error = (m.proxies && m.proxies->hasError()) ? m.proxies->firstError() : std::string();
  if (code == ll::kNoError) {
    if (!proxy_error.empty()) UCCL_EP_THROW("rank {}: proxy failed: {}", m.cfg.rank, proxy_error);
    return;
  }
  const int32_t peer = __atomic_load_n(&rec->peer, __ATOMIC_ACQUIRE);
  const int32_t expert = __atomic_load_n(&rec->expert, __ATOMIC_ACQUIRE);
  const int32_t op = __atomic_load_n(&rec->op, __ATOMIC_ACQUIRE);
  const uint64_t detail = __atomic_load_n(&rec->detail, __ATOMIC_ACQUIRE);
  const double secs = env().timeout_secs;
  const bool recv = op == ll::kOpDispatchRecv || op == ll::kOpCombineRecv;
  const std::string expert_text = expert >= 0 ? fmt::format(" (expert {})", expert) : std::string();
  auto path = [&](int p) -> std::string {
    if (p < 0 || p >= m.cfg.world) return "";
    return m.isLowLatencyNvlPeer(p) ? " over NVLink" : fmt::format(" through the proxies ({})", m.transport_name);
  };
  std::string msg;
  bool timeout = false;
  switch (code) {
    case ll::kTimeout:
      timeout = true;
      if (op == intranode::kOpReuse) {
        msg = fmt::format("{} on rank {}: rank {} did not finish reading this rank's nvl buffer from the previous "
                          "dispatch/combine within UCCL_EP_TIMEOUT_SECS={}s (it never joined that call, or failed)",
                          opStep(op), m.cfg.rank, peer, secs);
      } else if (op == intranode::kOpReady) {
        msg = fmt::format("{} on rank {}: rank {} did not join this dispatch/combine within UCCL_EP_TIMEOUT_SECS={}s",
                          opStep(op), m.cfg.rank, peer, secs);
      } else if (recv) {
        msg = fmt::format("{} on rank {}: rank {} did not deliver its {}{}{} within UCCL_EP_TIMEOUT_SECS={}s",
                          opStep(op), m.cfg.rank, peer, op == ll::kOpDispatchRecv ? "dispatched tokens" : "combined rows",
                          expert_text, path(peer), secs);
      } else {
        msg = fmt::format("{} on rank {}: writing to rank {}{}{} did not complete within UCCL_EP_TIMEOUT_SECS={}s",
                          opStep(op), m.cfg.rank, peer, expert_text, path(peer), secs);
      }
      break;
    case ll::kRingError: {
      // detail: ring id in the high half, ring::Status in the low half.
      const uint32_t ring_id = static_cast<uint32_t>(detail >> 32);
      const uint32_t status = static_cast<uint32_t>(detail);
      timeout = status == static_cast<uint32_t>(ring::Status::kTimeout);
      const std::string target = peer >= 0 ? fmt::format(" carrying rows for rank {}{}", peer, expert_text) : "";
      msg = fmt::format("{} on rank {}: descriptor ring {}{} failed with status {} ({}){}", opStep(op), m.cfg.rank,
                        ring_id, target, status, ringStatusName(status),
                        timeout ? fmt::format(" within UCCL_EP_TIMEOUT_SECS={}s", secs) : std::string());
      break;
    }
    case ll::kSlotOverflow:
      if (op == intranode::kOpWorstOverflow) {
        msg = fmt::format("{} on rank {}: {} rows arrived but num_worst_tokens leaves room for fewer; rows beyond it "
                          "were dropped",
                          opStep(op), m.cfg.rank, detail);
        break;
      }
      msg = fmt::format("{} on rank {}: rank {}{} sent more tokens than num_max_dispatch_tokens_per_rank allows "
                        "(slot {})",
                        opStep(op), m.cfg.rank, peer, expert_text, detail);
      break;
    default:
      msg = fmt::format("{} on rank {}: error code {} about rank {}{} (detail {})", opStep(op), m.cfg.rank, code, peer,
                        expert_text, detail);
      break;
  }
  if (!proxy_error.empty()) msg += fmt::format("; proxy: {}", proxy_error);
  msg += ". The Buffer is unusable after this error; destroy it and build a new one";
  if (timeout) throw TimeoutError(msg);
  throw Error(msg);
}

}  // namespace uccl::ep::runtime
