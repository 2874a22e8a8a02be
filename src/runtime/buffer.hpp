// The C++ Buffer behind uccl.ep.Buffer: memory, peers, proxies and kernel launches. No torch: the Python layer
// allocates output tensors and passes raw pointers; this class owns everything that lives as long as the
// buffer, and every fact the Python layer must not decide itself: the topology, the limits and layouts (the
// checks of call_checks.hpp run here, once per call), and the low-latency buffer half. It links the CUDA runtime
// only (never libcuda).
//
// Memory (per rank), every shared piece through one mechanism (runtime/shared_memory.hpp, peer_memory.cpp):
//   nvl buffer     num_nvl_bytes of GPU memory, mapped by every rank of this rank's NVLink domain (normal mode):
//                  CUDA IPC within a node; fabric handles or POSIX fds across an MNNVL domain.
//   gpu buffer     num_rdma_bytes of GPU memory + the GPU signal words, mapped by every rank of this node through
//                  CUDA IPC. NVLink peers write low-latency rows and signals here.
//   rdma buffer    only when some peer is reached through the proxy. The gpu buffer itself when the transport
//                  reaches GPU memory (capability kGpuMemory); otherwise num_rdma_bytes of pinned host memory
//                  mapped into the GPU. Registered as proxy region 0.
//   rdma signals   int64 words in pinned host memory mapped into the GPU (ProxyGroup::setSignalRegion).
//   error record   host-mapped kernels::ErrorRecord (kernels/error_record.hpp), decoded by kernel_errors.cpp.
//   rings          UCCL_EP_NUM_PROXY_THREADS x 2 descriptor rings (runtime::GpuRing), when proxies run.
//
// Life cycle: Buffer(config) decides the topology and allocates -> localInfo() is all-gathered by the caller
// (process group) -> connect(infos) maps the peers' memory, connects and starts the proxies -> launches ->
// destroy() (or the destructor) stops proxies, unmaps, frees.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/intranode.hpp"
#include "kernels/low_latency.hpp"
#include "runtime/ll_floor_plan.hpp"
#include "runtime/topology.hpp"
#include "uccl_ep/proxy/transport_floor.hpp"

namespace uccl::ep::runtime {

struct BufferConfig {
  int rank = 0;
  int num_ranks = 1;
  int device = 0;                      // CUDA device of this rank
  std::vector<std::string> host_ids;   // localHostId() of every rank, for the topology decision
  int64_t num_nvl_bytes = 0;
  int64_t num_rdma_bytes = 0;
  bool low_latency_mode = false;
  bool allow_nvlink_for_low_latency_mode = true;  // false: same-node peers also go through the proxy in LL mode
  bool allow_mnnvl = false;            // the NVLink domain spans nodes (as UCCL_EP_NORMAL_MNNVL=1)
  bool use_fabric = false;             // share the nvl buffer through fabric handles
  bool enable_shrink = false;
};

// The sizes a low-latency call is made for (its layout's key).
struct LowLatencyShape {
  int num_max_dispatch_tokens_per_rank = 0, hidden = 0, num_experts = 0;
  bool operator==(const LowLatencyShape& o) const {
    return num_max_dispatch_tokens_per_rank == o.num_max_dispatch_tokens_per_rank && hidden == o.hidden &&
           num_experts == o.num_experts;
  }
};

// The streams of a low-latency call (cudaStream_t handles as ints). The call runs on `stream` after the work queued so
// far on `caller_stream`; with caller_waits, work queued on caller_stream afterwards waits for the call (its send
// half when it returns a hook). Ordered through an event the Buffer records and waits on; nothing waits on the host.
struct LowLatencyStreams {
  uintptr_t stream = 0;
  uintptr_t caller_stream = 0;
  bool caller_waits = true;
};

// A low-latency call whose receive half runs later (return_recv_hook): the half it used and its arguments.
struct LowLatencyPending {
  LowLatencyShape shape;
  int half = 0;
  int use_parity = 0;  // uses of `half` before this call, mod 2 (kernels::ll::Context::use_parity)
  bool combine = false;
  kernels::ll::DispatchArgs dispatch;
  kernels::ll::CombineArgs combine_args;
};

// Normal-mode knobs of one call (uccl.ep.Config).
struct NormalConfig {
  int num_sms = 0;                          // 0: every SM of the device
  int num_max_nvl_chunked_send_tokens = 0;  // rows per warp work item (push, unpack); 0: the kernels' default
  // Across nodes (kernels/internode.hpp): records per WRITE, and records per ring (0: Config's defaults, 6 and 256).
  int num_max_rdma_chunked_send_tokens = 0;
  int num_max_rdma_chunked_recv_tokens = 0;
};

class Buffer {
 public:
  explicit Buffer(const BufferConfig& config);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // What peers need to reach this rank: memory handles, host identity, proxy endpoints and memory keys.
  std::string localInfo() const;
  // infos[r] = rank r's localInfo(). Throws naming the peer whose info is malformed or cannot be opened.
  void connect(const std::vector<std::string>& infos);
  // Idempotent. Local: frees this rank's memory without waiting for any peer (a caller that needs the peers done
  // with it, as Python's collective destroy does, waits for them first). It first waits for the device, which
  // Ctrl-C interrupts (uccl::ep::Interrupted; nothing is freed then, and destroy() may be called again).
  void destroy();
  // Waits for the device's work, as destroy() does first; Ctrl-C interrupts it (uccl::ep::Interrupted).
  void synchronize() const;

