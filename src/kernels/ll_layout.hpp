// Low-latency mode: where everything lives in the RDMA buffer. Plain C++ (no CUDA): the kernels, the runtime
// and the Python size hint all compute the layout through makeLayout, so they cannot disagree. The sizes it takes
// are checked once, by runtime::lowLatencyLayout (runtime/call_checks.hpp), through which the runtime, the bindings
// and the size hint build every layout.
//
// The RDMA buffer holds two identical halves ("buffers" 0 and 1); low_latency_dispatch and low_latency_combine
// each use the current half and flip to the other. One half:
//
//   recv           [E][M] slots                 what peers write to this rank; a slot holds a message or a row
//     dispatch_recv  [E_local][R][M] messages   tokens from source rank s for local expert e, in slot order
//     combine_recv   [E][M] rows                rows coming back from global expert e, in the slot order this
//                                               rank assigned when it dispatched (see below)
//   send           [E][M] slots                 dispatch: staging for experts reached through the proxy, one
//                  == [E_local][R*M] rows       contiguous run per expert (messages); combine: the rows to send
//                                               back, laid out as recv_x (get_next_low_latency_combine_buffer)
//
// dispatch_recv and combine_recv are the same bytes (DeepEP shares its receive buffer the same way): a half serves
// one call at a time, and the rows a combine receives into a half overwrite the messages of the last dispatch in
// that half, which that dispatch's receive part has already copied into recv_x. Each region holds E * M slots of
// max(message, row) bytes, so a half is two expert-by-token regions, not three.
//
// The contract this sharing relies on (DeepEP's own): at most two low-latency calls are outstanding, since each
// call flips halves and call k + 2 reuses call k's half on every rank. With return_recv_hook, a rank must run
// call k's receive hook before any peer issues call k + 2 (peers write call k + 2's data into the half that hook
// still reads). Without hooks the receive part runs inside the call, and stream order keeps the contract.
//
// Slots are deterministic: the token t's slot at expert e is the number of tokens t' < t that also picked e.
// Dispatch and combine both compute it from topk_idx, so no per-call state links the two calls, and the rows
// for one (expert, source rank) pair are contiguous on both sides: one write per pair through the proxy.
//
// A message: 16-byte header (int32 source token index, three int32 spare), then the payload: BF16 row
// (hidden * 2 bytes), or FP8 row (hidden bytes) followed by hidden / 128 float scales. A row: BF16, or the
// 10-bit log format (kLogfmtGroupBytes per 128 channels).
//
// Signal words (int64, separate from the data; see runtime/buffer.hpp for where they live), per half:
//   dispatch_count [E_local][R]   source s's count for local expert e, in one of two encodings, by path:
//                                 through the proxy, s adds (count + 1) once all its rows have landed (one WRITE
//                                 of the run, then one SIGNAL); over NVLink, each message adds 1 once it has
//                                 landed, and the message at slot 0 also adds (count + 1) << 32 (for count 0, the
//                                 block that owns the expert adds 1 << 32 alone): complete once the high half is
//                                 the low half + 1 (nvlCountAdd / nvlCountDone below). No sender block waits for
//                                 another: the NVLink words need no grid-wide "last block" step.
//   combine_flag   [E]            expert e's rank adds 1 once its rows for this rank have landed
// The receiver resets each word to 0 after reading it, before its next use by the same sender two calls later.
//
// The buffer's signal words (signalWords) begin with one clean epoch word per source rank, the same for every layout:
//   clean_epoch    [R]            source s adds 1 at the start of each of its clean_low_latency_buffer calls; the
//                                 clean is a barrier that waits until the word reaches its own call number
//                                 (cleanJoined). Only ever raised: the clean zeroes the call words, never these, so a
//                                 fast peer's arrival for the next clean is never wiped, and a stale one (a lagging
//                                 count) never reaches the number.
// A half's words are then at half * signals_per_half + [dispatch_count_index, signals_per_half): half 0's follow the
// clean words, and half 1 leaves the same R words unused at its start (one formula for both halves). First, so that
// every index stays small: a transport with 4-byte immediates carries 16-bit signal indices (proxy/signal_rules.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/limits.hpp"
#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::kernels::ll {

using kernels::kChannelsPerScale;
using kernels::kMaxExpertsPerRank;
using kernels::kMaxHidden;
using kernels::kMaxTokensPerRank;
using kernels::kMaxTopk;
using kernels::kMinHidden;

