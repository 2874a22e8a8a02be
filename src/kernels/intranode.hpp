// Normal-mode (training, prefill) kernels for ranks that share one memory domain: one host, or a multi-node
// NVLink domain. Raw pointers and a stream; no torch. Compiled for CUDA (intranode.cu) and HIP (same source).
//
// Design: push, one pass over NVLink. Every rank exposes its nvl buffer to every peer (CUDA IPC, POSIX-FD or fabric
// handles). Rows cross NVLink once, as remote stores from the rank that holds them into the rank that needs them:
// a remote store is posted (the SM moves on), a remote load is a round trip that stalls its warp, so writing into
// the peer beats reading from it, and no local staging copy precedes the transfer. Rows a rank sends to itself never
// enter the buffer: they are copied from x (dispatch) or read from the combine input (combine) straight into the
// outputs. Every copy is then bound by the loads each warp keeps in flight, local or remote alike (a row is a chain
// of round trips, one per batch of loads), so the design keeps every warp loading all the time rather than splitting
// SMs into senders and receivers, and makes each round trip carry as much as the registers allow: 768 threads per
// block (launch bounds fit the copy kernels in 80 registers), 8 vectors per lane per batch, a row's small fields
// loaded before its copy, two rows per reduce batch. Warps claim work items from a counter, one item ahead, so the
// claim's atomic overlaps the work and no warp idles at the tail. The kernels poll a failed word in their own GPU
// memory (kFailedOff), never the host-mapped error record at kernel start. A DeepEP-style channel design (sender SMs
// filling per-channel queues that receiver SMs drain) splits the SMs between the two sides; since both sides are
// bound by the same load latency, every warp here does both (a split was not measured; bench/RESULTS.md, issue 10).
// TMA bulk copies are the next lever (no registers per byte in flight) and are not used yet.
//
// Two paths, chosen per Buffer at connect() (Context::pipelined, Buffer.normal_path in Python):
//  * pipelined (one rank per GPU): the transfer is ONE grid kernel per call whose warps first push their rows to the
//    peers chunk by chunk, each chunk published by a flag word (the call's epoch) in the receiver's header, while
//    the warps that drew rows for themselves copy them into the outputs; then the same warps drain the chunks the
//    peers pushed here, each after its flag. A receiving warp spins on another rank's kernel, which is safe only
//    when that kernel surely runs: every rank has its own GPU.
//  * staged (ranks share a GPU, e.g. under MPS): the push and the drain are separate kernels with a 1-block wait
//    between them, so no grid kernel waits for another rank's blocks and ranks sharing a GPU progress with any
//    num_sms.
// A call runs as a short sequence of kernels on one stream:
//   dispatch send half
//   1. reuse     (1 block)  seq += 1 (epoch e), zero the work counters; wait until every peer has marked
//                           done >= e-1 in this buffer, i.e. finished reading what this rank's previous call left
//                           in its buffer and in theirs.
//   2. plan      (grid)     per destination the ordered list of own tokens it receives (ballot prefix scans),
//                           send_pos, the per-destination counts and per-expert counts into the own header area.
//   3. publish   (1 block)  fence, ready = e; wait until every source's ready >= e; read every source's counts ->
//                           rank prefix matrix, receive count, per-expert counts (device, and host-mapped for the
//                           CPU wait). A cached dispatch takes the prefix matrix from its handle.
//   staged only:
//   4. push      (grid)     every own token goes to each other destination's staging area, at the row the receiver
//                           will output it (prefix of earlier sources + position): row, top-k ids and weights,
//                           scales and the source index, as 16-byte remote stores.
//   5. arrive    (1 block)  fence; pushed[self] = e in every peer's buffer; wait until every source's pushed >= e.
//   dispatch receive half (after the CPU wait, once the outputs exist)
//   6. staged: unpack (grid): own staging -> recv_x / scales / local top-k ids / weights / src idx, and own rows
//      from x; pipelined: transfer (grid): steps 4 and 6 in one kernel, chunk flags instead of step 5.
//   7. finish    (1 block)  done[self] = e in every peer's buffer.
//   combine: reuse; staged: push (every received row of another source back into that source's buffer, in the
//   block of this rank, at its position: no publish is needed, the prefix matrix of the handle says where), arrive,
//   reduce (grid: per own token the sum of the copies from every rank it went to, in rank order: deterministic);
//   pipelined: one transfer kernel (push with chunk flags, then reduce, each token after the flags of its rows);
//   finish.
// The 1-block kernels are the only waits of the staged path, so at most one spinning block per rank exists at any
// time. No thread layout depends on the rank count: warps loop over peers and rows. A receiver's staging that would
// overflow its num_nvl_bytes is caught on both sides before any store (kSlotOverflow, kOpNvlOverflow).
//
// Handles (cached dispatch, combine): rank_prefix_matrix and send_pos are the caller's. Every entry a kernel uses as
// an index or a count is checked by the thread that reads it, before use (intranode_handle.hpp has the rules). A bad
// send_pos entry is recorded and skipped; a bad matrix entry voids the call: this rank moves no rows and stores this
// call's epoch into its void word at every rank (Layout::void_off), so that a rank waiting for its rows stops and
// records why. The next call raises ArgumentError (kBadHandle) and the Buffer stays usable.
//
// Chunks (pipelined path): a sender's rows for one receiver are cut into chunks of `send_tokens` rows (the config's
// num_max_nvl_chunked_send_tokens), more when the receiver's kChunkFlags flag words would not cover them; chunk i of
// source s has flag kChunkFlags-index sum_{s'<s} ceil(rows(s')/chunk) + i at the receiver, which both sides compute
// from the prefix matrix. The flags hold epochs, so no call clears them, and their words are never row data.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/error_record.hpp"
#include "kernels/limits.hpp"
#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::kernels::intranode {

