// runtime::Buffer::checkErrors: the one place a kernel's ErrorRecord (kernels/error_record.hpp) and a proxy's first
// error become an exception: uccl::ep::TimeoutError for a stall, uccl::ep::Error otherwise, naming the rank, the
// step, the peer and the path (NVLink or the proxies' transport).
#include <string>

#include "runtime/buffer_impl.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

namespace k = kernels;

namespace {

const char* stepName(int32_t op) {
  switch (op) {
    case k::kOpDispatchSend: return "low-latency dispatch (send)";
    case k::kOpDispatchRecv: return "low-latency dispatch (receive)";
    case k::kOpCombineSend: return "low-latency combine (send)";
    case k::kOpCombineRecv: return "low-latency combine (receive)";
    case k::kOpReuse: return "normal-mode dispatch/combine (waiting to reuse the nvl buffer)";
    case k::kOpReady: return "normal-mode dispatch/combine (waiting for the peers' data)";
    case k::kOpWorstOverflow: return "normal-mode dispatch (num_worst_tokens)";
    case k::kOpNvlOverflow: return "normal-mode dispatch/combine (the rows a rank receives)";
    case k::kOpArrive: return "normal-mode dispatch/combine (waiting for the peers' rows)";
    case k::kOpChunk: return "normal-mode dispatch/combine (waiting for a chunk of a peer's rows)";
    default: return "kernel (unknown step)";
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

std::string Buffer::Impl::describeKernelError(const k::ErrorRecord& rec, bool* timeout) const {
  const int32_t op = rec.op;
  const int32_t peer = rec.peer;
  const double secs = env().timeout_secs;
  const std::string step = stepName(op);
  const std::string expert = rec.expert >= 0 ? fmt::format(" (expert {})", rec.expert) : std::string();
  const std::string path = peer < 0 || peer >= cfg.num_ranks ? std::string()
                           : isLowLatencyNvlPeer(peer)       ? std::string(" over NVLink")
                                                             : fmt::format(" through the proxies ({})", transport_name);
  *timeout = false;
  switch (rec.code) {
    case k::kTimeout:
      *timeout = true;
      if (op == k::kOpReuse) {
        return fmt::format("{} on rank {}: rank {} did not finish reading this rank's nvl buffer from the previous "
                           "dispatch/combine within UCCL_EP_TIMEOUT_SECS={}s (it never joined that call, or failed)",
                           step, cfg.rank, peer, secs);
      }
      if (op == k::kOpArrive) {
        return fmt::format("{} on rank {}: rank {} did not push its rows for this dispatch/combine within "
                           "UCCL_EP_TIMEOUT_SECS={}s",
                           step, cfg.rank, peer, secs);
      }
      if (op == k::kOpChunk) {
        return fmt::format("{} on rank {}: rank {} did not push chunk {} of its rows for this dispatch/combine within "
                           "UCCL_EP_TIMEOUT_SECS={}s",
                           step, cfg.rank, peer, rec.detail, secs);
      }
      if (op == k::kOpReady) {
        return fmt::format("{} on rank {}: rank {} did not join this dispatch/combine within UCCL_EP_TIMEOUT_SECS={}s",
                           step, cfg.rank, peer, secs);
      }
      if (op == k::kOpDispatchRecv || op == k::kOpCombineRecv) {
        return fmt::format("{} on rank {}: rank {} did not deliver its {}{}{} within UCCL_EP_TIMEOUT_SECS={}s", step,
                           cfg.rank, peer, op == k::kOpDispatchRecv ? "dispatched tokens" : "combined rows", expert,
                           path, secs);
      }
      return fmt::format("{} on rank {}: writing to rank {}{}{} did not complete within UCCL_EP_TIMEOUT_SECS={}s", step,
                         cfg.rank, peer, expert, path, secs);
    case k::kRingError: {
      // detail: ring id in the high half, ring::Status in the low half.
      const uint32_t ring_id = static_cast<uint32_t>(rec.detail >> 32);
      const uint32_t status = static_cast<uint32_t>(rec.detail);
      *timeout = status == static_cast<uint32_t>(ring::Status::kTimeout);
      const std::string target = peer >= 0 ? fmt::format(" carrying rows for rank {}{}", peer, expert) : "";
      return fmt::format("{} on rank {}: descriptor ring {}{} failed with status {} ({}){}", step, cfg.rank, ring_id,
                         target, status, ringStatusName(status),
                         *timeout ? fmt::format(" within UCCL_EP_TIMEOUT_SECS={}s", secs) : std::string());
    }
    case k::kSlotOverflow:
      if (op == k::kOpNvlOverflow) {
        return fmt::format("{} on rank {}: the rows rank {} receives need {} bytes of nvl buffer, num_nvl_bytes is {}; "
                           "build the Buffer with a larger num_nvl_bytes (Config.get_nvl_buffer_size_hint)",
                           step, cfg.rank, peer, rec.detail, cfg.num_nvl_bytes);
      }
      if (op == k::kOpWorstOverflow) {
        return fmt::format("{} on rank {}: {} rows arrived but num_worst_tokens leaves room for fewer; rows beyond it "
                           "were dropped",
                           step, cfg.rank, rec.detail);
      }
      return fmt::format("{} on rank {}: rank {}{} sent more tokens than num_max_dispatch_tokens_per_rank allows "
                         "(slot {})",
                         step, cfg.rank, peer, expert, rec.detail);
    default:
      return fmt::format("{} on rank {}: error code {} about rank {}{} (detail {})", step, cfg.rank, rec.code, peer,
                         expert, rec.detail);
  }
}

void Buffer::checkErrors() const {
  const Impl& m = *impl_;
  m.requireUsable("checkErrors()");
  const k::ErrorRecord* shared = m.error->host();
  // Written by the GPU through the mapping: the code is published last (release); read it first (acquire), then
  // the fields it publishes.
  k::ErrorRecord rec{};
  rec.code = __atomic_load_n(&shared->code, __ATOMIC_ACQUIRE);
  const std::string proxy_error = (m.proxies && m.proxies->hasError()) ? m.proxies->firstError() : std::string();
  if (rec.code == k::kNoError) {
    if (!proxy_error.empty()) UCCL_EP_THROW("rank {}: proxy failed: {}", m.cfg.rank, proxy_error);
    return;
  }
  rec.peer = __atomic_load_n(&shared->peer, __ATOMIC_RELAXED);
  rec.expert = __atomic_load_n(&shared->expert, __ATOMIC_RELAXED);
  rec.op = __atomic_load_n(&shared->op, __ATOMIC_RELAXED);
  rec.detail = __atomic_load_n(&shared->detail, __ATOMIC_RELAXED);
  bool timeout = false;
  std::string msg = m.describeKernelError(rec, &timeout);
  if (!proxy_error.empty()) msg += fmt::format("; proxy: {}", proxy_error);
  msg += ". The Buffer is unusable after this error; destroy it and build a new one";
  if (timeout) throw TimeoutError(msg);
  throw Error(msg);
}

}  // namespace uccl::ep::runtime
