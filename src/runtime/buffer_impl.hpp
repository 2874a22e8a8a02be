// Buffer::Impl: the state behind runtime::Buffer, shared by the files that implement it, one concern each:
// buffer.cpp (life cycle, allocation), peer_memory.cpp (mapping the peers' memory at connect), buffer_low_latency.cpp,
// buffer_normal.cpp, buffer_floor.cpp and kernel_errors.cpp. Internal to the runtime library.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/error_record.hpp"
#include "kernels/internode.hpp"
#include "runtime/buffer.hpp"
#include "runtime/gpu_ring.hpp"
#include "runtime/peer_info.hpp"
#include "runtime/shared_memory.hpp"
#include "runtime/topology.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/proxy/transport_floor.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

struct Buffer::Impl {
  BufferConfig cfg;
  Topology topo;
  bool destroyed = false;
  bool connected = false;
  bool cuda_used = false;  // the constructor got as far as selecting the device
  int num_sms = 0;
  bool uses_proxy = false;
  size_t signal_count = 0;      // int64 words behind the gpu buffer, and in the rdma signal region
  bool internode = false;       // normal mode across nodes (kernels/internode.hpp): some rank outside the NVLink domain
  size_t internode_signal_base = 0;  // its signal words, after the low-latency ones
  uint64_t clean_calls = 0;     // clean_low_latency_buffer calls so far: the clean barrier's epoch (ll_layout.hpp)
  size_t scratch_per_half = 0;  // int32

  // Memory. Shared pieces are SharedAllocations (exported) and PeerMappings (the peers' pieces mapped here).
  std::unique_ptr<SharedAllocation> nvl_alloc;          // exported to the NVLink domain (ipc, fd or fabric)
  std::unique_ptr<SharedAllocation> gpu_alloc;          // num_rdma_bytes + signal words, exported to the node (ipc)
  std::vector<std::unique_ptr<PeerMapping>> peer_maps;  // every peer piece mapped here, unmapped in release()
  std::unique_ptr<Mapped<kernels::ErrorRecord>> error;
  std::unique_ptr<Mapped<int32_t>> clean_absent;  // [R]: the last clean's absent ranks (kernels::ll::CleanArgs)
  std::unique_ptr<DeviceArray<int32_t>> mask;
  std::unique_ptr<DeviceArray<int32_t>> mask_values;  // {0, 1}: sources of the mask update's copies
  std::unique_ptr<DeviceArray<int32_t>> scratch;
  std::unique_ptr<DeviceArray<uint64_t>> staging_tickets;  // kernels::ll::stagingTicketWords(rings), never cleared
  std::unique_ptr<DeviceArray<uint8_t*>> peer_gpu_base;
  std::unique_ptr<DeviceArray<int64_t*>> peer_gpu_signals;
  std::unique_ptr<DeviceArray<uint8_t*>> peer_nvl;  // every NVLink-domain peer's nvl buffer (null outside it)
  std::unique_ptr<DeviceArray<uint64_t>> internode_counters;  // kernels::internode::counterWords(nodes)
  std::unique_ptr<DeviceArray<int32_t>> internode_prefix;     // [R, R]: a cached dispatch's own count of its matrix

  // Proxy side.
  std::unique_ptr<proxy::ProxyGroup> proxies;
  std::vector<std::unique_ptr<GpuRing>> rings;
  std::unique_ptr<DeviceArray<ring::RingView>> ring_views;
  std::unique_ptr<Mapped<uint8_t>> rdma_host;  // when the transport cannot reach GPU memory
  uint8_t* rdma_base = nullptr;                // device pointer of the RDMA buffer
  void* rdma_region = nullptr;                 // the RDMA buffer as the proxies registered it (region 0)
  transport::MemoryKind rdma_kind = transport::MemoryKind::kHost;
  std::unique_ptr<Mapped<int64_t>> rdma_signals;
  std::string transport_name;
  std::unique_ptr<proxy::TransportFloor> floor;  // buffer_floor.cpp; closed before the memory it registered goes

