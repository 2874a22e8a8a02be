#include "runtime/call_checks.hpp"

#include <cstdint>

#include "kernels/limits.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

namespace k = kernels;
namespace ll = kernels::ll;
namespace intranode = kernels::intranode;

namespace {

void checkTopk(const char* call, const char* tensor, int num_topk, int minimum) {
  if (num_topk < minimum || num_topk > k::kMaxTopk) {
    UCCL_EP_THROW_ARG("{}: num_topk = {} ({} columns in {}): top-k must be in [{}, {}]", call, num_topk, num_topk,
                      tensor, minimum, k::kMaxTopk);
  }
}

void checkTokens(const char* call, int num_tokens, int max_tokens) {
  if (num_tokens < 0 || num_tokens > max_tokens) {
    UCCL_EP_THROW_ARG("{}: num_tokens = {}: {} tokens exceed num_max_dispatch_tokens_per_rank={}", call, num_tokens,
                      num_tokens, max_tokens);
  }
}

// Rows move in 16-byte vectors: the base and the row pitch of every row-major tensor align to kRowAlign.
void checkRows(const char* call, const char* name, const char* pitch_name, const void* base, size_t row_bytes,
               size_t pitch) {
  if (pitch % k::kRowAlign != 0 || pitch < row_bytes) {
    UCCL_EP_THROW_ARG("{}: {} = {}: rows of {} must lie a multiple of {} bytes apart and not overlap ({} bytes each)",
                      call, pitch_name, pitch, name, k::kRowAlign, row_bytes);
  }
  if (reinterpret_cast<uintptr_t>(base) % k::kRowAlign != 0) {
    UCCL_EP_THROW_ARG("{}: {} must start at a {}-byte aligned address (a column slice of a wider tensor is not), got "
                      "address {}",
                      call, name, k::kRowAlign, base);
  }
}

void checkNormalExperts(const char* call, int num_ranks, int num_experts, bool allow_zero) {
  if (num_experts < (allow_zero ? 0 : 1) || num_experts > k::kMaxNormalExperts || num_experts % num_ranks != 0) {
    UCCL_EP_THROW_ARG("{}: num_experts = {}: expected a {}multiple of the number of ranks ({}), at most {}", call,
                      num_experts, allow_zero ? "" : "positive ", num_ranks, k::kMaxNormalExperts);
  }
}

void checkNvlRanks(const char* call, int num_ranks) {
  if (num_ranks < 1 || num_ranks > k::kMaxNvlRanks) {
    UCCL_EP_THROW_ARG("{}: {} ranks; normal mode supports 1 to {} NVLink peers", call, num_ranks, k::kMaxNvlRanks);
  }
}

}  // namespace

ll::Layout lowLatencyLayout(int max_tokens, int hidden, int num_ranks, int num_experts, const char* call) {
  if (num_ranks < 1) UCCL_EP_THROW_ARG("{}: num_ranks must be positive, got {}", call, num_ranks);
  if (max_tokens < 1 || max_tokens > k::kMaxTokensPerRank) {
    UCCL_EP_THROW_ARG("{}: num_max_dispatch_tokens_per_rank must be in [1, {}], got {}", call, k::kMaxTokensPerRank,
                      max_tokens);
  }
  if (hidden < k::kMinHidden || hidden > k::kMaxHidden || hidden % k::kChannelsPerScale != 0) {
    UCCL_EP_THROW_ARG("{}: hidden must be a multiple of {} in [{}, {}], got {}", call, k::kChannelsPerScale,
                      k::kMinHidden, k::kMaxHidden, hidden);
  }
  if (num_experts < 1 || num_experts % num_ranks != 0) {
    UCCL_EP_THROW_ARG("{}: num_experts ({}) must be a positive multiple of num_ranks ({})", call, num_experts,
                      num_ranks);
  }
  if (num_experts / num_ranks > k::kMaxExpertsPerRank) {
    UCCL_EP_THROW_ARG("{}: num_experts / num_ranks = {} experts per rank; at most {} are supported", call,
                      num_experts / num_ranks, k::kMaxExpertsPerRank);
  }
  return ll::makeLayout(max_tokens, hidden, num_ranks, num_experts);
}

void checkLowLatencyDispatch(const ll::Layout& l, const ll::DispatchArgs& a) {
  const char* call = "low_latency_dispatch";
  checkTokens(call, a.num_tokens, l.max_tokens);
  checkTopk(call, "topk_idx", a.num_topk, 1);
  if (a.use_ue8m0 && !(a.use_fp8 && a.round_scale)) {
    UCCL_EP_THROW_ARG("{}: use_ue8m0=True needs use_fp8=True and round_scale=True, got use_fp8={}, round_scale={}",
                      call, a.use_fp8, a.round_scale);
  }
  if (a.use_ue8m0 && l.hidden % k::kUe8m0ChannelsPerInt != 0) {
    UCCL_EP_THROW_ARG("{}: use_ue8m0=True needs hidden to be a multiple of {}, got {}", call, k::kUe8m0ChannelsPerInt,
                      l.hidden);
  }
}

