// Normal-mode (training, prefill) dispatch and combine ACROSS nodes: RDMA through the proxies between nodes, NVLink
// inside each node (issue 12). internode_dispatch.cu and internode_combine.cu hold the kernels, internode_device.cuh
// the two ends of a record stream; the node's NVLink steps are the intranode ones (intranode.hpp, staged path).
//
// Terms: R ranks, N nodes of P ranks (rank = node * P + local). "Peer" of rank (a, l) on node b: rank (b, l), the
// rank with the same local index there. C channels (Config.num_sms / 2).
//
// Design, and why:
//  1. A token crosses the network at most once per destination node, to its peer there. The peer forwards it over
//     NVLink to every rank of its node that needs it. Why: a token that goes to k ranks of one node would otherwise
//     cross the NIC k times; and with one NIC per GPU on rail-optimised fabrics, GPU l of every node hangs off rail l,
//     so same-local-index traffic never leaves its rail (no spine hop), and every rank forwards for its own rail
//     only, which spreads the forwarding evenly.
//  2. GPU kernels never touch the NIC: they write records into the rank's own RDMA send area (GPU memory registered
//     with the transport, or pinned host memory where it cannot reach GPU memory) and push descriptors, WRITE then
//     SIGNAL (the signal adds the record count to a word at the peer after the write is visible there), into the
//     rank's descriptor rings; the proxies post them. Why: the same path serves verbs, EFA and libfabric tcp/shm, and
//     the descriptor rate it needs is small: 50 GB/s per GPU of 14 KB BF16 records in chunks of 6 is about 0.6 M
//     chunks/s, two descriptors each, against 47 M descriptors/s measured through ring and proxy (bench/RESULTS.md).
//  3. Channels: channel c owns the contiguous token range [channelBegin(c), channelBegin(c + 1)) of every source, and
//     per (channel, destination node) one warp sends that range's records in token order. Why: an ordered stream per
//     (channel, node) needs no per-record flag on the network side; the receiver learns how many records each of its
//     streams carries from the counts exchange, and where each record goes from the record itself.
//  4. Receive rings, not whole-call staging, on the RDMA side: per (channel, source node) a ring of `slots` records
//     (Config.num_max_rdma_chunked_recv_tokens) at the peer. The sender's record i of the stream sits in slot
//     i % slots of its send ring and of the peer's receive ring (same offsets, so one WRITE moves a chunk). Counters
//     are cumulative over the Buffer's life and never reset: the sender's `sent`, the forwarder's `consumed` (both in
//     GPU memory, Context::counters), the tail word at the forwarder (records arrived, raised by the sender's
//     SIGNALs) and the head word at the sender (records consumed, raised by the forwarder's SIGNALs after it copied
//     them out). A sender writes record `sent` only when sent - head < slots: the forwarder is done with that slot,
//     and so is the proxy's WRITE that last read the sender's copy of it. Why: the buffer stays bounded for 32 nodes
//     x 4096 tokens (whole-call staging would need gigabytes), which is what Config's RDMA fields and
//     get_rdma_buffer_size_hint describe, and cumulative counters need no reset step that a fast peer could race.
//  5. A record is the intranode token record (row, top-k ids and weights, scales, source token index; intranode.hpp)
//     followed by P int32 positions: for each rank m of the destination node, the token's position among the
//     source's tokens to m (the handle's send_pos), or -1. The forwarder stores the token record into m's NVL staging
//     at row prefix[source - 1][m] + position: exactly where the intranode staged path puts a row, so the intranode
//     unpack kernel turns the staging into the outputs unchanged. Rows of the own node's sources reach the staging
//     straight over NVLink (the own node's "stream" is read from x). Why: one record per (token, node) carries all
//     the receiver needs, with no second round trip; the staging orders rows by global source rank as the handle's
//     prefix matrix says.
//  6. The counts exchange first (publish, send half): each rank writes its row (tokens per rank [R], records per
//     (node, channel) [N][C], and the destination's slice of its tokens per expert) into every remote rank's counts
//     area by RDMA (WRITE, WRITE, SIGNAL of its own arrival word), and into its NVL header for its node (the
//     intranode ready word). Every rank then holds the whole [R, R] count matrix: the prefix matrix (the handle's),
//     its receive count and per-expert counts for the CPU wait, and every stream's length. The areas alternate by
//     call parity: a rank writes call e + 2's row only after its call e + 1 saw every peer's e + 1 row, which each
//     peer sent after reading its e row.
//  7. The streams run in the receive half (transfer kernel): the sender warps and the forwarder warps of every rank
//     in one grid, so a sender that waits for ring room never waits for a kernel queued behind its own (the send half
//     already returned the counts to the CPU). Then arrive (every local rank's rows are in the staging), unpack,
//     finish: the intranode staged steps over the node (node_ctx).
//  8. Combine runs the routes backwards and reduces as early as it can (internode_combine.cu has its buffer layout):
//     every rank pushes each received row over NVLink to its source when the source is on this node, else to the
//     source's peer here (the rank that forwarded it); that peer sums the copies of each record it forwarded (the
//     handle's forward map says where each copy is), in local rank order and in float, into one partial per (token,
//     node), and streams the partials back over the same streams as the dispatch's records; the source adds its own
//     node's rows in rank order, then the partials in node order, then the biases. Deterministic, and each token
//     crosses the network once per node in both directions. Partials travel as BF16 (half the bytes; calc_diff
//     1.4-2.4e-6 against the float reference on the device, within the checks' 5e-6).
//     A stream's calls differ in record size and channel count, so rings move between calls: each (area, node) pair
//     has a fixed region, and a sender first waits until the peer consumed every stream to that node as the call
//     began (StreamOut), so a call's first record never lands on an earlier record the peer still reads.
//  9. Waits: a sender waiting for ring room names the peer and the channel; a forwarder waiting for a stream names
//     the source; the counts exchange names the rank whose row did not arrive; all through the error record and the
//     failed word, within UCCL_EP_TIMEOUT_SECS. A dead ring (the proxy failed) ends the wait at once. The culprit,
//     not a bystander: in dispatch every rank waits for every other rank's counts row, so an absent rank is named
//     by all. Combine has no such exchange on its path (a source waits only for its peers' partial streams, and a
//     peer whose node lacks a rank waits, over NVLink, for that rank), so each combine also adds 1 to an `entered`
//     word at every rank of the other nodes (R - P signals, nothing waits for them); a source whose partial stream
//     times out names the first rank of that node whose word is behind, and the peer only when all entered.
// 10. Emulated nodes (UCCL_EP_RANKS_PER_NODE) use the same code: the "network" is then the proxies over shm or tcp
//     between processes of one host, which is how it runs on the machines here.
//
// Layout of a rank's RDMA buffer (num_rdma_bytes), identical on every rank:
//   counts out   [2 parities]: this rank's row as it sends it (the expert part once per destination)
//   counts in    [2 parities][R]: the rows of the remote ranks
//   send area    [destination node] regions of [channel] rings: the records this rank writes before their WRITE
//   receive area [source node] regions of [channel] rings:      the records the peers wrote here
// Each ring: a 64-byte line (kept for alignment), then `slots` records; each region is (num_rdma_bytes - counts) /
// (2 x nodes) bytes. The node's own index is kept (unused) so that offsets need no special case.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/intranode.hpp"
#include "kernels/limits.hpp"
#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::kernels::internode {

