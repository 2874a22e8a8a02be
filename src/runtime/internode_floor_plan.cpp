#include "runtime/internode_floor_plan.hpp"

#include <algorithm>

#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

namespace in = kernels::internode;

namespace {

void check(const InternodeFloorArgs& a) {
  const in::RdmaLayout& L = a.layout;
  const int R = L.ranks, N = L.nodes, C = L.channels;
  if (N < 1 || R < N || a.ranks_per_node * N != R) {
    UCCL_EP_THROW_ARG("internode floor plan: {} ranks in {} nodes of {}", R, N, a.ranks_per_node);
  }
  if (a.rank < 0 || a.rank >= R) UCCL_EP_THROW_ARG("internode floor plan: rank {} is not in [0, {})", a.rank, R);
  if (C < 1 || C > in::kMaxChannels || L.slots < 1 || a.send_chunk < 1 || L.record_bytes == 0) {
    UCCL_EP_THROW_ARG("internode floor plan: {} channels (1 to {}), {} slots, chunks of {}, records of {} bytes", C,
                      in::kMaxChannels, L.slots, a.send_chunk, L.record_bytes);
  }
  if (L.regionNeed() > L.region_bytes) {
    UCCL_EP_THROW_ARG("internode floor plan: {} bytes of rings per (area, node) in regions of {}", L.regionNeed(),
                      L.region_bytes);
  }
  const size_t streams = static_cast<size_t>(C) * N;
  for (const auto* v : {&a.sent, &a.received}) {
    if (v->size() != streams) {
      UCCL_EP_THROW_ARG("internode floor plan: {} record counts, expected channels x nodes = {}", v->size(), streams);
    }
    if (std::any_of(v->begin(), v->end(), [](int32_t n) { return n < 0; })) {
      UCCL_EP_THROW_ARG("internode floor plan: a negative record count");
    }
  }
  if (a.counts && a.entered) UCCL_EP_THROW_ARG("internode floor plan: a call is a dispatch (counts) or a combine "
                                               "(entered), not both");
  if (a.num_rings < 1 || a.num_threads < 1) {
    UCCL_EP_THROW_ARG("internode floor plan: {} rings and {} threads (at least 1 each)", a.num_rings, a.num_threads);
  }
}

}  // namespace

proxy::FloorPlan internodeFloorPlan(const InternodeFloorArgs& a) {
  check(a);
  const in::RdmaLayout& L = a.layout;
  const int R = L.ranks, N = L.nodes, C = L.channels, P = a.ranks_per_node;
  const int own = a.rank / P, local = a.rank % P;
  auto lane = [&](int ring_key) {
    return static_cast<uint32_t>(proxy::threadOfRing(static_cast<uint32_t>(ring_key % a.num_rings), a.num_threads));
  };
  auto sig = [&](size_t index) { return static_cast<uint32_t>(a.signal_base + index); };
  proxy::FloorPlan plan;
  plan.start_together = true;  // the ranks of a call start it together (transport_floor.hpp)
  // Per remote rank: the dispatch's counts row (WRITE, then its arrival SIGNAL), or the combine's entered SIGNAL.
  for (int r = 0; r < R && (a.counts || a.entered); ++r) {
    if (r / P == own) continue;
    proxy::FloorOp o;
    o.peer = static_cast<uint32_t>(r);
    o.lane = lane(r);
    if (a.counts) {
      o.src_offset = L.countsOutOff(0);
      o.dst_offset = L.countsInOff(0, a.rank);
      o.bytes = L.rowBytes();
    }
    const auto word = [&](int source) { return a.counts ? in::arrivedSignal(source) : in::enteredSignal(R, source); };
    o.signal_index = sig(word(a.rank));
    o.signal_value = 1;
    plan.ops.push_back(o);
    plan.expect.push_back({static_cast<uint32_t>(r), sig(word(r)), 1});
  }
  for (int c = 0; c < C; ++c) {
    for (int b = 0; b < N; ++b) {
      if (b == own) continue;
      const uint32_t peer = static_cast<uint32_t>(b * P + local);
      const int key = c * N + b;
      const int sent = a.sent[static_cast<size_t>(key)], received = a.received[static_cast<size_t>(key)];
      for (int p = 0; p < sent; p += a.send_chunk) {
        const int k = std::min(a.send_chunk, sent - p);
        const int slot = p % L.slots, first = std::min(k, L.slots - slot);
        for (const auto& [from, n] : {std::pair{slot, first}, std::pair{0, k - first}}) {
          if (n == 0) continue;
          proxy::FloorOp o;
          o.peer = peer;
          o.lane = lane(key);
          o.src_offset = L.slotOff(0, c, b, from);
          o.dst_offset = L.slotOff(1, c, own, from);
          o.bytes = static_cast<uint64_t>(n) * L.record_bytes;
          o.signal_index = sig(in::tailSignal(R, N, c, own));
          o.signal_value = n;
          plan.ops.push_back(o);
        }
      }
      for (int p = 0; p < received; p += a.send_chunk) {
        proxy::FloorOp o;
        o.peer = peer;
        o.lane = lane(key);
        o.signal_index = sig(in::headSignal(R, N, c, own));
        o.signal_value = std::min(a.send_chunk, received - p);
        plan.ops.push_back(o);
      }
      if (received > 0) plan.expect.push_back({peer, sig(in::tailSignal(R, N, c, b)), received});
      if (sent > 0) plan.expect.push_back({peer, sig(in::headSignal(R, N, c, b)), sent});
    }
  }
  return plan;
}

}  // namespace uccl::ep::runtime