void checkLowLatencyCombine(const ll::Layout& l, const ll::CombineArgs& a) {
  const char* call = "low_latency_combine";
  checkTokens(call, a.num_tokens, l.max_tokens);
  checkTopk(call, "topk_idx", a.num_topk, 1);
}

void checkDispatchLayout(int num_ranks, const intranode::LayoutArgs& a) {
  const char* call = "get_dispatch_layout";
  checkNvlRanks(call, num_ranks);
  checkNormalExperts(call, num_ranks, a.num_experts, false);
  checkTopk(call, "topk_idx", a.num_topk, 1);
  if (a.num_tokens < 0) UCCL_EP_THROW_ARG("{}: num_tokens = {} (expected >= 0)", call, a.num_tokens);
}

intranode::Layout dispatchLayout(int num_ranks, const intranode::DispatchArgs& a, bool cached) {
  const char* call = "dispatch";
  checkNvlRanks(call, num_ranks);
  // A cached dispatch counts no experts (0); any other counts them per expert.
  checkNormalExperts(call, num_ranks, a.num_experts, /*allow_zero=*/cached);
  if (cached && a.num_experts != 0) {
    UCCL_EP_THROW_ARG("{}: a cached dispatch counts no experts (num_experts must be 0), got {}", call, a.num_experts);
  }
  checkTopk(call, "topk_idx", a.num_topk, 0);
  if (a.topk_idx != nullptr && a.num_experts == 0) UCCL_EP_THROW_ARG("{}: top-k ids need num_experts > 0", call);
  if (a.num_tokens < 0) UCCL_EP_THROW_ARG("{}: num_tokens = {} (expected >= 0)", call, a.num_tokens);
  if (a.num_worst_tokens < 0) UCCL_EP_THROW_ARG("{}: num_worst_tokens = {}", call, a.num_worst_tokens);
  if (a.hidden_bytes == 0 || a.hidden_bytes % k::kRowAlign != 0) {
    UCCL_EP_THROW_ARG("{}: hidden_bytes = {}: a row of x must be a positive multiple of {} bytes", call,
                      a.hidden_bytes, k::kRowAlign);
  }
  if (a.num_tokens > 0) checkRows(call, "x", "x_row_stride", a.x, a.hidden_bytes, a.x_row_stride);
  if (a.num_scales < 0) UCCL_EP_THROW_ARG("{}: num_scales = {}", call, a.num_scales);
  return intranode::makeLayout(num_ranks, a.num_experts, a.hidden_bytes, static_cast<size_t>(a.num_scales) * 4,
                               a.num_topk, k::kRowAlign);
}

void checkDispatchOutputs(const intranode::DispatchArgs& sent, const intranode::DispatchOutputs& out) {
  const char* call = "dispatch";
  if (out.num_recv_tokens < 0) UCCL_EP_THROW_ARG("{}: {} output rows", call, out.num_recv_tokens);
  if (out.recv_topk_idx != nullptr && sent.num_experts == 0) {
    UCCL_EP_THROW_ARG("{}: local expert ids (recv_topk_idx) need num_experts > 0", call);
  }
  if (out.num_recv_tokens > 0) checkRows(call, "recv_x", "hidden_bytes", out.recv_x, sent.hidden_bytes, sent.hidden_bytes);
}

intranode::Layout combineLayout(int num_ranks, const intranode::CombineArgs& a) {
  const char* call = "combine";
  checkNvlRanks(call, num_ranks);
  checkTopk(call, "topk_weights", a.num_topk, 0);
  if (a.hidden <= 0) UCCL_EP_THROW_ARG("{}: hidden = {} (expected > 0)", call, a.hidden);
  if (a.num_tokens < 0 || a.num_recv_tokens < 0) {
    UCCL_EP_THROW_ARG("{}: num_tokens = {}, num_recv_tokens = {} (expected >= 0)", call, a.num_tokens,
                      a.num_recv_tokens);
  }
  const size_t row = static_cast<size_t>(a.hidden) * 2;
  if (row % k::kRowAlign != 0) {
    UCCL_EP_THROW_ARG("{}: hidden = {}: a row of x ({} bytes) must be a positive multiple of {} bytes", call,
                      a.hidden, row, k::kRowAlign);
  }
  if (a.num_recv_tokens > 0) checkRows(call, "x", "hidden * 2", a.x, row, row);
  if (a.num_tokens > 0) checkRows(call, "combined_x", "hidden * 2", a.combined_x, row, row);
  return intranode::makeLayout(num_ranks, 0, k::kRowAlign, 0, a.num_topk, row);
}

}  // namespace uccl::ep::runtime