constexpr size_t kRingCounterBytes = 64;
constexpr int kMaxChannels = 64;    // Config.num_sms / 2 (the counters and signal words are sized by it)
constexpr int kMaxNodeRanks = 32;   // P: one lane per rank of a node in the forwarder
constexpr int kMaxNodes = 64;     // the signal words and counters are sized per node; Config hints go to 32

// Bytes of one record: the intranode token record (token_stride) and P positions, 16-byte aligned.
UCCL_EP_HOST_DEVICE inline constexpr size_t recordBytes(size_t token_stride, int ranks_per_node) {
  return intranode::alignUp(token_stride + size_t(ranks_per_node) * 4, 16);
}
// The largest record a call of `hidden_bytes` can need (get_rdma_buffer_size_hint: top-k at its limit, one 4-byte
// scale per 128 bytes of row).
UCCL_EP_HOST_DEVICE inline constexpr size_t maxRecordBytes(size_t hidden_bytes, int ranks_per_node) {
  return recordBytes(intranode::alignUp(hidden_bytes + (hidden_bytes + 127) / 128 * 4 + size_t(kMaxTopk) * 12 + 4, 16),
                     ranks_per_node);
}

// Token t of a source with T tokens is in channel channelOf(t): the c with channelBegin(c) <= t < channelBegin(c + 1).
UCCL_EP_HOST_DEVICE inline int channelBegin(int c, int T, int C) { return static_cast<int>(int64_t(T) * c / C); }
UCCL_EP_HOST_DEVICE inline int channelOf(int t, int T, int C) { return static_cast<int>((int64_t(t + 1) * C - 1) / T); }

UCCL_EP_HOST_DEVICE inline constexpr size_t pad4(size_t n) { return (n + 3) / 4 * 4; }

