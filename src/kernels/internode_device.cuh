// Device pieces of the internode kernels (internode_dispatch.cu, internode_combine.cu): descriptor pushes, waits on
// the signal words the proxies raise, and the two ends of a record stream (internode.hpp, design points 3 and 4):
// StreamOut writes records into the send ring of (channel, node) and posts them chunk by chunk, waiting for room;
// StreamIn reads the records of (channel, node) from the receive ring in order and gives the room back chunk by
// chunk. Dispatch streams records from sources to their peers; combine streams partial sums back the same way, so
// the counters of a (channel, node) pair carry on from one call to the next. Device code only.
#pragma once

#include "kernels/internode.hpp"
#include "kernels/intranode_device.cuh"
#include "uccl_ep/ring/descriptor.hpp"

namespace uccl::ep::kernels::internode::dev {

using intranode::dev::fail;
using intranode::dev::failed;
using platform::kWarpSize;
using platform::Scope;

__device__ __forceinline__ uint64_t* signalWord(const Context& ctx, size_t index) {
  return reinterpret_cast<uint64_t*>(ctx.signals + index);
}

__device__ __forceinline__ bool sameNode(const Context& ctx, int rank) {
  return rank / ctx.ranks_per_node == ctx.node_index;
}

// One thread pushes d into ring `ring_index` (mod the ring count); false (recorded) when the push failed.
__device__ inline bool pushOne(const Context& ctx, int ring_index, ring::Descriptor d, int32_t op, int peer) {
  const ring::RingView& r = ctx.rings[ring_index % ctx.num_rings];
  const ring::PushResult res = ring::push(r, d, ctx.node.timeout_ns);
  if (res.status == ring::Status::kOk) return true;
  fail(ctx.node, kRingError, op, peer, -1, (uint64_t(r.ring_id) << 32) | uint32_t(res.status));
  return false;
}

// The first rank of `node` that has not begun combine number `combines` here (its entered word is behind), or -1.
__device__ inline int notEntered(const Context& ctx, int node, uint64_t combines) {
  for (int q = node * ctx.ranks_per_node; q < (node + 1) * ctx.ranks_per_node; ++q) {
    if (platform::loadAcquire<Scope::kSystem>(signalWord(ctx, enteredSignal(ctx.rdma_layout.ranks, q))) < combines) {
      return q;
    }
  }
  return -1;
}

// One thread waits until the signal word reaches `target`; returns the value read, or 0 (recorded: kTimeout with
// `op`, the peer and `detail`) on timeout, or when another thread of this rank failed. With `combines` > 0 (a wait in
// combine number `combines` for `peer`'s stream), a rank of the peer's node that never began this combine is named
// instead (kOpRdmaEntered, detail: the peer): the peer itself waits for it (internode.hpp, design point 9).
__device__ inline uint64_t waitSignal(const Context& ctx, size_t index, uint64_t target, int32_t op, int peer,
                                      uint64_t detail, uint64_t combines = 0) {
  const uint64_t* w = signalWord(ctx, index);
  uint64_t v = platform::loadAcquire<Scope::kSystem>(w);
  if (v >= target) return v;
  const uint64_t start = platform::nowNs();
  for (uint32_t spins = 1;; ++spins) {
    if ((v = platform::loadAcquire<Scope::kSystem>(w)) >= target) return v;
    if ((spins & 255) == 0) {
      if (failed(ctx.node)) return 0;
      if (platform::nowNs() - start > ctx.node.timeout_ns) {
        const int absent = combines > 0 ? notEntered(ctx, peer / ctx.ranks_per_node, combines) : -1;
        if (absent >= 0) {
          fail(ctx.node, kTimeout, kOpRdmaEntered, absent, -1, static_cast<uint64_t>(peer));
        } else {
          fail(ctx.node, kTimeout, op, peer, -1, detail);
        }
        return 0;
      }
    }
  }
}

// Block-wide, in a step before the transfer kernel of every internode call: start = sent, per stream.
__device__ inline void snapshotSent(const Context& ctx) {
  for (int i = threadIdx.x; i < kMaxChannels * ctx.nodes; i += blockDim.x) {
    const int c = i / ctx.nodes, node = i % ctx.nodes;
    ctx.counters[startCounter(ctx.nodes, c, node)] = ctx.counters[sentCounter(ctx.nodes, c, node)];
  }
}

// The sending end of stream (c, node): records go to this rank's peer on `node`. One warp; every lane calls every
// method. The constructor waits until the peer consumed every record of every stream to `node` as this call began
// (Context::counters' start): the streams carry the dispatch's records and the combine's partials of every call in
// turn, whose sizes (and so ring places) differ, so a call's first record must not land on bytes of an earlier
// call's record that the peer still reads. (A call's own records share one layout, and the room per record below
// keeps them apart.) slot() waits for room (the peer consumed record sent - slots) and returns where the next
// record goes;
// commit() counts it and posts a chunk every send_chunk records; finish() posts the rest and keeps the count. After a
// failure (recorded) ok() is false and the warp stops.
class StreamOut {
 public:
  __device__ StreamOut(const Context& ctx, int c, int node, int32_t op)
      : ctx_(ctx), c_(c), node_(node), op_(op), peer_(node * ctx.ranks_per_node + ctx.local),
        counter_(&ctx.counters[sentCounter(ctx.nodes, c, node)]) {
    sent_ = flushed_ = platform::loadRelaxed<Scope::kDevice>(counter_);
    bool drained = true;
    for (int cc = platform::laneId(); cc < kMaxChannels; cc += kWarpSize) {
      const uint64_t start = ctx.counters[startCounter(ctx.nodes, cc, node)];
      const size_t head = headSignal(ctx.rdma_layout.ranks, ctx.nodes, cc, node);
      if (start > 0 && platform::loadAcquire<Scope::kSystem>(signalWord(ctx, head)) < start) {
        drained = waitSignal(ctx, head, start, op, peer_, cc) != 0 && drained;
      }
    }
    ok_ = platform::ballot(!drained) == 0;
    head_ = platform::loadAcquire<Scope::kSystem>(signalWord(ctx, headIndex()));
  }
  __device__ bool ok() const { return ok_; }
  __device__ uint8_t* slot() {
    const uint64_t S = static_cast<uint64_t>(ctx_.rdma_layout.slots);
    if (sent_ - head_ >= S) {
      if (platform::laneId() == 0) head_ = waitSignal(ctx_, headIndex(), sent_ - S + 1, kOpRdmaRoom, peer_, c_);
      head_ = platform::shfl(head_, 0);
      if (head_ == 0) {
        ok_ = false;
        return nullptr;
      }
    }
    return ctx_.rdma + ctx_.rdma_layout.slotOff(0, c_, node_, static_cast<int>(sent_ % S));
  }
  __device__ void commit() {
    ++sent_;
    if (sent_ - flushed_ == static_cast<uint64_t>(ctx_.send_chunk)) flush();
  }
  __device__ void finish() {
    if (ok_ && sent_ != flushed_) flush();
    if (platform::laneId() == 0) platform::storeRelaxed<Scope::kDevice>(counter_, sent_);
  }

