// runtime::Buffer::checkErrors: the one place a kernel's ErrorRecord (kernels/error_record.hpp) and a proxy's first
// error become an exception: uccl::ep::TimeoutError for a stall, uccl::ep::InvalidArgument for the caller's input
// that a kernel rejected (a bad expert id, a bad handle entry), uccl::ep::Error otherwise. The words are
// kernel_error_text.cpp's.
#include <string>

#include "runtime/buffer_impl.hpp"
#include "runtime/kernel_error_text.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

namespace k = kernels;

void Buffer::Impl::raiseRecordedErrors(bool argument_errors) const {
  k::ErrorRecord* shared = error->host();
  // Written by the GPU through the mapping: the code is published last (release); read it first (acquire), then
  // the fields it publishes.
  k::ErrorRecord rec{};
  rec.code = __atomic_load_n(&shared->code, __ATOMIC_ACQUIRE);
  const std::string proxy_error = (proxies && proxies->hasError()) ? proxies->firstError() : std::string();
  if (rec.code == k::kNoError) {
    if (!proxy_error.empty()) UCCL_EP_THROW("rank {}: proxy failed: {}", cfg.rank, proxy_error);
    return;
  }
  rec.peer = __atomic_load_n(&shared->peer, __ATOMIC_RELAXED);
  rec.expert = __atomic_load_n(&shared->expert, __ATOMIC_RELAXED);
  rec.op = __atomic_load_n(&shared->op, __ATOMIC_RELAXED);
  rec.detail = __atomic_load_n(&shared->detail, __ATOMIC_RELAXED);
  rec.token = __atomic_load_n(&shared->token, __ATOMIC_RELAXED);
  rec.topk_col = __atomic_load_n(&shared->topk_col, __ATOMIC_RELAXED);
  KernelErrorSite site;
  site.rank = cfg.rank;
  site.num_ranks = cfg.num_ranks;
  site.timeout_secs = env().timeout_secs;
  site.num_nvl_bytes = cfg.num_nvl_bytes;
  site.path_to = [this](int peer) {
    return isLowLatencyNvlPeer(peer) ? std::string(" over NVLink")
                                     : fmt::format(" through the proxies ({})", transport_name);
  };
  if (rec.op == k::kOpClean) {
    // Written by the barrier kernel, which has ended: the error is raised at the clean once it has waited for it.
    const int32_t* absent = clean_absent->host();
    for (int r = 0; r < cfg.num_ranks; ++r) {
      if (__atomic_load_n(&absent[r], __ATOMIC_RELAXED) != 0) site.clean_absent.push_back(r);
    }
  }
  KernelErrorText text = describeKernelError(rec, site);
  if (text.kind == KernelErrorKind::kArgument && proxy_error.empty()) {
    if (!argument_errors) return;
    // The kernel skipped the entry and finished the call: nothing of the buffer is broken. Clear the record so that
    // later calls run, in the order the kernels' claim expects: the code first (no error), then the claim (op) with
    // release, so a kernel that claims next writes its fields after ours are gone.
    __atomic_store_n(&shared->code, k::kNoError, __ATOMIC_RELAXED);
    shared->peer = shared->expert = shared->token = shared->topk_col = 0;
    shared->detail = 0;
    __atomic_store_n(&shared->op, 0, __ATOMIC_RELEASE);
    throw InvalidArgument(text.message);
  }
  std::string msg = std::move(text.message);
  if (!proxy_error.empty()) msg += fmt::format("; proxy: {}", proxy_error);
  msg += ". The Buffer is unusable after this error; destroy it and build a new one";
  if (text.kind == KernelErrorKind::kTimeout) throw TimeoutError(msg);
  throw Error(msg);
}

void Buffer::checkErrors() const {
  const Impl& m = *impl_;
  m.requireUsable("checkErrors()");
  m.raiseRecordedErrors(/*argument_errors=*/true);
}

}  // namespace uccl::ep::runtime
