#include "runtime/size_hints.hpp"

#include <algorithm>

#include "kernels/internode.hpp"
#include "kernels/limits.hpp"
#include "runtime/call_checks.hpp"
#include "runtime/topology.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

namespace {

constexpr int kDefaultRanksPerNode = 8;  // DeepEP's node size, where nothing says otherwise
using kernels::internode::kRingCounterBytes;

void check(const SizeHintArgs& a, const char* call) {
  if (a.hidden_bytes <= 0) UCCL_EP_THROW_ARG("{}: hidden_bytes must be positive, got {}", call, a.hidden_bytes);
  if (a.num_ranks <= 0) UCCL_EP_THROW_ARG("{}: num_ranks must be positive, got {}", call, a.num_ranks);
  if (a.num_ranks_per_node < 0) {
    UCCL_EP_THROW_ARG("{}: num_ranks_per_node must be positive (0: from the environment), got {}", call,
                      a.num_ranks_per_node);
  }
  if (a.num_sms < 2) UCCL_EP_THROW_ARG("{}: num_sms must be at least 2, got {}", call, a.num_sms);
  if (a.recv_tokens < 1) UCCL_EP_THROW_ARG("{}: the receive-token count must be positive, got {}", call, a.recv_tokens);
}

// One record of the RDMA rings (kernels/internode.hpp), the largest top-k allowed.
size_t tokenBytes(size_t hidden_bytes) {
  return kernels::internode::recordBytes(hidden_bytes, (hidden_bytes + 127) / 128 * 4, kernels::kMaxTopk);
}

// The environment as it is now (readEnv, not the cached env()): a hint is asked for before any Buffer exists, often
// right after the launcher or the caller set the variables.
int ranksPerNode(const SizeHintArgs& a, const Env& e) {
  if (a.num_ranks_per_node > 0) return std::min(a.num_ranks_per_node, a.num_ranks);
  return ranksPerNodeFromEnv(a.num_ranks, std::min(kDefaultRanksPerNode, a.num_ranks), e);
}

// a * b + c, or InvalidArgument naming the call when it does not fit a size_t (a hint never wraps).
size_t mulAdd(size_t a, size_t b, size_t c, const char* call) {
  size_t r = 0;
  if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r)) {
    UCCL_EP_THROW_ARG("{}: the size overflows 64 bits ({} x {} + {}); the arguments are out of range", call, a, b, c);
  }
  return r;
}

size_t perRing(const SizeHintArgs& a, const char* call) {
  // hidden_bytes < 2^63, so one token's bytes (about 1.03 x hidden_bytes) still fit; the products may not.
  return mulAdd(static_cast<size_t>(a.recv_tokens), tokenBytes(static_cast<size_t>(a.hidden_bytes)), kRingCounterBytes,
                call);
}

// channels * count * per_ring * copies, rounded up to kBufferSizeUnit, without wrapping.
size_t total(const SizeHintArgs& a, size_t count, size_t copies, const char* call) {
  const size_t v = mulAdd(mulAdd(mulAdd(static_cast<size_t>(a.num_sms / 2), count, 0, call), perRing(a, call), 0, call),
                          copies, kernels::kBufferSizeUnit - 1, call);
  return v / kernels::kBufferSizeUnit * kernels::kBufferSizeUnit;
}

}  // namespace

size_t nvlBufferSizeHint(const SizeHintArgs& a) {
  check(a, "get_nvl_buffer_size_hint");
  const Env e = readEnv();
  const int peers = e.normal_mnnvl ? a.num_ranks : ranksPerNode(a, e);
  return total(a, static_cast<size_t>(peers), 1, "get_nvl_buffer_size_hint");
}

size_t rdmaBufferSizeHint(const SizeHintArgs& a) {
  check(a, "get_rdma_buffer_size_hint");
  const Env e = readEnv();
  const int rpn = ranksPerNode(a, e);
  if (e.normal_mnnvl || rpn >= a.num_ranks) return 0;
  const int nodes = (a.num_ranks + rpn - 1) / rpn;
  return total(a, static_cast<size_t>(nodes), 2, "get_rdma_buffer_size_hint");
}

size_t lowLatencyRdmaSizeHint(int num_max_dispatch_tokens_per_rank, int hidden, int num_ranks, int num_experts) {
  return lowLatencyLayout(num_max_dispatch_tokens_per_rank, hidden, num_ranks, num_experts,
                          "get_low_latency_rdma_size_hint")
      .totalBytes();
}

}  // namespace uccl::ep::runtime
