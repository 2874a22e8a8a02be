#include "runtime/size_hints.hpp"

#include <algorithm>
#include <cstdint>

#include "kernels/internode.hpp"
#include "kernels/intranode.hpp"
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

// One token of the hint's rings (config.py's token_bytes): the row, the top-k ids and weights at the largest top-k,
// one 4-byte scale per 128 bytes of row, and 12 bytes (source index, destination mask), rounded up to 16.
size_t tokenBytes(size_t hidden_bytes) {
  return kernels::intranode::alignUp(hidden_bytes + size_t(kernels::kMaxTopk) * 12 + (hidden_bytes + 127) / 128 * 4 + 12,
                                     16);
}

// The environment as it is now (readEnv, not the cached env()): a hint is asked for before any Buffer exists, often
// right after the launcher or the caller set the variables.
int ranksPerNode(const SizeHintArgs& a, const Env& e) {
  if (a.num_ranks_per_node > 0) return std::min(a.num_ranks_per_node, a.num_ranks);
  return ranksPerNodeFromEnv(a.num_ranks, std::min(kDefaultRanksPerNode, a.num_ranks), e);
}

// r = a * b + c, false when that does not fit a size_t.
bool mulAddFits(size_t a, size_t b, size_t c, size_t* r) {
  return !__builtin_mul_overflow(a, b, r) && !__builtin_add_overflow(*r, c, r);
}

// channels * count * copies rings of (recv_tokens records + counters), rounded up to kBufferSizeUnit; a size that
// does not fit 64 bits is InvalidArgument naming the arguments that made it (a hint never wraps). `recv_name` is the
// Config knob behind a.recv_tokens, `count_name` what `count` counts (NVLink peers, nodes).
size_t total(const SizeHintArgs& a, size_t count, const char* count_name, size_t copies, const char* call,
             const char* recv_name, size_t record, size_t fixed = 0) {
  // hidden_bytes < 2^63, so one record (about 1.03 x hidden_bytes) still fits; the products may not.
  size_t ring = 0;
  if (!mulAddFits(static_cast<size_t>(a.recv_tokens), record, kRingCounterBytes, &ring)) {
    UCCL_EP_THROW_ARG(
        "{}: hidden_bytes={} with {}={} is out of range: one ring of {} records of {} bytes overflows "
        "64 bits (a size hint never wraps)",
        call, a.hidden_bytes, recv_name, a.recv_tokens, a.recv_tokens, record);
  }
  // num_sms / 2 < 2^30, count <= num_ranks < 2^31 and copies <= 2: the ring count fits.
  const size_t rings = static_cast<size_t>(a.num_sms / 2) * count * copies;
  size_t v = 0;
  if (!mulAddFits(rings, ring, kernels::kBufferSizeUnit - 1, &v)) {
    UCCL_EP_THROW_ARG(
        "{}: the size overflows 64 bits: {} rings (num_sms={}: {} channels, x {} {} of num_ranks={}, "
        "x {}) of {} bytes (hidden_bytes={}, {}={}); those arguments are out of range (a size hint "
        "never wraps)",
        call, rings, a.num_sms, a.num_sms / 2, count, count_name, a.num_ranks, copies, ring, a.hidden_bytes, recv_name,
        a.recv_tokens);
  }
  if (__builtin_add_overflow(v, fixed, &v)) {
    UCCL_EP_THROW_ARG("{}: the size overflows 64 bits: the rings ({} bytes) and the counts areas of num_ranks={} ({} "
                      "bytes); those arguments are out of range (a size hint never wraps)",
                      call, v, a.num_ranks, fixed);
  }
  return v / kernels::kBufferSizeUnit * kernels::kBufferSizeUnit;
}

}  // namespace

size_t nvlBufferSizeHint(const SizeHintArgs& a) {
  check(a, "get_nvl_buffer_size_hint");
  const Env e = readEnv();
  const int peers = e.normal_mnnvl ? a.num_ranks : ranksPerNode(a, e);
  return total(a, static_cast<size_t>(peers), "NVLink peers", 1, "get_nvl_buffer_size_hint",
               "num_max_nvl_chunked_recv_tokens", tokenBytes(static_cast<size_t>(a.hidden_bytes)));
}

size_t rdmaBufferSizeHint(const SizeHintArgs& a) {
  check(a, "get_rdma_buffer_size_hint");
  const Env e = readEnv();
  const int rpn = ranksPerNode(a, e);
  if (e.normal_mnnvl || rpn >= a.num_ranks) return 0;
  const int64_t nodes = (int64_t{a.num_ranks} + rpn - 1) / rpn;  // int64_t: num_ranks + rpn - 1 may pass INT_MAX
  // kernels/internode.hpp: the counts areas, then per (area, node) the rings of every channel, records at their
  // largest (top-k at its limit, one position per rank of the node).
  size_t counts = 0;
  const int64_t ranks = int64_t{a.num_ranks};
  if (ranks <= int64_t{1} << 24 && nodes <= int64_t{1} << 24) {
    kernels::internode::RdmaLayout l = kernels::internode::makeRdmaLayout(0, static_cast<int>(nodes),
                                                                          static_cast<int>(ranks), 0, 0, 0);
    counts = l.ringsOff();
  } else {
    UCCL_EP_THROW_ARG("get_rdma_buffer_size_hint: the size overflows 64 bits: the counts areas of num_ranks={} in {} "
                      "nodes (every rank holds a row of every rank); those arguments are out of range (a size hint "
                      "never wraps)",
                      a.num_ranks, nodes);
  }
  return total(a, static_cast<size_t>(nodes), "nodes", 2, "get_rdma_buffer_size_hint",
               "num_max_rdma_chunked_recv_tokens",
               kernels::internode::maxRecordBytes(static_cast<size_t>(a.hidden_bytes), std::min(rpn, a.num_ranks)),
               counts);
}

size_t lowLatencyRdmaSizeHint(int num_max_dispatch_tokens_per_rank, int hidden, int num_ranks, int num_experts) {
  return lowLatencyLayout(num_max_dispatch_tokens_per_rank, hidden, num_ranks, num_experts,
                          "get_low_latency_rdma_size_hint")
      .totalBytes();
}

}  // namespace uccl::ep::runtime