inline constexpr size_t kHeaderBytes = 16;
// logfmt: per group of 128 channels, 8 bytes of metadata (float log2 of the smallest magnitude, float step)
// and 128 10-bit codes (160 bytes).
inline constexpr size_t kLogfmtGroupBytes = 8 + 160;

constexpr size_t alignUp(size_t v, size_t a) { return (v + a - 1) / a * a; }

struct Layout {
  int num_ranks = 0, num_experts = 0, experts_per_rank = 0, max_tokens = 0, hidden = 0;
  size_t msg_bytes = 0;  // one dispatch message slot (fits BF16 and FP8 payloads)
  size_t row_bytes = 0;  // one combine row slot (fits BF16 and logfmt)
  // Offsets inside one half, and the half's size (a multiple of 128). dispatch_recv_off == combine_recv_off: the two
  // share the receive region (header comment).
  size_t dispatch_recv_off = 0, combine_recv_off = 0, send_off = 0, half_bytes = 0;
  // Signal words per half, and where each kind starts inside a half's run of words.
  size_t dispatch_count_index = 0, combine_flag_index = 0, signals_per_half = 0;

  UCCL_EP_HOST_DEVICE size_t halfOffset(int half) const { return static_cast<size_t>(half) * half_bytes; }
  UCCL_EP_HOST_DEVICE size_t totalBytes() const { return 2 * half_bytes; }
  UCCL_EP_HOST_DEVICE size_t totalSignals() const { return 2 * signals_per_half; }

  // Offsets inside one half.
  UCCL_EP_HOST_DEVICE size_t dispatchRecv(int local_expert, int src_rank, int slot) const {
    return dispatch_recv_off +
           ((static_cast<size_t>(local_expert) * num_ranks + src_rank) * max_tokens + slot) * msg_bytes;
  }
  UCCL_EP_HOST_DEVICE size_t combineRecv(int expert, int slot) const {
    return combine_recv_off + (static_cast<size_t>(expert) * max_tokens + slot) * row_bytes;
  }
  UCCL_EP_HOST_DEVICE size_t dispatchStaging(int expert, int slot) const {
    return send_off + (static_cast<size_t>(expert) * max_tokens + slot) * msg_bytes;
  }
  UCCL_EP_HOST_DEVICE size_t combineSend(int local_expert, int row) const {
    return send_off + (static_cast<size_t>(local_expert) * num_ranks * max_tokens + row) * row_bytes;
  }
  // Where a message starts inside its slot. BF16 fills the slot, so at its start. An FP8 message leaves room: it
  // starts kHeaderBytes before the slot's next 128-byte boundary, so its payload's 512-byte warp stores cover whole
  // lines (partial lines cost NVLink about a quarter of its write rate). Counted from a run start (slot 0 of an
  // expert and source) on a 128-byte boundary, which runs are when max_tokens is a multiple of 8; a function of the
  // slot alone, so a staged run keeps its messages' places when the proxy writes it to the receiver.
  UCCL_EP_HOST_DEVICE size_t messageOffset(bool fp8, int slot) const {
    if (!fp8) return 0;
    const size_t in_line = (static_cast<size_t>(slot) * msg_bytes + kHeaderBytes) % 128;
    return in_line == 0 ? 0 : 128 - in_line;
  }
  UCCL_EP_HOST_DEVICE size_t dispatchCount(int local_expert, int src_rank) const {
    return dispatch_count_index + static_cast<size_t>(local_expert) * num_ranks + src_rank;
  }
  UCCL_EP_HOST_DEVICE size_t combineFlag(int expert) const { return combine_flag_index + static_cast<size_t>(expert); }
};

// The NVLink dispatch count word (see the layout above): what one message adds (`first`: it holds slot 0 of its
// expert, whose rank sent `count` messages in all; count 0: the add that stands for no message), and whether a word
// holds a complete count (then the count is its low half).
UCCL_EP_HOST_DEVICE constexpr uint64_t nvlCountAdd(bool first, int count, bool message = true) {
  return (first ? (static_cast<uint64_t>(count) + 1) << 32 : 0) + (message ? 1 : 0);
}
UCCL_EP_HOST_DEVICE constexpr bool nvlCountDone(uint64_t word) {
  return (word >> 32) != 0 && (word & 0xffffffffu) + 1 == (word >> 32);
}
UCCL_EP_HOST_DEVICE constexpr int nvlCount(uint64_t word) { return static_cast<int>(word & 0xffffffffu); }

