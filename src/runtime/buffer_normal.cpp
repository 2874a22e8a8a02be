// runtime::Buffer, normal mode within one NVLink domain: contexts and launches of kernels/intranode.hpp (the value
// checks are call_checks.hpp's, made once per call here), and the CPU wait of a non-cached dispatch.
#include <atomic>
#include <chrono>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/buffer_impl.hpp"
#include "runtime/call_checks.hpp"
#include "runtime/cuda_check.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/interrupt.hpp"

namespace uccl::ep::runtime {

namespace intranode = kernels::intranode;

namespace {
void checkFits(size_t need, int64_t have, const char* call, const std::string& what) {
  if (need > static_cast<size_t>(have)) {
    UCCL_EP_THROW_ARG("{}: the NVLink buffer is too small: {} needs {} bytes, the buffer has num_nvl_bytes={}; build "
                      "the Buffer with num_nvl_bytes >= {}",
                      call, what, need, have, (need + kernels::kBufferSizeUnit - 1) / kernels::kBufferSizeUnit *
                                                  kernels::kBufferSizeUnit);
  }
}
}  // namespace

intranode::Context Buffer::Impl::normalContext(const char* call, const NormalConfig& config) const {
  requireConnected(call);
  // Across nodes the calls go to buffer_internode.cpp (Impl::internode), except on a low-latency Buffer: its RDMA
  // buffer holds the low-latency layout, which the internode rings would overwrite.
  if (topo.nvlDomainSize() < cfg.num_ranks) {
    UCCL_EP_THROW("{}: {}: this Buffer was built with low_latency_mode=True, whose RDMA buffer holds the low-latency "
                  "layout; normal mode across nodes needs a Buffer built with low_latency_mode=False and num_rdma_bytes "
                  "from Config.get_rdma_buffer_size_hint",
                  call, topo.describe());
  }
  return nvlContext(call, config);
}

intranode::Context Buffer::Impl::nvlContext(const char* call, const NormalConfig& config) const {
  requireConnected(call);
  if (cfg.num_nvl_bytes == 0) {
    UCCL_EP_THROW("{}: normal mode needs an NVLink buffer, the buffer was built with num_nvl_bytes=0; build it with "
                  "Buffer(group, num_nvl_bytes=...) (Config.get_nvl_buffer_size_hint)",
                  call);
  }
  intranode::Context c;
  c.rank = cfg.rank;
  c.num_ranks = cfg.num_ranks;
  c.self = nvlBuffer();
  c.peers = peer_nvl->get();
  c.error = error->device();
  c.timeout_ns = env().timeoutNs();
  c.host_counts = host_counts->device();
  c.num_sms = config.num_sms > 0 ? config.num_sms : num_sms;
  c.buffer_bytes = static_cast<size_t>(cfg.num_nvl_bytes);
  c.pipelined = normal_path.pipelined;
  if (config.num_max_nvl_chunked_send_tokens > 0) c.send_tokens = config.num_max_nvl_chunked_send_tokens;
  UCCL_EP_CUDA_OR_THROW(cudaSetDevice(cfg.device), "{}: selecting device {}", call, cfg.device);
  return c;
}

void Buffer::checkDispatchLayout(const intranode::LayoutArgs& a) {
  Impl& m = *impl_;
  m.requireConnected("get_dispatch_layout");
  runtime::checkDispatchLayout(m.cfg.num_ranks, a);
  m.checked_layout = std::make_tuple(a.num_tokens, a.num_topk, a.num_experts);
}

void Buffer::getDispatchLayout(intranode::LayoutArgs a, uintptr_t stream) {
  Impl& m = *impl_;
  const char* call = "get_dispatch_layout";
  checkErrors();
  if (m.checked_layout != std::make_tuple(a.num_tokens, a.num_topk, a.num_experts)) checkDispatchLayout(a);
  a.num_ranks = m.cfg.num_ranks;
  a.ranks_per_node = m.topo.ranks_per_node;
  a.error = m.error->device();
  UCCL_EP_CUDA_OR_THROW(cudaSetDevice(m.cfg.device), "{}: selecting device {}", call, m.cfg.device);
  intranode::launchLayout(a, reinterpret_cast<void*>(stream));
}

void Buffer::dispatchSend(intranode::DispatchArgs a, bool cached, const NormalConfig& config, uintptr_t stream) {
  Impl& m = *impl_;
  const char* call = "dispatch";
  checkErrors();
  if (m.internode) {
    m.internodeDispatchSend(a, cached, config, stream);
    return;
  }
  const intranode::Context c = m.normalContext(call, config);
  a.layout = dispatchLayout(m.cfg.num_ranks, a, cached);
  checkFits(a.layout.dispatchBytes(a.num_tokens, a.num_tokens), m.cfg.num_nvl_bytes, call,
            fmt::format("dispatching {} tokens of {} bytes ({} scales, top-{})", a.num_tokens, a.hidden_bytes,
                        a.num_scales, a.num_topk));
  a.report_to_host = !cached && a.num_worst_tokens == 0;
  a.cached = cached;  // the kernels check a handle's matrix as they read it (kBadHandle)
  if (a.report_to_host) {
    // No kernel writes it until this call's publish step; the GPU's release store of `ready` publishes the counts.
    __atomic_store_n(&m.host_counts->host()->ready, 0, __ATOMIC_RELEASE);
  }
  m.pending_dispatch.reset();
  m.pending_internode.reset();
  intranode::launchDispatchSend(c, a, cached, reinterpret_cast<void*>(stream));
  m.pending_dispatch = a;
}

std::pair<int, std::vector<int>> Buffer::dispatchWaitCounts() {
  Impl& m = *impl_;
  const char* call = "dispatch";
  m.requireConnected(call);
  if (!m.pending_dispatch || !m.pending_dispatch->report_to_host) {
    UCCL_EP_THROW("{}: no non-cached dispatch without num_worst_tokens is waiting for its receive counts", call);
  }
  const int per_rank = m.pending_dispatch->num_experts / m.cfg.num_ranks;
  const intranode::HostCounts* hc = m.host_counts->host();
  // The GPU wait inside the publish step times out first and records the rank; this wait allows for it.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::nanoseconds(env().timeoutNs()) + std::chrono::seconds(2);
  uint32_t spins = 0;
  InterruptPoll interrupt("dispatch: waiting for the receive counts");
  // A failure ends the wait; a rejected argument (kBadHandle, kBadExpertId) does not: the kernels finish the call
  // around it and the peers wait for this rank's receive half, so dispatchRecv raises it once that is launched.
  bool argument_recorded = false;
  while (__atomic_load_n(&hc->ready, __ATOMIC_ACQUIRE) == 0) {
    interrupt.poll();
    if (!argument_recorded && __atomic_load_n(&m.error->host()->code, __ATOMIC_ACQUIRE) != kernels::kNoError) {
      m.raiseRecordedErrors(/*argument_errors=*/false);
      argument_recorded = true;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      checkErrors();
      throw TimeoutError(fmt::format(
          "dispatch on rank {}: the receive counts did not arrive within UCCL_EP_TIMEOUT_SECS={}s (+2 s) and no "
          "kernel recorded a failure: the stream may be blocked by earlier work",
          m.cfg.rank, env().timeout_secs));
    }
    if (++spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  std::vector<int> per_expert(per_rank);
  for (int i = 0; i < per_rank; ++i) per_expert[i] = hc->per_expert[i];
  return {hc->num_recv, std::move(per_expert)};
}

void Buffer::dispatchRecv(const intranode::DispatchOutputs& outputs, const NormalConfig& config, uintptr_t stream) {
  Impl& m = *impl_;
  const char* call = "dispatch";
  m.requireUsable(call);
  // Only a failure stops here. An argument this call's send half rejected (a bad handle entry voids the call) is
  // raised after the receive half is launched: its finish step marks this rank done in every peer's buffer, which
  // their next call waits for, so skipping it would hang the peers instead of raising here.
  m.raiseRecordedErrors(/*argument_errors=*/false);
  if (!m.pending_dispatch) UCCL_EP_THROW("{}: the receive half runs after a dispatch's send half", call);
  if (m.pending_internode) {
    m.internodeDispatchRecv(outputs, stream);
    m.raiseRecordedErrors(/*argument_errors=*/true);
    return;
  }
  const intranode::Context c = m.normalContext(call, config);
  intranode::DispatchArgs a = *m.pending_dispatch;
  checkDispatchOutputs(a, outputs);
  a.out = outputs;
  m.pending_dispatch.reset();
  intranode::launchDispatchRecv(c, a, reinterpret_cast<void*>(stream));
  m.raiseRecordedErrors(/*argument_errors=*/true);
}

void Buffer::combine(intranode::CombineArgs a, const NormalConfig& config, uintptr_t stream) {
  Impl& m = *impl_;
  const char* call = "combine";
  checkErrors();
  if (m.internode) {
    m.internodeCombine(a, config, stream);
    return;
  }
  const intranode::Context c = m.normalContext(call, config);
  a.layout = combineLayout(m.cfg.num_ranks, a);
  checkFits(a.layout.combineBytes(a.num_recv_tokens), m.cfg.num_nvl_bytes, call,
            fmt::format("combining {} rows of hidden {} (top-{})", a.num_recv_tokens, a.hidden, a.num_topk));
  intranode::launchCombine(c, a, reinterpret_cast<void*>(stream));
}

}  // namespace uccl::ep::runtime
