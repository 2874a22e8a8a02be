// runtime::Buffer, normal mode within one memory domain: checks, contexts and launches of kernels/intranode.hpp,
// and the CPU wait of a non-cached dispatch.
#include <atomic>
#include <chrono>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/buffer_impl.hpp"
#include "runtime/cuda_check.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

namespace intranode = kernels::intranode;

intranode::Layout Buffer::Impl::intranodeLayout(const char* call, int num_experts, size_t hidden_bytes,
                                                size_t scale_bytes, int num_topk, size_t combine_hidden_bytes) const {
  // num_experts = 0: a call that counts no experts (combine, cached dispatch; the handle carries no count).
  const int world = cfg.world;
  if (num_experts < 0 || num_experts % world != 0 || num_experts > intranode::kMaxExperts) {
    UCCL_EP_THROW("{}: num_experts = {} (expected a multiple of the {} ranks, at most {}; 0 when the call counts no "
                  "experts)",
                  call, num_experts, world, intranode::kMaxExperts);
  }

  if (num_topk < 0 || num_topk > intranode::kMaxTopk) {
    UCCL_EP_THROW("{}: num_topk = {} (expected 0 to {})", call, num_topk, intranode::kMaxTopk);
  }
  if (hidden_bytes % 16 != 0 || combine_hidden_bytes % 16 != 0) {
    UCCL_EP_THROW("{}: a row of {} bytes is not a multiple of 16", call,
                  hidden_bytes % 16 != 0 ? hidden_bytes : combine_hidden_bytes);
  }
  return intranode::makeLayout(world, num_experts, hidden_bytes, scale_bytes, num_topk, combine_hidden_bytes);
}

intranode::Context Buffer::Impl::normalContext(const char* call, int num_sms, int send_tokens) const {
  requireConnected(call);
  if (cfg.num_nvl_bytes == 0)
    UCCL_EP_THROW("{}: normal mode needs num_nvl_bytes > 0 (Config.get_nvl_buffer_size_hint)", call);
  if (!singleDomain()) {
    UCCL_EP_THROW(
        "{}: the {} ranks span {} nodes of {} ranks; normal mode across nodes without one NVLink domain is "
        "not supported yet (set UCCL_EP_NORMAL_MNNVL=1 when every GPU shares one NVLink domain)",
        call, cfg.world, (cfg.world + cfg.ranks_per_node - 1) / cfg.ranks_per_node, cfg.ranks_per_node);
  }
  if (cfg.world > intranode::kMaxRanks)
    UCCL_EP_THROW("{}: {} ranks (at most {})", call, cfg.world, intranode::kMaxRanks);
  intranode::Context c;
  c.rank = cfg.rank;
  c.num_ranks = cfg.world;
  c.self = static_cast<uint8_t*>(nvl_buffer);
  c.peers = peer_nvl->get();
  c.error = error->device();
  c.timeout_ns = env().timeoutNs();
  c.host_counts = host_counts->device();
  c.num_sms = num_sms > 0 ? num_sms : this->num_sms;
  if (send_tokens > 0) c.send_tokens = send_tokens;
  UCCL_EP_CUDA_OR_THROW(cudaSetDevice(cfg.device), "{}: selecting device {}", call, cfg.device);
  return c;
}

bool Buffer::normalSingleDomain() const { return impl_->singleDomain(); }

size_t Buffer::normalDispatchBytes(int num_tokens, size_t hidden_bytes, size_t scale_bytes, int num_topk,
                                   int num_experts) const {
  return impl_->intranodeLayout("dispatch", num_experts, hidden_bytes, scale_bytes, num_topk, 16)
      .dispatchBytes(num_tokens);
}

size_t Buffer::normalCombineBytes(int num_recv_rows, int hidden, int num_topk, int num_experts) const {
  return impl_->intranodeLayout("combine", num_experts, 16, 0, num_topk, static_cast<size_t>(hidden) * 2)
      .combineBytes(num_recv_rows);
}

void Buffer::normalLayout(intranode::LayoutArgs a, uintptr_t stream) {
  Impl& m = *impl_;
  m.requireConnected("get_dispatch_layout");
  checkErrors();
  m.intranodeLayout("get_dispatch_layout", a.num_experts, 16, 0, a.num_topk, 16);
  if (a.num_experts == 0) UCCL_EP_THROW("get_dispatch_layout: num_experts must be positive");
  a.num_ranks = m.cfg.world;
  a.ranks_per_node = m.cfg.ranks_per_node;
  UCCL_EP_CUDA_OR_THROW(cudaSetDevice(m.cfg.device), "get_dispatch_layout: selecting device {}", m.cfg.device);
  intranode::launchLayout(a, reinterpret_cast<void*>(stream));
}