using kernels::kMaxTopk;
constexpr size_t kAlign = 128;
constexpr size_t kHeaderBytes = 4096;    // the words below, each on its own 128-byte line (an L2 line)
constexpr size_t kSeqOff = 0, kReadyOff = 128, kNumTokensOff = 256;
// Work counters of the pipelined transfer kernel (own buffer, zeroed by the reuse step): warps claim their next item
// with one atomic add, so every warp stays busy to the end whatever the SM count.
constexpr size_t kClaimSendOff = 384, kClaimRecvOff = 512;
// Set (never cleared, like the error record) when a normal-mode kernel of this rank records a failure: the kernels
// poll this word in their own GPU memory instead of the host-mapped record, whose reads from many blocks at once
// queue on PCIe (24 blocks reading it at kernel start took 15-30 us on an H200, ncu 2026-11-29).
constexpr size_t kFailedOff = 640;
constexpr int kChunkFlags = 8192;        // chunk flag words per receiver (pipelined path)

UCCL_EP_HOST_DEVICE inline constexpr size_t alignUp(size_t v, size_t a = kAlign) { return (v + a - 1) / a * a; }

// Offsets inside every rank's nvl buffer. Identical on all ranks except the dispatch lists/staging, which depend
// on the owner's num_tokens (read from its header).
struct Layout {
  int num_ranks = 0, num_experts = 0;
  size_t done_off = kHeaderBytes;   // int64 [R]: done[r] written by peer r once it is done with this call
  size_t pushed_off = 0;            // int64 [R]: pushed[s] written by source s once its rows are in this buffer
  size_t void_off = 0;              // int64 [R]: void[s], the epoch of the latest call source s voided by rejecting
                                    // its handle (kBadHandle), written by s into every rank's buffer (its own too)
                                    // before it would have sent a row; epochs, so a later call never sees an old one
  size_t counts_off = 0;            // int32 [R]: tokens this rank sends to each rank (dispatch)
  size_t flags_off = 0;             // int64 [kChunkFlags]: chunk c holds the epoch once its rows are here; at the
                                    // same offset in every layout of a buffer, so its words only ever hold epochs
  size_t expert_counts_off = 0;     // int32 [E]: tokens per global expert (dispatch, when counted)
  size_t data_off = 0;              // start of the per-call area
  // dispatch token record: row bytes (a multiple of 16), top-k ids (int64), weights (float), scales, source index
  size_t hidden_bytes = 0, scale_bytes = 0;
  int num_topk = 0;
  size_t token_stride = 0;
  UCCL_EP_HOST_DEVICE size_t idxOff() const { return hidden_bytes; }
  UCCL_EP_HOST_DEVICE size_t weightsOff() const { return hidden_bytes + size_t(num_topk) * 8; }
  UCCL_EP_HOST_DEVICE size_t scalesOff() const { return hidden_bytes + size_t(num_topk) * 12; }
  UCCL_EP_HOST_DEVICE size_t srcIdxOff() const { return scalesOff() + scale_bytes; }
  // combine rows: BF16 row then top-k weights (float)
  size_t combine_row_stride = 0;

  UCCL_EP_HOST_DEVICE size_t listsOff() const { return data_off; }  // int32 [R][num_tokens]
  // The staging area of a receiver with num_tokens own tokens: [received rows] token records, in receive order.
  UCCL_EP_HOST_DEVICE size_t stagingOff(int num_tokens) const { return alignUp(data_off + size_t(num_ranks) * num_tokens * 4); }
  // Bytes of a dispatch on a rank with num_tokens own tokens receiving num_recv rows.
  UCCL_EP_HOST_DEVICE size_t dispatchBytes(int num_tokens, int64_t num_recv) const {
    return stagingOff(num_tokens) + size_t(num_recv) * token_stride;
  }
  UCCL_EP_HOST_DEVICE size_t combineBytes(int64_t num_recv_rows) const { return data_off + size_t(num_recv_rows) * combine_row_stride; }
};