 private:
  __device__ size_t headIndex() const { return headSignal(ctx_.rdma_layout.ranks, ctx_.nodes, c_, node_); }
  // Every lane's record stores before the WRITE that reads them; the slots up to the ring's end, then from its start.
  __device__ void flush() {
    platform::fenceAcqRel<Scope::kSystem>();
    platform::syncWarp();
    if (platform::laneId() == 0) {
      const RdmaLayout& L = ctx_.rdma_layout;
      const int ring = c_ * ctx_.nodes + node_, me = ctx_.node_index;
      const uint64_t n = sent_ - flushed_;
      const int s0 = static_cast<int>(flushed_ % L.slots);
      const uint64_t first = n < uint64_t(L.slots - s0) ? n : uint64_t(L.slots - s0);
      bool ok = pushOne(ctx_, ring, ring::makeWrite(peer_, ctx_.rdma_region, L.slotOff(0, c_, node_, s0),
                                                    ctx_.rdma_region, L.slotOff(1, c_, me, s0),
                                                    static_cast<uint32_t>(first * L.record_bytes)), op_, peer_);
      if (ok && n > first) {
        ok = pushOne(ctx_, ring, ring::makeWrite(peer_, ctx_.rdma_region, L.slotOff(0, c_, node_, 0),
                                                 ctx_.rdma_region, L.slotOff(1, c_, me, 0),
                                                 static_cast<uint32_t>((n - first) * L.record_bytes)), op_, peer_);
      }
      const uint32_t tail = ctx_.signal_base + static_cast<uint32_t>(tailSignal(L.ranks, ctx_.nodes, c_, me));
      ok_ = ok && pushOne(ctx_, ring, ring::makeSignal(peer_, tail, static_cast<int32_t>(n)), op_, peer_);
    }
    ok_ = platform::shfl(ok_, 0);
    flushed_ = sent_;
  }