// The counts areas come first and have one size for the Buffer's life (ranks and nodes are fixed; channels and
// experts at their bounds): a call's channel count, record size and ring depth may differ from the last call's, and a
// peer may already write its next row while this rank still reads the last one.
struct RdmaLayout {
  int channels = 0, nodes = 0, ranks = 0, experts_per_rank = 0;
  int slots = 0;  // records per ring (Config.num_max_rdma_chunked_recv_tokens)
  size_t record_bytes = 0;
  // A counts row (int32): [R] tokens per rank and [N][kMaxChannels] records per (node, channel), padded to 16 bytes;
  // then the destination's tokens per local expert (room for the most a call may have), padded likewise.
  UCCL_EP_HOST_DEVICE size_t rowHeadInts() const { return pad4(size_t(ranks) + size_t(nodes) * kMaxChannels); }
  UCCL_EP_HOST_DEVICE size_t rowExpertInts() const {
    return pad4((size_t(kMaxNormalExperts) + size_t(ranks) - 1) / size_t(ranks));
  }
  UCCL_EP_HOST_DEVICE size_t rowBytes() const { return (rowHeadInts() + rowExpertInts()) * 4; }
  UCCL_EP_HOST_DEVICE size_t nodeChannelIndex(int node, int channel) const {
    return size_t(ranks) + size_t(node) * kMaxChannels + size_t(channel);
  }
  // counts out of a parity: the head, then one expert part per destination rank.
  UCCL_EP_HOST_DEVICE size_t countsOutOff(int parity) const {
    return size_t(parity) * (rowHeadInts() + size_t(ranks) * rowExpertInts()) * 4;
  }
  UCCL_EP_HOST_DEVICE size_t countsInOff(int parity, int source) const {
    return countsOutOff(2) + (size_t(parity) * size_t(ranks) + size_t(source)) * rowBytes();
  }
  UCCL_EP_HOST_DEVICE size_t ringsOff() const { return intranode::alignUp(countsInOff(2, 0)); }
  // The rings of one (area, node) pair live in a region of region_bytes, fixed for the Buffer's life: only this
  // rank's peer on that node writes its receive region here, and only this rank its send region for that node, so a
  // sender that drained its streams to the node (StreamOut) may lay out the call's rings there afresh.
  size_t region_bytes = 0;
  UCCL_EP_HOST_DEVICE size_t ringBytes() const { return kRingCounterBytes + size_t(slots) * record_bytes; }
  UCCL_EP_HOST_DEVICE size_t regionNeed() const { return size_t(channels) * ringBytes(); }
  UCCL_EP_HOST_DEVICE size_t slotOff(int area, int channel, int node, int slot) const {
    return ringsOff() + (size_t(area) * size_t(nodes) + size_t(node)) * region_bytes + size_t(channel) * ringBytes() +
           kRingCounterBytes + size_t(slot) * record_bytes;
  }
  // The region every (area, node) pair gets out of a buffer of `bytes`.
  UCCL_EP_HOST_DEVICE size_t regionOf(size_t bytes) const {
    const size_t off = ringsOff();
    return bytes > off ? (bytes - off) / (2 * size_t(nodes)) / 16 * 16 : 0;  // slots align to 16 bytes
  }
  // Bytes of RDMA buffer this call needs: the counts areas and 2 x nodes regions that hold its rings.
  UCCL_EP_HOST_DEVICE size_t neededBytes() const { return ringsOff() + 2 * size_t(nodes) * regionNeed(); }
};

inline RdmaLayout makeRdmaLayout(int channels, int nodes, int ranks, int experts_per_rank, int slots,
                                 size_t record_bytes) {
  RdmaLayout l;
  l.channels = channels;
  l.nodes = nodes;
  l.ranks = ranks;
  l.experts_per_rank = experts_per_rank;
  l.slots = slots;
  l.record_bytes = record_bytes;
  return l;
}

