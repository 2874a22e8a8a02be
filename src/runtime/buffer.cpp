// runtime::Buffer: configuration checks, the topology decision, allocation, proxies, localInfo and tear-down.
#include "runtime/buffer.hpp"

#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "kernels/limits.hpp"
#include "runtime/buffer_impl.hpp"
#include "runtime/cuda_check.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/interrupt.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::runtime {

namespace ll = kernels::ll;
namespace intranode = kernels::intranode;

namespace {

constexpr uint32_t kRingCapacityLog2 = 12;

void validateConfig(const BufferConfig& c) {
  if (c.num_ranks < 1) UCCL_EP_THROW_ARG("Buffer: num_ranks = {} (expected at least 1)", c.num_ranks);
  if (c.rank < 0 || c.rank >= c.num_ranks) UCCL_EP_THROW_ARG("Buffer: rank {} is not in [0, {})", c.rank, c.num_ranks);
  if (c.num_ranks > static_cast<int>(ring::kMaxRanks)) {
    UCCL_EP_THROW_ARG("Buffer: {} ranks exceed the {} ranks a descriptor can name", c.num_ranks, ring::kMaxRanks);
  }
  for (const auto& [name, bytes] : {std::pair{"num_nvl_bytes", c.num_nvl_bytes}, {"num_rdma_bytes", c.num_rdma_bytes}}) {
    if (bytes < 0 || bytes % static_cast<int64_t>(kernels::kBufferSizeUnit) != 0) {
      UCCL_EP_THROW_ARG("Buffer: {} must be a non-negative multiple of {} bytes, got {}", name,
                        kernels::kBufferSizeUnit, bytes);
    }
  }
  if (c.low_latency_mode && c.num_rdma_bytes == 0) {
    UCCL_EP_THROW_ARG("Buffer: low_latency_mode=True needs num_rdma_bytes > 0 (see "
                      "Buffer.get_low_latency_rdma_size_hint)");
  }
  int count = 0;
  UCCL_EP_CUDA_OR_THROW(cudaGetDeviceCount(&count), "Buffer (rank {}): counting CUDA devices", c.rank);
  if (c.device < 0 || c.device >= count) {
    UCCL_EP_THROW("Buffer (rank {}): CUDA device {} does not exist ({} visible)", c.rank, c.device, count);
  }
}

// How the nvl buffer is shared. UCCL_EP_MEM_HANDLE=ipc|fd|fabric (or use_fabric) forces a kind; otherwise CUDA IPC
// within a node, and across an MNNVL domain fabric handles where the device has them, else POSIX fds (one host).
// A GPU on an NVLink fabric (the driver reports a fabric domain) shares through fabric handles where it may create
// them, so that the group can turn out to be one domain at connect() without a second allocation.
HandleKind nvlHandleKind(const BufferConfig& c, const Topology& topo, bool on_fabric) {
  if (const std::optional<HandleKind> forced = memHandleSetting()) return *forced;
  if (c.use_fabric) return HandleKind::kFabric;
  if (topo.nvl_domain_spans_nodes) {
    return fabricHandlesSupported(c.device) ? HandleKind::kFabric : HandleKind::kPosixFd;
  }
  if (on_fabric && fabricHandlesSupported(c.device)) return HandleKind::kFabric;
  return HandleKind::kCudaIpc;
}

template <typename T>
std::unique_ptr<DeviceArray<T>> zeroedArray(size_t n, int rank, const char* what) {
  auto a = std::make_unique<DeviceArray<T>>(n);
  UCCL_EP_CUDA_OR_THROW(cudaMemset(a->get(), 0, sizeof(T) * n), "Buffer (rank {}): zeroing the {}", rank, what);
  return a;
}

}  // namespace