inline Layout makeLayout(int num_ranks, int num_experts, size_t hidden_bytes, size_t scale_bytes, int num_topk,
                         size_t combine_hidden_bytes) {
  Layout l;
  l.num_ranks = num_ranks;
  l.num_experts = num_experts;
  l.done_off = kHeaderBytes;
  l.pushed_off = alignUp(l.done_off + size_t(num_ranks) * 8);
  l.void_off = alignUp(l.pushed_off + size_t(num_ranks) * 8);
  l.counts_off = alignUp(l.void_off + size_t(num_ranks) * 8);
  l.flags_off = alignUp(l.counts_off + size_t(num_ranks) * 4);
  l.expert_counts_off = alignUp(l.flags_off + size_t(kChunkFlags) * 8);
  l.data_off = alignUp(l.expert_counts_off + size_t(num_experts) * 4);
  l.hidden_bytes = hidden_bytes;
  l.scale_bytes = scale_bytes;
  l.num_topk = num_topk;
  l.token_stride = alignUp(hidden_bytes + scale_bytes + size_t(num_topk) * 12 + 4, 16);
  l.combine_row_stride = alignUp(combine_hidden_bytes + size_t(num_topk) * 4, 16);
  return l;
}

// Host-mapped results of the dispatch publish step, for the CPU wait of a non-cached dispatch.
//
// Publication: the runtime zeroes `ready` before the call. The publish kernel writes per_expert and num_recv with
// plain stores, then (one thread, after a block barrier and a system-scope fence) stores the epoch into `ready`
// with a release store at system scope. The host polls `ready` with an acquire load (__atomic_load_n,
// __ATOMIC_ACQUIRE) and reads num_recv and per_expert only once it is nonzero: the acquire makes every field
// written before the release visible.
struct HostCounts {
  int64_t ready;      // epoch when the fields below are valid; 0 until then
  int32_t num_recv;   // rows this rank receives
  int32_t num_forward;  // records this rank forwards for other nodes' sources (internode.hpp), 0 within a node
  int32_t per_expert[kMaxNormalExperts];  // [E_local] rows per local expert
};
static_assert(offsetof(HostCounts, ready) == 0 && offsetof(HostCounts, num_recv) == 8 &&
                  offsetof(HostCounts, per_expert) == 16 && alignof(HostCounts) == 8,
              "HostCounts is read by the host at these offsets");
static_assert(sizeof(HostCounts) == 16 + sizeof(int32_t) * kMaxNormalExperts, "HostCounts has no hidden padding");

// Everything about the buffer and the peers; filled by the runtime.
struct Context {
  int rank = 0, num_ranks = 0;
  int rank_base = 0;                     // the global rank of rank 0 here: errors name rank_base + r (a node's
                                         // ranks as an internode call's NVLink group, internode.hpp); 0 otherwise
  uint8_t* self = nullptr;               // this rank's nvl buffer
  uint8_t* const* peers = nullptr;       // device array [R] of every rank's nvl buffer as mapped here
  ErrorRecord* error = nullptr;          // host-mapped
  uint64_t timeout_ns = 0;
  HostCounts* host_counts = nullptr;     // host-mapped
  int num_sms = 20;                      // blocks of the grid kernels
  int send_tokens = 6;                   // rows per warp work item (and per chunk of the pipelined path)
  bool pipelined = false;                // one rank per GPU: one transfer kernel per call (see the design above)
  size_t buffer_bytes = 0;               // num_nvl_bytes, the same on every rank: what a peer's staging may hold
};

// get_dispatch_layout. Outputs are written whole (the kernel zeroes them first). Field names are the Python
// argument names (uccl.ep.Buffer.get_dispatch_layout); the bindings fill the struct by name.
struct LayoutArgs {
  const int64_t* topk_idx = nullptr;             // [T, K]
  int num_tokens = 0, num_topk = 0, num_experts = 0;
  int32_t* num_tokens_per_rank = nullptr;        // [R]
  int32_t* num_tokens_per_rdma_rank = nullptr;   // [nodes], or null when every rank is an NVLink peer
  int32_t* num_tokens_per_expert = nullptr;      // [E]
  bool* is_token_in_rank = nullptr;              // [T, R]
  // Filled by the runtime: its topology, and the error record where an entry outside [-1, num_experts) is reported
  // (kBadExpertId, naming the token and column; the kernel skips the entry, the next call raises ArgumentError).
  int num_ranks = 0, ranks_per_node = 1;
  ErrorRecord* error = nullptr;
};
void launchLayout(const LayoutArgs& a, void* stream);