  // Low-latency mode: the layouts checked so far (decode repeats a few shapes) and the half the next call uses.
  std::deque<std::pair<LowLatencyShape, kernels::ll::Layout>> ll_layouts;  // deque: references stay valid
  int ll_half = 0;
  uint64_t ll_half_uses[2] = {0, 0};  // low-latency launches of each half so far (their parity picks the tickets)
  // Orders a low-latency call's stream after its caller's and back (LowLatencyStreams). One event serves every wait
  // outside graph capture: cudaStreamWaitEvent waits for the record made before it, so recording it again is safe.
  cudaEvent_t ll_order_event = nullptr;

  // Normal mode: the CPU-wait counts, and the dispatch whose receive half has yet to run.
  std::unique_ptr<Mapped<kernels::intranode::HostCounts>> host_counts;
  std::optional<kernels::intranode::DispatchArgs> pending_dispatch;
  std::optional<kernels::internode::Context> pending_internode;  // the pending dispatch crosses nodes
  // The (num_tokens, num_topk, num_experts) checkDispatchLayout passed last.
  std::optional<std::tuple<int, int, int>> checked_layout;
  NormalPath normal_path;  // decided at connect()
  int ranks_on_gpu = 1;    // ranks of the job on this rank's GPU (MPS), itself included; decided at connect()

  PeerInfo self;  // what localInfo() reports, minus the proxy blob (taken when asked)

  ~Impl() { release(); }

  uint8_t* gpuBuffer() const { return gpu_alloc ? static_cast<uint8_t*>(gpu_alloc->ptr()) : nullptr; }
  uint8_t* nvlBuffer() const { return nvl_alloc ? static_cast<uint8_t*>(nvl_alloc->ptr()) : nullptr; }
  int64_t* gpuSignals() const { return reinterpret_cast<int64_t*>(gpuBuffer() + cfg.num_rdma_bytes); }
  bool isLowLatencyNvlPeer(int p) const {
    return p == cfg.rank || (topo.sameNode(p, cfg.rank) && cfg.allow_nvlink_for_low_latency_mode);
  }

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

  // Waits until the device (or `stream`, when given) has finished its work; Ctrl-C ends the wait within
  // kInterruptPollMs (uccl::ep::Interrupted). `what` names the wait in the messages.
  void waitForDevice(const char* what, cudaStream_t stream = nullptr) const;

  // peer_memory.cpp: maps the peers' gpu and nvl buffers and fills the device peer tables.
  void mapPeers(const std::vector<PeerInfo>& peers);

  // buffer_low_latency.cpp / buffer_normal.cpp
  kernels::ll::Context lowLatencyContext(const kernels::ll::Layout& layout, int half) const;
  void launchLowLatency(const kernels::ll::Layout& layout, const LowLatencyPending& p, kernels::ll::Phase phase,
                        uintptr_t stream) const;
  // Work queued on `waiter` from now on waits for the work queued so far on `waited` (no host wait); `capturing`:
  // the two are in a CUDA-graph capture.
  void streamWaits(uintptr_t waiter, uintptr_t waited, bool capturing, const char* call) const;
  // The normal-mode context over the NVLink domain (nvlContext), checked to cover every rank (normalContext).
  kernels::intranode::Context nvlContext(const char* call, const NormalConfig& config) const;
  kernels::intranode::Context normalContext(const char* call, const NormalConfig& config) const;
  // buffer_internode.cpp: a dispatch across nodes (send half; receive half).
  // num_experts (0 for a combine) sizes the counts rows, token_bytes the records of the rings.
  kernels::internode::Context internodeContext(const char* call, const NormalConfig& config, int num_experts,
                                               size_t token_bytes) const;
  void internodeDispatchSend(kernels::intranode::DispatchArgs a, bool cached, const NormalConfig& config,
                             uintptr_t stream);
  void internodeDispatchRecv(const kernels::intranode::DispatchOutputs& outputs, uintptr_t stream);
  void internodeCombine(kernels::intranode::CombineArgs a, const NormalConfig& config, uintptr_t stream);

  // kernel_errors.cpp: throws what a kernel or a proxy recorded. A rejected argument (kBadExpertId) is cleared when
  // thrown; with argument_errors false it stays recorded for a later call (a receive hook raises it after its launch).
  void raiseRecordedErrors(bool argument_errors) const;
};

}  // namespace uccl::ep::runtime