void Buffer::Impl::release() noexcept {
  if (destroyed) return;
  destroyed = true;
  connected = false;
  if (!cuda_used) return;  // the configuration was rejected before anything was allocated
  try {
    logCuda(cudaSetDevice(cfg.device), "cudaSetDevice", "Buffer destroy");
    // Kernels may still be using the memory, and proxies may still be draining rings.
    logCuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize", "Buffer destroy");
    if (proxies) {
      try {
        proxies->stop();
      } catch (const std::exception& e) {
        log().error("uccl-ep Buffer destroy (rank {}): stopping the proxies failed: {}", cfg.rank, e.what());
      }
    }
    peer_maps.clear();  // peers' memory first: CUDA IPC mappings close before the exporters free
    // The floor and the proxies deregister the regions and drop the rings before the memory behind them goes.
    floor.reset();
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
    staging_tickets.reset();
    mask_values.reset();
    mask.reset();
    error.reset();
    clean_absent.reset();
    if (ll_order_event != nullptr) logCuda(cudaEventDestroy(ll_order_event), "cudaEventDestroy", "Buffer destroy");
    ll_order_event = nullptr;
    gpu_alloc.reset();
    nvl_alloc.reset();
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
  m.topo = decideTopology(config.rank, config.num_ranks, config.host_ids, config.allow_mnnvl, env());
  const int rank = config.rank;
  const int world = config.num_ranks;
  UCCL_EP_CUDA_OR_THROW(cudaSetDevice(config.device), "Buffer (rank {}): selecting device {}", rank, config.device);
  m.cuda_used = true;
  UCCL_EP_CUDA_OR_THROW(cudaDeviceGetAttribute(&m.num_sms, cudaDevAttrMultiProcessorCount, config.device),
                        "Buffer (rank {}): SM count", rank);
  m.signal_count = kernels::ll::signalWords(world);  // the clean epoch words, then the call words
  // Normal mode across nodes: its signal words follow the low-latency ones (kernels/internode.hpp).
  m.internode = !config.low_latency_mode && m.topo.nvlDomainSize() < world;
  m.internode_signal_base = m.signal_count;
  if (m.internode) m.signal_count += kernels::internode::signalWords(world, m.topo.num_nodes);
  m.scratch_per_half = static_cast<size_t>(kernels::kMaxTokensPerRank) * kernels::kMaxTopk +
                       static_cast<size_t>(kernels::kMaxExpertsPerRank) * world;

  // nvl buffer (exported to the NVLink domain) and gpu buffer + signal words (exported to the node). Both zeroed:
  // the normal-mode sequence, ready and done words and the low-latency signals start at zero on every rank.
  m.self.normal_mnnvl = m.topo.nvl_domain_spans_nodes;
  m.self.fabric_domain = fabricDomainId(config.device);
  if (config.num_nvl_bytes > 0) {
    m.nvl_alloc = SharedAllocation::create(static_cast<size_t>(config.num_nvl_bytes), config.device,
                                           nvlHandleKind(config, m.topo, !m.self.fabric_domain.empty()), rank);
  }
  m.gpu_alloc = SharedAllocation::create(static_cast<size_t>(config.num_rdma_bytes) + m.signal_count * sizeof(int64_t),
                                         config.device, HandleKind::kCudaIpc, rank);
  m.peer_nvl = zeroedArray<uint8_t*>(world, rank, "nvl peer table");
  m.host_counts = std::make_unique<Mapped<intranode::HostCounts>>(1);

  m.error = std::make_unique<Mapped<kernels::ErrorRecord>>(1);
  m.clean_absent = std::make_unique<Mapped<int32_t>>(world);
  UCCL_EP_CUDA_OR_THROW(cudaEventCreateWithFlags(&m.ll_order_event, cudaEventDisableTiming),
                        "Buffer (rank {}): the low-latency stream-order event", rank);
  m.mask = zeroedArray<int32_t>(world, rank, "mask");
  m.mask_values = std::make_unique<DeviceArray<int32_t>>(2);
  const int32_t values[2] = {0, 1};
  UCCL_EP_CUDA_OR_THROW(cudaMemcpy(m.mask_values->get(), values, sizeof(values), cudaMemcpyHostToDevice),
                        "Buffer (rank {}): mask constants", rank);
  m.scratch = zeroedArray<int32_t>(2 * m.scratch_per_half, rank, "scratch");
  m.peer_gpu_base = zeroedArray<uint8_t*>(world, rank, "peer table");
  m.peer_gpu_signals = zeroedArray<int64_t*>(world, rank, "peer table");

  // Proxies: when some peer is not written directly. In normal mode that is a peer outside the NVLink domain; in
  // low-latency mode a peer on another node, or on this node when NVLink is not allowed. Without an RDMA buffer
  // there is nothing for them to move.
  bool needs_proxy = false;
  for (int p = 0; p < world && !needs_proxy; ++p) {
    needs_proxy = config.low_latency_mode ? !m.isLowLatencyNvlPeer(p) : !m.topo.inNvlDomain(rank, p);
  }
  if (needs_proxy && config.num_rdma_bytes == 0) {
    log().warn("uccl-ep Buffer (rank {}): peers on other nodes but num_rdma_bytes = 0: no proxies are started", rank);
    needs_proxy = false;
  }
  m.uses_proxy = needs_proxy;

  char bus_id[64] = {};
  UCCL_EP_CUDA_OR_THROW(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), config.device),
                        "Buffer (rank {}): PCI bus id of device {}", rank, config.device);

  if (m.uses_proxy) {
    proxy::ProxyConfig pc = proxy::ProxyConfig::fromEnv(rank, world);
    pc.gpu_pci_bus_id = bus_id;
    pc.gpu_device = config.device;
    pc.all_peers_local = m.topo.num_nodes == 1;
    pc.enable_shrink = config.enable_shrink;
    m.proxies = std::make_unique<proxy::ProxyGroup>(pc);
    m.transport_name = m.proxies->transport(0).name();

    // The RDMA buffer: the gpu buffer itself where the transport registers GPU memory (verbs with dma-buf or peer
    // memory, libfabric with FI_HMEM), else pinned host memory. The registration is the last part of the probe: when
    // it fails, pinned host memory it is.
    const size_t rdma_bytes = static_cast<size_t>(config.num_rdma_bytes);
    std::string why_host = "the transport does not register GPU memory";
    if (m.proxies->transport(0).capabilities() & transport::kGpuMemory) {
      try {
        m.proxies->addRegion(0, m.gpuBuffer(), rdma_bytes, transport::MemoryKind::kDevice);
        m.rdma_base = m.gpuBuffer();
        m.rdma_region = m.gpuBuffer();
        m.rdma_kind = transport::MemoryKind::kDevice;
      } catch (const Error& e) {
        why_host = fmt::format("registering GPU memory failed: {}", e.what());
      }
    }
    if (m.rdma_region == nullptr) {
      m.rdma_host = std::make_unique<Mapped<uint8_t>>(rdma_bytes);
      m.proxies->addRegion(0, m.rdma_host->host(), rdma_bytes, transport::MemoryKind::kHost);
      m.rdma_base = m.rdma_host->device();
      m.rdma_region = m.rdma_host->host();
    }
    log().info("uccl-ep Buffer (rank {}): RDMA buffer of {} bytes in {} through {}{}", rank, rdma_bytes,
               m.rdma_kind == transport::MemoryKind::kDevice ? "GPU memory" : "pinned host memory", m.transport_name,
               m.rdma_kind == transport::MemoryKind::kDevice ? "" : " (" + why_host + ")");
    m.rdma_signals = std::make_unique<Mapped<int64_t>>(m.signal_count);
    m.proxies->setSignalRegion(m.rdma_signals->host(), m.signal_count);

    const int num_rings = 2 * m.proxies->numThreads();
    // The rings carry one mode's work: normal-mode calls across nodes (UCCL_IB_MAX_INFLIGHT_NORMAL caps them) or
    // low-latency calls (UCCL_IB_MAX_INFLIGHT_LOW_LATENCY).
    const proxy::RingKind ring_kind = m.internode ? proxy::RingKind::kNormal : proxy::RingKind::kLowLatency;
    std::vector<ring::RingView> views;
    for (int i = 0; i < num_rings; ++i) {
      m.rings.push_back(std::make_unique<GpuRing>(kRingCapacityLog2, static_cast<uint32_t>(i)));
      m.proxies->addRing(m.rings.back()->hostView(), ring_kind);
      views.push_back(m.rings.back()->deviceView());
    }
    m.staging_tickets = zeroedArray<uint64_t>(kernels::ll::stagingTicketWords(num_rings), rank, "staging tickets");
    if (m.internode) {
      m.internode_counters =
          zeroedArray<uint64_t>(kernels::internode::counterWords(m.topo.num_nodes), rank, "internode counters");
      m.internode_prefix = zeroedArray<int32_t>(static_cast<size_t>(world) * world, rank, "internode prefix");
    }
    m.ring_views = std::make_unique<DeviceArray<ring::RingView>>(views.size());
    UCCL_EP_CUDA_OR_THROW(
        cudaMemcpy(m.ring_views->get(), views.data(), sizeof(ring::RingView) * views.size(), cudaMemcpyHostToDevice),
        "Buffer (rank {}): ring table", rank);
  }

  // What localInfo() reports.
  m.self.rank = rank;
  m.self.world = world;
  m.self.ranks_per_node = m.topo.ranks_per_node;
  m.self.num_nvl_bytes = config.num_nvl_bytes;
  m.self.num_rdma_bytes = config.num_rdma_bytes;
  m.self.hostname = localHostname();
  m.self.boot_id = localBootId();
  m.self.pci_bus_id = bus_id;
  m.self.gpu_ipc_handle = m.gpu_alloc->exportBlob();
  if (m.nvl_alloc) m.self.nvl_ipc_handle = m.nvl_alloc->exportBlob();
  m.self.uses_proxy = m.uses_proxy;

  log().debug("uccl-ep Buffer rank {} on device {} ({}): {}; nvl {} B, rdma {} B, proxies: {}", rank, config.device,
              bus_id, m.topo.describe(), config.num_nvl_bytes, config.num_rdma_bytes,
              m.uses_proxy ? m.transport_name : std::string("none"));
}

