// The C++ Buffer behind uccl.ep.Buffer: memory, peers, proxies and kernel launches. No torch: the Python layer
// allocates output tensors and passes raw pointers; this class owns everything that lives as long as the
// buffer. It links the CUDA runtime only (never libcuda).
//
// Memory (per rank):
//   nvl buffer     num_nvl_bytes of GPU memory, mapped into every same-node peer through CUDA IPC (normal mode).
//   gpu buffer     num_rdma_bytes of GPU memory + the GPU signal words, mapped into every same-node peer
//                  through CUDA IPC. NVLink peers write low-latency rows and signals here.
//   rdma buffer    only when some peer is reached through the proxy. The gpu buffer itself when the transport
//                  reaches GPU memory (capability kGpuMemory); otherwise num_rdma_bytes of pinned host memory
//                  mapped into the GPU. Registered as proxy region 0; proxies write rows here and the staging
//                  area of sends lives here.
//   rdma signals   int64 words in pinned host memory mapped into the GPU (ProxyGroup::setSignalRegion).
//   error record   host-mapped kernels::ll::ErrorRecord; mask [R] int32 and per-half scratch in GPU memory.
//   rings          UCCL_EP_NUM_PROXY_THREADS x 2 descriptor rings (runtime::GpuRing), when proxies run.
//
// Life cycle: Buffer(config) allocates -> localInfo() is all-gathered by the caller (process group) ->
// connect(infos) opens IPC handles of same-node peers, connects and starts the proxies -> launches ->
// destroy() (or the destructor) stops proxies, closes IPC handles, frees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/intranode.hpp"
#include "kernels/low_latency.hpp"

namespace uccl::ep::runtime {

struct BufferConfig {
  int rank = 0;
  int world = 1;
  int ranks_per_node = 1;        // ranks [n * ranks_per_node, (n+1) * ranks_per_node) form node n
  int device = 0;                // CUDA device of this rank
  int64_t num_nvl_bytes = 0;
  int64_t num_rdma_bytes = 0;
  bool low_latency_mode = false;
  bool allow_nvlink_for_low_latency = true;  // false: same-node peers also go through the proxy in LL mode
  bool enable_shrink = false;
};

class Buffer {
 public:
  explicit Buffer(const BufferConfig& config);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // What peers need to reach this rank: IPC handles, host identity, proxy endpoints and memory keys.
  std::string localInfo() const;
  // infos[r] = rank r's localInfo(). Throws naming the peer whose info is malformed or cannot be opened.
  void connect(const std::vector<std::string>& infos);
  bool connected() const;
  void destroy();  // idempotent

  int rank() const;
  int world() const;
  int nodeOf(int rank) const;
  int numNodes() const;
  // True when low-latency traffic to `peer` is written directly (same node and NVLink allowed, or self).
  bool isLowLatencyNvlPeer(int peer) const;
  bool usesProxy() const;
  std::string transportName() const;  // "" without proxies

  uintptr_t nvlBufferPtr() const;   // device pointer of this rank's nvl buffer (0 when num_nvl_bytes == 0)
  uintptr_t rdmaBufferPtr() const;  // device pointer of this rank's gpu buffer (get_local_buffer_tensor)

  // --- low-latency mode --------------------------------------------------------------------------------------
  // The context of one half for a call with these sizes. Throws (before anything runs) when the sizes do not
  // fit num_rdma_bytes or the limits of ll_layout.hpp.
  kernels::ll::Context lowLatencyContext(int half, int max_tokens, int hidden, int num_experts) const;
  // Device pointer of the half's send area as the combine kernel reads it with zero_copy
  // (get_next_low_latency_combine_buffer): [E_local, R*M, hidden] BF16 rows of layout.row_bytes.
  uintptr_t lowLatencyCombineSendPtr(int half, int max_tokens, int hidden, int num_experts) const;
  void lowLatencyDispatch(int half, int max_tokens, int hidden, int num_experts, const kernels::ll::DispatchArgs& args,
                          kernels::ll::Phase phase, uintptr_t stream);
  void lowLatencyCombine(int half, int max_tokens, int hidden, int num_experts, const kernels::ll::CombineArgs& args,
                         kernels::ll::Phase phase, uintptr_t stream);
  void cleanLowLatencyBuffer(uintptr_t stream);  // zeroes signal words (both halves) and scratch

  // --- normal mode within one memory domain (kernels/intranode.hpp) -------------------------------------------
  // True when every rank is an NVLink peer of every other: one node, or UCCL_EP_NORMAL_MNNVL=1 /
  // DEEP_EP_NORMAL_MNNVL=1 (the nvl buffers of all ranks are then mapped, whatever the node layout says).
  bool normalSingleDomain() const;
  // Bytes of nvl buffer a dispatch of num_tokens tokens / a combine of num_recv_rows rows needs on this rank.
  size_t normalDispatchBytes(int num_tokens, size_t hidden_bytes, size_t scale_bytes, int num_topk,
                             int num_experts) const;
  size_t normalCombineBytes(int num_recv_rows, int hidden, int num_topk, int num_experts) const;
  void normalLayout(kernels::intranode::LayoutArgs args, uintptr_t stream);
  // Steps 1-3 of a dispatch (intranode.hpp). args.layout is filled here. Throws before launching when the
  // sizes do not fit num_nvl_bytes or the limits.
  void normalDispatchSend(kernels::intranode::DispatchArgs args, bool cached, int num_sms, uintptr_t stream);
  // The CPU wait of a non-cached dispatch: the receive count and the per-local-expert counts. Throws
  // TimeoutError naming the rank that never published (UCCL_EP_TIMEOUT_SECS).
  std::pair<int, std::vector<int>> normalDispatchWait(int num_experts);
  void normalDispatchRecv(kernels::intranode::DispatchArgs args, int num_sms, int send_tokens, uintptr_t stream);
  void normalCombine(kernels::intranode::CombineArgs args, int num_sms, int send_tokens, uintptr_t stream);

  // enable_shrink: mask[r] = 1 means rank r is masked.
  void updateMask(int rank, bool masked, uintptr_t stream);
  void queryMask(uintptr_t out_int32_device, uintptr_t stream) const;  // copies [R] int32
  void cleanMask(uintptr_t stream);

  // Throws the first recorded failure: a kernel's ErrorRecord (TimeoutError naming the peer and the step) or a
  // proxy error. Called at the start of every Python-level call and by hooks.
  void checkErrors() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uccl::ep::runtime
