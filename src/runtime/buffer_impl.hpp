// Buffer::Impl: the state behind runtime::Buffer, shared by buffer.cpp (life cycle, peers, low-latency mode,
// errors) and buffer_normal.cpp (normal mode). Internal to the runtime library.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/buffer.hpp"
#include "runtime/gpu_ring.hpp"
#include "runtime/peer_info.hpp"
#include "runtime/shared_memory.hpp"
#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

struct Buffer::Impl {
  using ErrorRecord = kernels::ll::ErrorRecord;
  BufferConfig cfg;
  bool destroyed = false;
  bool connected = false;
  bool cuda_used = false;  // the constructor got as far as selecting the device
  int num_sms = 0;
  bool uses_proxy = false;
  size_t signal_count = 0;      // int64 words behind the gpu buffer, and in the rdma signal region
  size_t scratch_per_half = 0;  // int32

  // Memory (raw CUDA allocations are freed in release()).
  void* nvl_buffer = nullptr;                           // nvl_alloc->ptr()
  std::unique_ptr<SharedAllocation> nvl_alloc;          // exported to the NVLink domain (ipc, fd or fabric)
  std::vector<std::unique_ptr<PeerMapping>> nvl_peers;  // the domain peers' nvl buffers as mapped here
  uint8_t* gpu_buffer = nullptr;                        // num_rdma_bytes, then signal_count int64 signal words
  std::unique_ptr<Mapped<ErrorRecord>> error;
  std::unique_ptr<DeviceArray<int32_t>> mask;
  std::unique_ptr<DeviceArray<int32_t>> mask_values;  // {0, 1}: sources of updateMask's copies
  std::unique_ptr<DeviceArray<int32_t>> scratch;
  std::unique_ptr<DeviceArray<uint8_t*>> peer_gpu_base;
  std::unique_ptr<DeviceArray<int64_t*>> peer_gpu_signals;
  // Normal mode: every domain peer's nvl buffer (null outside the domain), the CPU-wait counts.
  bool normal_mnnvl = false;
  std::unique_ptr<DeviceArray<uint8_t*>> peer_nvl;
  std::unique_ptr<Mapped<kernels::intranode::HostCounts>> host_counts;

  // Proxy side.
  std::unique_ptr<proxy::ProxyGroup> proxies;
  std::vector<std::unique_ptr<GpuRing>> rings;
  std::unique_ptr<DeviceArray<ring::RingView>> ring_views;
  std::unique_ptr<Mapped<uint8_t>> rdma_host;  // when the transport cannot reach GPU memory
  uint8_t* rdma_base = nullptr;                // device pointer of the RDMA buffer
  std::unique_ptr<Mapped<int64_t>> rdma_signals;
  std::string transport_name;

  // Opened IPC mappings of same-node peers' gpu buffers, closed in release().
  std::vector<void*> opened_ipc;

  PeerInfo self;  // what localInfo() reports, minus the proxy blob (taken when asked)

  ~Impl() { release(); }

  int nodeOf(int r) const { return r / cfg.ranks_per_node; }
  bool isLowLatencyNvlPeer(int p) const {
    return p == cfg.rank || (nodeOf(p) == nodeOf(cfg.rank) && cfg.allow_nvlink_for_low_latency);
  }
  int64_t* gpuSignals() const { return reinterpret_cast<int64_t*>(gpu_buffer + cfg.num_rdma_bytes); }

  void requireUsable(const char* what) const {
    if (destroyed) UCCL_EP_THROW("rank {}: {} on a destroyed Buffer", cfg.rank, what);
  }
  void requireConnected(const char* what) const {
    requireUsable(what);
    if (!connected) {
      UCCL_EP_THROW(
          "rank {}: {} before connect(): the Buffer is set up only once every rank's localInfo() has "
          "been exchanged and passed to connect()",
          cfg.rank, what);
    }
  }

  // Frees everything; never throws. Safe on a partly constructed Impl.
  void release() noexcept;

  kernels::ll::Context context(int half, int max_tokens, int hidden, int num_experts) const;
  // Ranks whose nvl buffers this rank maps: everyone under MNNVL, else the own node.
  bool inNvlDomain(int p) const { return normal_mnnvl || nodeOf(p) == nodeOf(cfg.rank); }
  int numNodesOfLayout() const { return (cfg.world + cfg.ranks_per_node - 1) / cfg.ranks_per_node; }
  bool singleDomain() const { return normal_mnnvl || numNodesOfLayout() == 1; }
  kernels::intranode::Context normalContext(const char* call, int num_sms, int send_tokens) const;
  kernels::intranode::Layout intranodeLayout(const char* call, int num_experts, size_t hidden_bytes, size_t scale_bytes,
                                             int num_topk, size_t combine_hidden_bytes) const;
};

}  // namespace uccl::ep::runtime