// Signal words of the internode calls, from Context::signal_base in the signal region (the proxies add to them):
//   arrived [R]          source s's counts row of its call n is here once the word reaches n
//   entered [R]          source s began its combine n once the word reaches n (each combine adds 1 at every rank of
//                        the other nodes as it starts). Only read when a wait for a partial stream times out: a rank of
//                        the stream's node that never entered the combine is the one to name, not the peer that waits
//                        for it (design point 9)
//   tail    [Cmax][N]    records of stream (channel, source node) arrived here
//   head    [Cmax][N]    records of stream (channel, destination node) the peer there consumed
UCCL_EP_HOST_DEVICE inline constexpr size_t signalWords(int ranks, int nodes) {
  return 2 * size_t(ranks) + 2 * size_t(kMaxChannels) * size_t(nodes);
}
UCCL_EP_HOST_DEVICE inline size_t arrivedSignal(int source) { return size_t(source); }
UCCL_EP_HOST_DEVICE inline size_t enteredSignal(int ranks, int source) { return size_t(ranks) + size_t(source); }
UCCL_EP_HOST_DEVICE inline size_t tailSignal(int ranks, int nodes, int c, int node) {
  return 2 * size_t(ranks) + size_t(c) * nodes + node;
}
UCCL_EP_HOST_DEVICE inline size_t headSignal(int ranks, int nodes, int c, int node) {
  return 2 * size_t(ranks) + size_t(kMaxChannels) * nodes + size_t(c) * nodes + node;
}
// Counters in this rank's GPU memory (Context::counters, uint64, zero at start, never reset):
//   calls                the internode dispatches published so far (their parity picks the counts areas)
//   combines             the internode combines begun so far (the push step counts its own)
//   sent     [Cmax][N]   records this rank wrote into stream (channel, destination node)
//   consumed [Cmax][N]   records this rank forwarded from stream (channel, source node)
//   start    [Cmax][N]   `sent` as the call began (its first step copies it): a sender waits until the peer consumed
//                        that much of every stream to the node before its first record, since a call's rings may lie
//                        where the last call's rings of other channels did (record sizes and channel counts differ)
constexpr size_t kCallsCounter = 0, kCombinesCounter = 1, kStreamCountersBegin = 2;
UCCL_EP_HOST_DEVICE inline constexpr size_t counterWords(int nodes) {
  return kStreamCountersBegin + 3 * size_t(kMaxChannels) * nodes;
}
UCCL_EP_HOST_DEVICE inline size_t startCounter(int nodes, int c, int node) {
  return kStreamCountersBegin + 2 * size_t(kMaxChannels) * nodes + size_t(c) * nodes + node;
}
UCCL_EP_HOST_DEVICE inline size_t sentCounter(int nodes, int c, int node) {
  return kStreamCountersBegin + size_t(c) * nodes + node;
}
UCCL_EP_HOST_DEVICE inline size_t consumedCounter(int nodes, int c, int node) {
  return kStreamCountersBegin + size_t(kMaxChannels) * nodes + size_t(c) * nodes + node;
}

struct Context {
  intranode::Context node;    // the node's ranks: local rank and count, the local peers' nvl buffers
  intranode::Context global;  // the global rank and count, this rank's nvl buffer (plan, unpack, error record)
  int node_index = 0, nodes = 1, local = 0, ranks_per_node = 1;
  uint8_t* rdma = nullptr;                // device pointer of this rank's RDMA buffer
  uint32_t rdma_region = 0;               // its region index in every rank's proxy tables
  int64_t* signals = nullptr;             // device pointer of the internode signal words (host-mapped)
  uint32_t signal_base = 0;               // index of signals[0] in the signal region (descriptors name it)
  const ring::RingView* rings = nullptr;  // device array [num_rings]
  int num_rings = 0;
  uint64_t* counters = nullptr;           // device [counterWords(nodes)]
  RdmaLayout rdma_layout;
  int send_chunk = 6;                     // records per WRITE (Config.num_max_rdma_chunked_send_tokens)
};

// The forwarded records of a call, for combine: per record (in (source node, stream position) order) the positions
// at the node's ranks, then the source node, and the source token index. Outputs of the receive half, sized by
// HostCounts::num_forward.
struct ForwardMap {
  int32_t* positions = nullptr;  // [num_forward, P + 1]: column P holds the source node
  int32_t* source_token = nullptr;  // [num_forward]
  int num_forward = 0;
};

// Steps of the send half: reuse (node), plan (global), publish (the counts exchange; writes a.rank_prefix_matrix
// or, for a cached dispatch, `computed_prefix` and checks it against the handle's).
void launchDispatchSend(const Context& ctx, const intranode::DispatchArgs& a, int32_t* recv_gbl_rank_prefix_sum,
                        int32_t* computed_prefix, void* stream);
// The receive half: transfer (senders and forwarders), arrive, unpack, finish.
void launchDispatchRecv(const Context& ctx, const intranode::DispatchArgs& a, const int32_t* prefix,
                        const ForwardMap& fwd, void* stream);
// Combine (internode_combine.cu): reuse, push (rows back to their source on this node, or to its peer here), arrive,
// node plan, transfer (partial sums to the sources, partials received into the nvl buffer), reduce, finish.
void launchCombine(const Context& ctx, const intranode::CombineArgs& a, void* stream);
// Bytes of the nvl buffer rank `rank` needs in a combine beyond what peers push (the node plan and the partials):
// checked by each rank for itself.
UCCL_EP_HOST_DEVICE inline size_t combineRecordBytes(int hidden, int num_topk) {
  return intranode::alignUp(size_t(hidden) * 2 + size_t(num_topk) * 4 + 4, 16);
}

}  // namespace uccl::ep::kernels::internode