// What the receive half of a dispatch writes; the caller allocates it once the receive count is known.
struct DispatchOutputs {
  void* recv_x = nullptr;                // [num_recv_tokens, hidden]
  void* recv_x_scales = nullptr;         // [num_recv_tokens, num_scales] 4-byte elements as x_scales, or null
  int64_t* recv_topk_idx = nullptr;      // [num_recv_tokens, K] local expert ids, -1 elsewhere / padding
  float* recv_topk_weights = nullptr;    // [num_recv_tokens, K]
  int32_t* recv_src_idx = nullptr;       // [num_recv_tokens]
  int num_recv_tokens = 0;               // rows of the outputs (the receive count, or num_worst_tokens)
  // Across nodes (internode.hpp ForwardMap): the records this rank forwards, for the handle.
  int32_t* forward_positions = nullptr;  // [num_forward, ranks per node]
  int32_t* forward_source_token = nullptr;  // [num_forward]
  int num_forward = 0;
};

struct DispatchArgs {
  // inputs
  const void* x = nullptr;               // [T, hidden] BF16 or FP8, rows x_row_stride bytes apart
  size_t x_row_stride = 0;               // bytes
  size_t hidden_bytes = 0;               // bytes of one row (a multiple of 16)
  const void* x_scales = nullptr;        // 4-byte elements (float or int32-packed UE8M0), or null
  int num_scales = 0;                    // per token
  int64_t x_scales_token_stride = 0, x_scales_col_stride = 0;  // in elements
  const int64_t* topk_idx = nullptr;     // [T, K] or null (no top-k)
  const float* topk_weights = nullptr;   // [T, K] or null
  int num_topk = 0;                      // K (0 without top-k)
  const bool* is_token_in_rank = nullptr;  // [T, R]
  const int32_t* num_tokens_per_expert = nullptr;  // [E] or null (cached: not counted)
  int num_tokens = 0, num_experts = 0;
  int num_worst_tokens = 0;              // > 0: receive count from the prefix matrix on the GPU, outputs sized to
                                         // it, rows beyond the count get -1 ids; no CPU wait
  // outputs of the send half
  int32_t* rank_prefix_matrix = nullptr;  // [R, R]; with cached dispatch an input (from the handle) instead, checked
                                          // by the kernels as they read it (kBadHandle): an inclusive prefix over
                                          // source ranks whose row of this rank counts the tokens is_token_in_rank
                                          // sends to each rank and whose column of this rank ends at the output rows
  int32_t* send_pos = nullptr;           // [T, R]: position of token t among those going to r, or -1
  int32_t* recv_gbl_rank_prefix_sum = nullptr;  // [R] across nodes: column `rank` of the prefix matrix (handle)
  DispatchOutputs out;                   // the receive half's outputs
  // Filled by the runtime.
  Layout layout;
  bool report_to_host = false;           // write HostCounts (a non-cached dispatch without num_worst_tokens)
  bool cached = false;                   // rank_prefix_matrix is the caller's (a handle): the kernels check it
};
// Steps 1-3 (and 4-5 on the staged path). cached: rank_prefix_matrix is an input and nothing is counted.
void launchDispatchSend(const Context& ctx, const DispatchArgs& a, bool cached, void* stream);
// Steps 6-7.
void launchDispatchRecv(const Context& ctx, const DispatchArgs& a, void* stream);

struct CombineArgs {
  const void* x = nullptr;               // BF16 [num_recv_tokens, hidden] (rows this rank received)
  const float* topk_weights = nullptr;   // [num_recv_tokens, K] or null
  const void* bias_0 = nullptr;          // BF16 [T, hidden] or null
  const void* bias_1 = nullptr;
  // From the handle, checked by the kernels as they read them (kBadHandle): rank_prefix_matrix an inclusive prefix
  // over source ranks (entries >= 0, non-decreasing down each column, this rank's row counting at most num_tokens
  // rows per rank, its column ending at most at num_recv_tokens), send_pos entries -1 or below the rows this rank
  // sent to that rank.
  const int32_t* send_pos = nullptr;     // [T, R]
  const int32_t* rank_prefix_matrix = nullptr;  // [R, R]
  int num_tokens = 0, num_recv_tokens = 0, hidden = 0, num_topk = 0;
  void* combined_x = nullptr;            // BF16 [T, hidden]
  float* combined_topk_weights = nullptr;  // [T, K] or null
  // Across nodes (internode.hpp), from the handle: is_token_in_rank and the forward map.
  const bool* is_token_in_rank = nullptr;  // [T, R]
  const int32_t* forward_positions = nullptr;  // [num_forward, ranks per node + 1]
  const int32_t* forward_source_token = nullptr;  // [num_forward]
  int num_forward = 0;
  // Filled by the runtime.
  Layout layout;
};
void launchCombine(const Context& ctx, const CombineArgs& a, void* stream);

}  // namespace uccl::ep::kernels::intranode