  // Final after connect(): a group whose GPUs all report one NVLink fabric domain becomes one NVLink domain.
  const Topology& topology() const;
  // After connect(): which normal-mode path runs and why, e.g. "pipelined (one GPU per rank)" or "staged (ranks 0
  // and 1 share GPU 0000:1a:00.0)" (peer_info.hpp decideNormalPath; kernels/intranode.hpp).
  std::string normalPath() const;

  uintptr_t nvlBufferPtr() const;   // device pointer of this rank's nvl buffer (0 when num_nvl_bytes == 0)
  uintptr_t rdmaBufferPtr() const;  // device pointer of this rank's gpu buffer (get_local_buffer_tensor)

  // --- low-latency mode (buffer_low_latency.cpp) -------------------------------------------------------------
  // The layout for these sizes, checked once per shape (limits, mode, num_rdma_bytes) and kept.
  const kernels::ll::Layout& lowLatencyLayout(const LowLatencyShape& shape);
  // Each dispatch and combine uses the current half of the buffer and flips to the other, so two calls may be
  // outstanding. With return_recv_hook only the send half runs now; the returned pending call runs the receive
  // half through lowLatencyReceive (on the same half). Throws before launching when an argument is out of range.
  LowLatencyPending lowLatencyDispatch(const LowLatencyShape& shape, const kernels::ll::DispatchArgs& args,
                                       bool return_recv_hook, const LowLatencyStreams& streams);
  LowLatencyPending lowLatencyCombine(const LowLatencyShape& shape, const kernels::ll::CombineArgs& args,
                                      bool return_recv_hook, const LowLatencyStreams& streams);
  // Raises a fatal recorded error before it launches, and a rejected argument of the send half (InvalidArgument)
  // after: the receive half runs either way, so the buffer half is consumed and stays usable.
  void lowLatencyReceive(const LowLatencyPending& pending, uintptr_t stream);
  // Device pointer of the send area the next combine reads with zero_copy (get_next_low_latency_combine_buffer):
  // [E_local, R*M, hidden] BF16 rows of layout.row_bytes.
  uintptr_t nextLowLatencyCombineBuffer(const LowLatencyShape& shape);
  // Zeroes the signal words and scratch of both halves, then a barrier: returns once every unmasked peer has made
  // the same number of cleans. A peer that does not join within the timeout is masked with enable_shrink; without it
  // the call raises TimeoutError naming it. Waits for the stream (interruptible).
  void cleanLowLatencyBuffer(const LowLatencyShape& shape, uintptr_t stream);
  // enable_shrink: mask[r] = 1 means rank r is masked.
  void lowLatencyUpdateMaskBuffer(int rank_to_mask, bool mask, uintptr_t stream);
  void lowLatencyQueryMaskBuffer(uintptr_t mask_status, uintptr_t stream) const;  // copies [R] int32
  void lowLatencyCleanMaskBuffer(uintptr_t stream);

