// Low-latency dispatch and combine kernels (decode). Raw pointers and a stream; no torch, no transport.
// Compiled for CUDA (ll_dispatch.cu, ll_combine.cu) and HIP (the same sources through the platform layer).
//
// Each call is one kernel on the given stream (`dispatch` or `combine`, the names profilers look for) running its
// send and receive parts (Phase::kBoth). With return_recv_hook the caller launches it with Phase::kSend now and
// again with Phase::kRecv later (the hook); no block waits in between. The send parts never wait for a peer; the
// receive parts wait for signal words, each with the timeout.
//
// Slots are computed, not exchanged: a token's slot at an expert is the number of earlier tokens of the same rank
// that picked that expert (ll_layout.hpp). Every block that needs slots computes those of its own tokens from
// topk_idx (ll_device.cuh, slotEntries), so no grid-wide step and no per-call state links dispatch and combine.
//
// Top-k entries outside [-1, num_experts) are skipped by every part and the first is recorded in the error record
// (kBadExpertId): the call completes, and the runtime's next check raises ArgumentError naming the id and the rank.
//
// Peers: same-node peers (NVLink) are written directly through `peer_gpu_base` / `peer_gpu_signals` (null for
// peers reached through the proxy). Every other peer gets its rows through descriptors in `rings`: one WRITE per
// (expert, peer) pair of the contiguous run in the local `rdma_base` send area, then one SIGNAL.
//
// Combine rows a rank sends to itself (BF16, not logfmt) skip the buffer: the receive part reads them where the
// expert output already is (x, or the send area with zero_copy), so x must stay unchanged until the receive part
// has run (the hook keeps it alive).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/error_record.hpp"
#include "kernels/ll_layout.hpp"
#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::kernels::ll {

enum class Phase : int { kSend = 1, kRecv = 2, kBoth = 3 };

// Everything about the buffer and the peers; the runtime fills one per half.
struct Context {
  Layout layout;
  int rank = 0;
  int half = 0;                             // which half of the buffer this call uses
  uint8_t* gpu_base = nullptr;              // this rank's GPU buffer (NVLink peers write here)
  int64_t* gpu_signals = nullptr;           // this rank's signal words in GPU memory (NVLink peers add here)
  uint8_t* rdma_base = nullptr;             // this rank's RDMA buffer as the GPU sees it (== gpu_base when the
                                            // transport reaches GPU memory); null when no peer needs the proxy
  int64_t* rdma_signals = nullptr;          // signal words the proxy adds to (host-mapped); null as above
  uint8_t* const* peer_gpu_base = nullptr;  // device array [R]: peer's GPU buffer, or null (proxy peer)
  int64_t* const* peer_gpu_signals = nullptr;  // device array [R]
  const ring::RingView* rings = nullptr;    // device array [num_rings]
  int num_rings = 0;
  uint32_t rdma_region = 0;                 // region index of the RDMA buffer in every rank's proxy tables
  int32_t* mask = nullptr;                  // device [R]: 1 = masked (enable_shrink)
  bool enable_shrink = false;
  ErrorRecord* error = nullptr;             // host-mapped (error_record.hpp)
  uint64_t timeout_ns = 0;
  int32_t* scratch = nullptr;               // device, at least scratchInts(layout) int32 for this half
  uint64_t* staging_tickets = nullptr;      // device, this half's [2][num_rings] staging tickets (below)
  int use_parity = 0;                       // uses of this half so far, mod 2: the row of staging tickets this call
                                            // raises (the other row holds those of the half's previous use)
  int num_sms = 0;                          // SMs this rank's launches may fill: the GPU's, split between the ranks
                                            // that share it (MPS), whose launches must all be resident at once
  bool gpu_shared = false;                  // other ranks run on this GPU: at most one block per SM of num_sms
};

// Scratch per half (int32, zero between calls): the combine's count of finished receive blocks (the last one resets
// the combine flags), then the dispatch's per-expert count of tokens whose messages are stored and fenced (the block
// that completes an expert signals it and resets its count).
enum ScratchIndex : int {
  kRecvBlocksDone = 0,
  kDispatchDone = 1,  // [E]
};
inline size_t scratchInts(const Layout& l) { return kDispatchDone + static_cast<size_t>(l.num_experts); }

// Staging tickets (`staging_tickets`, uint64 [2 halves][2 parities][num_rings], zero at start, never cleared, only
// raised): per half and use parity of that half, one past the position of the last WRITE descriptor, per ring, that
// read the half's send area. Before a call overwrites the send area of its half it waits for the tickets of the
// half's previous use only, not for every descriptor on the rings (the other half's call may still be in flight).
inline size_t stagingTicketWords(int num_rings) { return 2 * 2 * static_cast<size_t>(num_rings); }

// Field names are the Python argument names (uccl.ep.Buffer.low_latency_dispatch / _combine and the handle);
// the bindings fill these structs by name.
struct DispatchArgs {
  const void* x = nullptr;               // BF16 [num_tokens, hidden]
  int num_tokens = 0;
  const int64_t* topk_idx = nullptr;     // [num_tokens, num_topk], -1 = none
  int num_topk = 0;
  void* recv_x = nullptr;                // [E_local, R*M, hidden] BF16 or FP8
  void* recv_x_scales = nullptr;         // FP8: float [E_local, hidden/128, R*M] (column-major view of
                                         // [E_local, R*M, hidden/128]), or UE8M0 int32 [E_local, hidden/512, R*M]
  int32_t* recv_count = nullptr;         // [E_local]
  int32_t* src_info = nullptr;           // [E_local, R*M]
  int64_t* layout_range = nullptr;       // [E_local, R]
  int32_t* cumulative_local_expert_recv_stats = nullptr;  // [E_local] or null
  int64_t* dispatch_wait_recv_cost_stats = nullptr;       // [R] or null (nanoseconds)
  bool use_fp8 = false, round_scale = false, use_ue8m0 = false;
};

struct CombineArgs {
  const void* x = nullptr;               // BF16 [E_local, R*M, hidden]; ignored with zero_copy (rows are
                                         // already in the send area)
  const int64_t* topk_idx = nullptr;     // [num_tokens, num_topk]
  const float* topk_weights = nullptr;   // [num_tokens, num_topk]
  int num_tokens = 0, num_topk = 0;
  const int32_t* src_info = nullptr;     // from the dispatch handle
  const int64_t* layout_range = nullptr;
  void* combined_x = nullptr;            // BF16 [num_tokens, hidden]
  int64_t* combine_wait_recv_cost_stats = nullptr;  // [R] or null
  bool use_logfmt = false, zero_copy = false;
};

void launchDispatch(const Context& ctx, const DispatchArgs& args, Phase phase, void* stream);
void launchCombine(const Context& ctx, const CombineArgs& args, Phase phase, void* stream);

// clean_low_latency_buffer's barrier (ll_clean.cu), the clean numbered `call` (1 for a buffer's first): adds this
// rank's arrival to every unmasked peer's clean epoch word, then waits, with the timeout, until every unmasked
// source's word here reaches `call`. A source that does not join is masked with enable_shrink, else recorded as
// kTimeout / kOpClean and flagged in `absent`. Launch it after zeroing the call words (the arrival tells the peers
// they are zero).
struct CleanArgs {
  uint64_t call = 0;
  int32_t* absent = nullptr;  // host-mapped [R], zero before the launch: 1 where a source did not join (no shrink)
};
void launchCleanBarrier(const Context& ctx, const CleanArgs& args, void* stream);

}  // namespace uccl::ep::kernels::ll