// The buffer's signal words (header comment): the clean epoch words, then the call words of every layout within the
// limits. Indices are the same in GPU memory (NVLink peers add there) and in the host-mapped words the proxies add to.
UCCL_EP_HOST_DEVICE constexpr size_t cleanEpochIndex(int src_rank) { return static_cast<size_t>(src_rank); }
UCCL_EP_HOST_DEVICE constexpr size_t callSignalsBegin(int num_ranks) { return static_cast<size_t>(num_ranks); }
UCCL_EP_HOST_DEVICE constexpr size_t signalWords(int num_ranks) {
  // 2 halves x (the clean words' place + E_local * R + E), E_local at its limit.
  return 2 * (callSignalsBegin(num_ranks) + static_cast<size_t>(2) * kMaxExpertsPerRank * num_ranks);
}
// Whether source rank's clean epoch word says it has joined the clean numbered `call` (1 for a buffer's first).
UCCL_EP_HOST_DEVICE constexpr bool cleanJoined(uint64_t word, uint64_t call) { return word >= call; }

constexpr size_t fp8MessagePayload(int hidden) { return static_cast<size_t>(hidden) + hidden / kChannelsPerScale * 4; }
constexpr size_t bf16RowBytes(int hidden) { return static_cast<size_t>(hidden) * 2; }
constexpr size_t logfmtRowBytes(int hidden) { return static_cast<size_t>(hidden / kChannelsPerScale) * kLogfmtGroupBytes; }
// One dispatch message slot (fits BF16 and FP8 payloads) and one combine row slot (fits BF16 and logfmt).
constexpr size_t messageBytes(int hidden) {
  return alignUp(kHeaderBytes + std::max(bf16RowBytes(hidden), fp8MessagePayload(hidden)), 16);
}
constexpr size_t rowBytes(int hidden) { return alignUp(std::max(bf16RowBytes(hidden), logfmtRowBytes(hidden)), 16); }

// An FP8 message moved by up to 112 bytes (Layout::messageOffset) still fits its slot.
static_assert(112 + kHeaderBytes + fp8MessagePayload(kMinHidden) <= messageBytes(kMinHidden) &&
                  112 + kHeaderBytes + fp8MessagePayload(kMaxHidden) <= messageBytes(kMaxHidden),
              "an FP8 message must fit its slot after its move to a line boundary");

// No size below wraps for sizes inside the limits: num_experts is an int, so a region holds fewer than
// INT_MAX * kMaxTokensPerRank slots of at most the largest slot, and a buffer is four regions plus alignment.
static_assert(sizeof(size_t) == 8, "layout sizes are 64-bit");
static_assert(size_t{0x7fffffff} * kMaxTokensPerRank <=
                  ~size_t{0} / 8 / std::max(messageBytes(kMaxHidden), rowBytes(kMaxHidden)),
              "the largest low-latency layout must fit a size_t");

// The layout for sizes that runtime::lowLatencyLayout has checked (limits.hpp); call that, not this, to build one.
inline Layout makeLayout(int max_tokens, int hidden, int num_ranks, int num_experts) {
  Layout l;
  l.num_ranks = num_ranks;
  l.num_experts = num_experts;
  l.experts_per_rank = num_ranks > 0 ? num_experts / num_ranks : 0;
  l.max_tokens = max_tokens;
  l.hidden = hidden;
  l.msg_bytes = messageBytes(hidden);
  l.row_bytes = rowBytes(hidden);
  // E_local * R * M == E * M slots per region, each of max(message, row) bytes.
  const size_t region_bytes = static_cast<size_t>(num_experts) * max_tokens * std::max(l.msg_bytes, l.row_bytes);
  l.dispatch_recv_off = 0;
  l.combine_recv_off = 0;  // the same bytes as dispatch_recv: see the header comment
  l.send_off = alignUp(region_bytes, 128);
  l.half_bytes = alignUp(l.send_off + region_bytes, 128);
  l.dispatch_count_index = callSignalsBegin(num_ranks);  // after the clean epoch words (header comment)
  l.combine_flag_index = l.dispatch_count_index + static_cast<size_t>(l.experts_per_rank) * num_ranks;
  l.signals_per_half = l.combine_flag_index + num_experts;
  return l;
}

}  // namespace uccl::ep::kernels::ll