  // --- transport floor (buffer_floor.cpp, uccl_ep/proxy/transport_floor.hpp) ---------------------------------
  // What the proxies carry in one low-latency call on this rank, as a floor plan: counts[s * E + e] = tokens of rank
  // s that picked expert e (runtime/ll_floor_plan.hpp). Empty when no peer is reached through the proxies.
  proxy::FloorPlan lowLatencyFloorPlan(const LowLatencyShape& shape, LowLatencyCall call,
                                       const std::vector<int32_t>& counts);
  // The floor's endpoints, opened on first call through the proxies' configuration and registering the RDMA buffer
  // as the proxies did; the caller all-gathers the blob and passes every rank's to transportFloorConnect. Throws
  // when no peer is reached through the proxies (there is no transport to measure).
  std::string transportFloorInfo();
  void transportFloorConnect(const std::vector<std::string>& infos);
  // One run of `plan` (every rank together, after a barrier). No call may be in flight or waiting for its receive
  // hook on any rank: the floor writes the same receive areas a call does. Checks what this rank can see (its
  // stream work and its rings) and throws naming the ring otherwise.
  proxy::FloorResult transportFloorRun(const proxy::FloorPlan& plan);
  void transportFloorClose();  // after a barrier that follows every rank's last run; idempotent
  // The proxies' transport, e.g. "fabric/shm:shm"; empty when no peer is reached through the proxies.
  std::string transportName() const;

  // --- normal mode within one NVLink domain (buffer_normal.cpp, kernels/intranode.hpp) ------------------------
  // The checks of get_dispatch_layout, made before the caller sizes its outputs by num_experts; the launch then skips
  // them for the same sizes (each check once per call).
  void checkDispatchLayout(const kernels::intranode::LayoutArgs& args);
  void getDispatchLayout(kernels::intranode::LayoutArgs args, uintptr_t stream);
  // Steps 1-3 of a dispatch. Keeps the call's arguments and layout for dispatchRecv.
  void dispatchSend(kernels::intranode::DispatchArgs args, bool cached, const NormalConfig& config, uintptr_t stream);
  // The CPU wait of a non-cached dispatch without num_worst_tokens: the receive count and the per-local-expert
  // counts. Throws TimeoutError naming the rank that never published (UCCL_EP_TIMEOUT_SECS).
  std::pair<int, std::vector<int>> dispatchWaitCounts();
  // After dispatchWaitCounts of a dispatch across nodes: the records this rank forwards (the handle's forward map rows).
  int dispatchForwardCount() const;
  // The proxy work of an internode call (runtime/internode_floor_plan.hpp): records of a dispatch of rows of
  // hidden_bytes with num_scales 4-byte scales and num_topk, or of a combine of BF16 rows of hidden_bytes; `sent` and
  // `received` records per (channel, node) stream; a dispatch starts with the counts exchange.
  proxy::FloorPlan internodeFloorPlan(bool dispatch, size_t hidden_bytes, int num_scales, int num_topk,
                                      const NormalConfig& config, const std::vector<int32_t>& sent,
                                      const std::vector<int32_t>& received);
  // Steps 4-5 of the dispatch last sent, into `outputs`.
  void dispatchRecv(const kernels::intranode::DispatchOutputs& outputs, const NormalConfig& config, uintptr_t stream);
  void combine(kernels::intranode::CombineArgs args, const NormalConfig& config, uintptr_t stream);

  // Throws the first recorded failure: a kernel's ErrorRecord (TimeoutError naming the peer and the step;
  // InvalidArgument for a top-k entry a low-latency kernel rejected, after which the Buffer stays usable) or a proxy
  // error. Called at the start of every call and by hooks.
  void checkErrors() const;

 private:
  // The send half (and the receive half unless return_recv_hook) of a low-latency call on the current half.
  LowLatencyPending lowLatencySend(LowLatencyPending pending, bool return_recv_hook, const LowLatencyStreams& streams);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace uccl::ep::runtime