namespace {
void checkAligned(const void* p, size_t stride, const char* call, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0 || stride % 16 != 0) {
    UCCL_EP_THROW(
        "{}: {} must start on a 16-byte boundary with rows a multiple of 16 bytes apart (address {}, row "
        "stride {})",
        call, what, p, stride);
  }
}
void checkFits(size_t need, int64_t have, const char* call, const std::string& what) {
  if (need > static_cast<size_t>(have)) {
    UCCL_EP_THROW("{}: {} needs num_nvl_bytes >= {} on this rank, the Buffer has {}", call, what, need, have);
  }
}
}  // namespace

void Buffer::normalDispatchSend(intranode::DispatchArgs a, bool cached, int num_sms, uintptr_t stream) {
  Impl& m = *impl_;
  const char* call = "dispatch";
  checkErrors();
  const intranode::Context c = m.normalContext(call, num_sms, 0);
  a.layout = m.intranodeLayout(call, a.num_experts, a.layout.hidden_bytes, a.layout.scale_bytes, a.layout.num_topk, 16);
  if (a.num_tokens < 0) UCCL_EP_THROW("{}: num_tokens = {}", call, a.num_tokens);
  if (a.topk_idx != nullptr && a.num_experts == 0) UCCL_EP_THROW("{}: top-k ids need num_experts > 0", call);
  if (a.num_tokens > 0) checkAligned(a.x, a.x_row_stride, call, "x");
  checkFits(a.layout.dispatchBytes(a.num_tokens), m.cfg.num_nvl_bytes, call,
            fmt::format("dispatching {} tokens of {} bytes (+ {} scale bytes, top-{})", a.num_tokens,
                        a.layout.hidden_bytes, a.layout.scale_bytes, a.layout.num_topk));
  if (a.report_to_host && !cached) {
    m.host_counts->host()->ready = 0;  // no kernel writes it until this call's publish step
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  intranode::launchDispatchSend(c, a, cached, reinterpret_cast<void*>(stream));
}

std::pair<int, std::vector<int>> Buffer::normalDispatchWait(int num_experts) {
  Impl& m = *impl_;
  const char* call = "dispatch";
  m.requireConnected(call);
  const int per_rank = num_experts / m.cfg.world;
  const intranode::HostCounts* hc = m.host_counts->host();
  // The GPU wait inside the publish step times out first and records the rank; this wait allows for it.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::nanoseconds(env().timeoutNs()) + std::chrono::seconds(2);
  uint32_t spins = 0;
  while (__atomic_load_n(const_cast<const int64_t*>(&hc->ready), __ATOMIC_ACQUIRE) == 0) {
    if (__atomic_load_n(&m.error->host()->code, __ATOMIC_ACQUIRE) != kernels::ll::kNoError) checkErrors();
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

void Buffer::normalDispatchRecv(intranode::DispatchArgs a, int num_sms, int send_tokens, uintptr_t stream) {
  Impl& m = *impl_;
  const char* call = "dispatch";
  checkErrors();
  const intranode::Context c = m.normalContext(call, num_sms, send_tokens);
  a.layout = m.intranodeLayout(call, a.num_experts, a.layout.hidden_bytes, a.layout.scale_bytes, a.layout.num_topk, 16);
  if (a.num_out_rows < 0) UCCL_EP_THROW("{}: {} output rows", call, a.num_out_rows);
  if (a.recv_topk_idx != nullptr && a.num_experts == 0) {
    UCCL_EP_THROW("{}: local expert ids need num_experts > 0", call);
  }
  if (a.num_out_rows > 0) checkAligned(a.recv_x, a.layout.hidden_bytes, call, "recv_x");
  intranode::launchDispatchRecv(c, a, reinterpret_cast<void*>(stream));
}

void Buffer::normalCombine(intranode::CombineArgs a, int num_sms, int send_tokens, uintptr_t stream) {
  Impl& m = *impl_;
  const char* call = "combine";
  checkErrors();
  const intranode::Context c = m.normalContext(call, num_sms, send_tokens);
  a.layout = m.intranodeLayout(call, a.layout.num_experts, 16, 0, a.num_topk, static_cast<size_t>(a.hidden) * 2);
  if (a.num_recv_rows > 0) checkAligned(a.x, static_cast<size_t>(a.hidden) * 2, call, "x");
  if (a.num_tokens > 0) checkAligned(a.out, static_cast<size_t>(a.hidden) * 2, call, "the output");
  checkFits(
      a.layout.combineBytes(a.num_recv_rows), m.cfg.num_nvl_bytes, call,
      fmt::format("combining {} received rows of hidden {} (top-{} weights)", a.num_recv_rows, a.hidden, a.num_topk));
  intranode::launchCombine(c, a, reinterpret_cast<void*>(stream));
}

}  // namespace uccl::ep::runtime