  const Context& ctx_;
  int c_, node_;
  int32_t op_;
  int peer_;
  uint64_t* counter_;
  uint64_t sent_, flushed_, head_;
  bool ok_ = true;
};

// The receiving end of stream (c, node): `expected` records from this rank's peer on `node`. One warp; every lane
// calls every method. In combine, `combines` is the call's number (see waitSignal). next() waits until the next record is here and returns it (null after a failure, recorded);
// done() counts it and gives a chunk of room back every send_chunk records and at the end; finish() keeps the count.
class StreamIn {
 public:
  __device__ StreamIn(const Context& ctx, int c, int node, int64_t expected, int32_t op, uint64_t combines = 0)
      : ctx_(ctx), c_(c), node_(node), op_(op), peer_(node * ctx.ranks_per_node + ctx.local), expected_(expected),
        combines_(combines),
        counter_(&ctx.counters[consumedCounter(ctx.nodes, c, node)]),
        tail_index_(tailSignal(ctx.rdma_layout.ranks, ctx.nodes, c, node)) {
    consumed_ = platform::loadRelaxed<Scope::kDevice>(counter_);
    tail_ = platform::loadAcquire<Scope::kSystem>(signalWord(ctx, tail_index_));
  }
  __device__ int peer() const { return peer_; }
  __device__ const uint8_t* next() {
    const uint64_t pos = consumed_ + k_;
    if (tail_ <= pos) {
      if (platform::laneId() == 0) tail_ = waitSignal(ctx_, tail_index_, pos + 1, op_, peer_, c_, combines_);
      tail_ = platform::shfl(tail_, 0);
      if (tail_ == 0) return nullptr;
    }
    return ctx_.rdma + ctx_.rdma_layout.slotOff(1, c_, node_, static_cast<int>(pos % ctx_.rdma_layout.slots));
  }
  __device__ void done() {
    ++k_;
    if (k_ - acked_ == ctx_.send_chunk || k_ == expected_) {
      platform::syncWarp();  // every lane's loads of the chunk are done before its room is given back
      if (platform::laneId() == 0) {
        const uint32_t head = ctx_.signal_base +
                              static_cast<uint32_t>(headSignal(ctx_.rdma_layout.ranks, ctx_.nodes, c_, ctx_.node_index));
        pushOne(ctx_, c_ * ctx_.nodes + node_, ring::makeSignal(peer_, head, static_cast<int32_t>(k_ - acked_)), op_,
                peer_);
      }
      acked_ = k_;
    }
  }
  __device__ void finish() {
    if (platform::laneId() == 0) platform::storeRelaxed<Scope::kDevice>(counter_, consumed_ + expected_);
  }

 private:
  const Context& ctx_;
  int c_, node_;
  int32_t op_;
  int peer_;
  int64_t expected_;
  uint64_t combines_;  // > 0 in combine: its number, to name a rank that never began it (waitSignal)
  uint64_t* counter_;
  size_t tail_index_;
  uint64_t consumed_, tail_;
  int64_t k_ = 0, acked_ = 0;
};

}  // namespace uccl::ep::kernels::internode::dev
