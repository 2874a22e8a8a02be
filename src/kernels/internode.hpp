// Normal-mode (training, prefill) dispatch and combine ACROSS nodes: RDMA through the proxies between nodes, NVLink
// inside each node (issue 12). This header holds the design and the layout of the RDMA buffer; the kernels are not
// written yet (Buffer.dispatch across nodes still raises "not implemented yet").
//
// Terms: R ranks, N nodes of P ranks (rank = node * P + local). "Peer" of rank (a, l) on node b: rank (b, l), the
// rank with the same local index there.
//
// Design, and why:
//  1. A token crosses the network at most once per destination node, to its peer there. The peer forwards it over
//     NVLink to every rank of its node that needs it. Why: a token that goes to k ranks of one node would otherwise
//     cross the NIC k times; and with one NIC per GPU on rail-optimised fabrics, GPU l of every node hangs off rail l,
//     so same-local-index traffic never leaves its rail (no spine hop), and every rank forwards for its own rail
//     only, which spreads the forwarding evenly.
//  2. GPU kernels never touch the NIC: they write rows into the rank's own RDMA send area (GPU memory registered with
//     the transport, or pinned host memory where it cannot reach GPU memory) and push one descriptor per chunk of
//     rows, WRITE then SIGNAL (an atomic add of the row count, ordered after the write by the transport's write
//     ordering), into the rank's descriptor rings; the proxies post them. Why: the same path serves verbs, EFA and
//     libfabric tcp/shm, and the descriptor rate it needs is small: 50 GB/s per GPU of 14 KB BF16 rows in chunks of
//     8 rows is about 0.45 M chunks/s, two descriptors each, against 47 M descriptors/s measured through ring and
//     proxy (bench/RESULTS.md). The chunk, not the row, is the unit of every descriptor and signal.
//  3. The traffic is split into channels (num_sms / 2, as Config says), each an ordered stream per destination node:
//     a channel's sender warps own a contiguous range of the source's tokens, so its chunks reach the peer in token
//     order and one counter per (channel, source node) says how many rows are there. Why: ordered streams need no
//     per-row flags on the network side, and the receiver computes every row's final place from the counts.
//  4. Receive rings, not whole-call staging: per (channel, source node) a ring of num_max_rdma_chunked_recv_tokens
//     record slots at the peer, with a tail (rows written, advanced by the senders' SIGNALs) and a head (rows the
//     forwarder has consumed, written back to the sender by the forwarder's own WRITE descriptor every chunk). A
//     sender waits for room (tail - head <= ring size - chunk), bounded by the timeout. Why: the buffer must stay
//     bounded for 32 nodes x 4096 tokens (whole-call staging would need gigabytes), and Config's RDMA chunk fields
//     and get_rdma_buffer_size_hint describe exactly this: channels x nodes x ring x 2 (send and receive areas).
//     Flow control per destination on top: UCCL_IB_MAX_INFLIGHT_NORMAL descriptors and UCCL_IB_MAX_INFLIGHT_BYTES
//     bytes in flight, enforced by the proxy.
//  5. The record carries what the forwarder needs without another round trip: the row, the top-k ids and weights,
//     the scales, the source's token index, and the mask of local ranks of the destination node that receive it
//     (from is_token_in_rank). The forwarder pushes the record over NVLink into each such rank's NVL staging
//     exactly as the intranode pipelined path does (intranode.hpp: chunk flags, the receiver drains as they land),
//     at the row the receiver will output it: the rank prefix matrix (from the counts exchanged first) orders a
//     rank's received rows by global source rank, as DeepEP's handle does (recv_gbl_rank_prefix_sum).
//  6. Combine runs the same paths backwards and reduces as early as it can: every rank pushes its rows of a token
//     over NVLink to the forwarder of the token's source (same local index as the source, on this node), which sums
//     them (in local rank order, in float) into ONE partial per (token, node) and sends that back over RDMA to the
//     source; the source adds the partials of the nodes in node order, its own node's part through the intranode
//     reduce, then the biases. Deterministic, and each token crosses the network once per node in both directions.
//     Partials travel as BF16 (half the bytes; the error stays within DeepEP's combine tolerance).
//  7. Waits: a sender waiting for ring room names the peer and the channel, a forwarder waiting for a tail or an
//     NVLink receiver waiting for a chunk flag names the source, all through the error record and the failed word
//     (intranode.hpp), within UCCL_EP_TIMEOUT_SECS. A dead peer's proxy completion errors end the wait at once.
//  8. Emulated nodes (UCCL_EP_RANKS_PER_NODE) use the same code: the "network" is then the proxies over shm or tcp
//     between processes of one host, which is how it runs on the machines here.
//
// Layout of a rank's RDMA buffer (num_rdma_bytes), identical on every rank. Two areas, each channels x nodes rings:
//   send area    [channel][destination node]: the records this rank writes before their WRITE descriptor
//   receive area [channel][source node]:      the records the peers wrote here
// Each ring: a 64-byte counter line (tail: rows arrived; head: rows consumed, as the other side last wrote it),
// then `slots` records. The node's own index is kept (unused) so that offsets need no special case.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/intranode.hpp"
#include "kernels/limits.hpp"

namespace uccl::ep::kernels::internode {

constexpr size_t kRingCounterBytes = 64;  // tail and head words on one line, before each ring's slots

// Bytes of one record: row, top-k ids (int64) and weights (float), scales (4 bytes each), source token index
// (int32), and the mask of destination local ranks (uint64; nodes of up to 64 ranks), 16-byte aligned.
UCCL_EP_HOST_DEVICE inline constexpr size_t recordBytes(size_t hidden_bytes, size_t scale_bytes, int num_topk) {
  return intranode::alignUp(hidden_bytes + size_t(num_topk) * 12 + scale_bytes + 4 + 8, 16);
}

struct RdmaLayout {
  int channels = 0, nodes = 0;
  int slots = 0;            // records per ring (Config.num_max_rdma_chunked_recv_tokens)
  size_t record_bytes = 0;
  UCCL_EP_HOST_DEVICE size_t ringBytes() const { return kRingCounterBytes + size_t(slots) * record_bytes; }
  UCCL_EP_HOST_DEVICE size_t areaBytes() const { return size_t(channels) * size_t(nodes) * ringBytes(); }
  // Offset of ring (channel, node) in the send area (0) or the receive area (1); its counters come first.
  UCCL_EP_HOST_DEVICE size_t ringOff(int area, int channel, int node) const {
    return size_t(area) * areaBytes() + (size_t(channel) * size_t(nodes) + size_t(node)) * ringBytes();
  }
  UCCL_EP_HOST_DEVICE size_t slotOff(int area, int channel, int node, int slot) const {
    return ringOff(area, channel, node) + kRingCounterBytes + size_t(slot) * record_bytes;
  }
  UCCL_EP_HOST_DEVICE size_t totalBytes() const { return 2 * areaBytes(); }
};

inline RdmaLayout makeRdmaLayout(int num_sms, int nodes, int recv_tokens, size_t hidden_bytes, size_t scale_bytes,
                                 int num_topk) {
  RdmaLayout l;
  l.channels = num_sms / 2;
  l.nodes = nodes;
  l.slots = recv_tokens;
  l.record_bytes = recordBytes(hidden_bytes, scale_bytes, num_topk);
  return l;
}

}  // namespace uccl::ep::kernels::internode