// Not destroy(): a destructor cannot be interrupted (it would leak everything); release() waits for the device itself.
Buffer::~Buffer() { impl_->release(); }

std::string Buffer::localInfo() const {
  impl_->requireUsable("localInfo()");
  PeerInfo info = impl_->self;
  if (impl_->proxies) info.proxy_info = impl_->proxies->localInfo();
  const transport::Blob b = encodePeerInfo(info);
  return std::string(b.begin(), b.end());
}

void Buffer::destroy() {
  if (!impl_->destroyed && impl_->cuda_used) synchronize();  // release() waits too, but not interruptibly
  impl_->release();
}

void Buffer::synchronize() const {
  impl_->requireUsable("synchronize()");
  impl_->waitForDevice("waiting for the device's work");
}

void Buffer::Impl::waitForDevice(const char* what, cudaStream_t stream) const {
  const int device = cfg.device;
  const int rank = cfg.rank;
  // The helper may outlive this call (Ctrl-C): it holds copies only.
  runInterruptibly(what, [device, rank, stream, w = std::string(what)] {
    UCCL_EP_CUDA_OR_THROW(cudaSetDevice(device), "rank {}: {}: selecting device {}", rank, w, device);
    if (stream != nullptr) {
      UCCL_EP_CUDA_OR_THROW(cudaStreamSynchronize(stream), "rank {}: {}", rank, w);
    } else {
      UCCL_EP_CUDA_OR_THROW(cudaDeviceSynchronize(), "rank {}: {}", rank, w);
    }
  });
}

const Topology& Buffer::topology() const { return impl_->topo; }

std::string Buffer::normalPath() const {
  impl_->requireConnected("normal_path");
  return impl_->normal_path.why;
}


uintptr_t Buffer::nvlBufferPtr() const { return reinterpret_cast<uintptr_t>(impl_->nvlBuffer()); }
uintptr_t Buffer::rdmaBufferPtr() const { return reinterpret_cast<uintptr_t>(impl_->gpuBuffer()); }

}  // namespace uccl::ep::runtime
