#include "runtime/ll_floor_plan.hpp"

#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

namespace {

void check(const LowLatencyFloorArgs& a) {
  const kernels::ll::Layout& l = a.layout;
  const int R = l.num_ranks, E = l.num_experts;
  if (R < 1 || E < R || E % R != 0) UCCL_EP_THROW_ARG("floor plan: layout of {} ranks and {} experts", R, E);
  if (a.rank < 0 || a.rank >= R) UCCL_EP_THROW_ARG("floor plan: rank {} is not in [0, {})", a.rank, R);
  if (a.counts.size() != static_cast<size_t>(R) * E) {
    UCCL_EP_THROW_ARG("floor plan: counts holds {} values, expected num_ranks * num_experts = {}", a.counts.size(),
                      static_cast<size_t>(R) * E);
  }
  if (a.proxy_peer.size() != static_cast<size_t>(R)) {
    UCCL_EP_THROW_ARG("floor plan: proxy_peer holds {} values, expected num_ranks = {}", a.proxy_peer.size(), R);
  }
  for (size_t i = 0; i < a.counts.size(); ++i) {
    if (a.counts[i] < 0 || a.counts[i] > l.max_tokens) {
      UCCL_EP_THROW_ARG("floor plan: rank {} sends {} tokens to expert {}; expected 0 to {} (the tokens per rank)",
                        i / E, a.counts[i], i % E, l.max_tokens);
    }
  }
  if (a.half < 0 || a.half > 1 || a.num_rings < 1 || a.num_threads < 1) {
    UCCL_EP_THROW_ARG("floor plan: half {} (0 or 1), {} rings and {} threads (at least 1 each)", a.half, a.num_rings,
                      a.num_threads);
  }
}

}  // namespace

LowLatencyCall lowLatencyCallOf(const std::string& name) {
  if (name == "dispatch") return LowLatencyCall::kDispatch;
  if (name == "combine") return LowLatencyCall::kCombine;
  UCCL_EP_THROW_ARG("low-latency call '{}': expected 'dispatch' or 'combine'", name);
}

proxy::FloorPlan lowLatencyFloorPlan(const LowLatencyFloorArgs& a) {
  check(a);
  const kernels::ll::Layout& L = a.layout;
  const int R = L.num_ranks, E = L.num_experts, epr = L.experts_per_rank;
  const size_t half_off = L.halfOffset(a.half);
  const size_t half_sig = static_cast<size_t>(a.half) * L.signals_per_half;
  auto count = [&](int src, int expert) { return a.counts[static_cast<size_t>(src) * E + expert]; };
  auto lane = [&](int ring_key) {
    return static_cast<uint32_t>(proxy::threadOfRing(static_cast<uint32_t>(ring_key % a.num_rings), a.num_threads));
  };
  proxy::FloorPlan plan;
  plan.start_together = true;  // the ranks of a call start it together (transport_floor.hpp)
  if (a.call == LowLatencyCall::kDispatch) {
    for (int e = 0; e < E; ++e) {
      const int dst = e / epr, el = e % epr;
      if (!a.proxy_peer[dst]) continue;
      const int n = count(a.rank, e);
      proxy::FloorOp o;
      o.peer = static_cast<uint32_t>(dst);
      o.lane = lane(e);
      o.src_offset = half_off + L.dispatchStaging(e, 0);
      o.dst_offset = half_off + L.dispatchRecv(el, a.rank, 0);
      o.bytes = static_cast<uint64_t>(n) * L.msg_bytes;
      o.signal_index = static_cast<uint32_t>(half_sig + L.dispatchCount(el, a.rank));
      o.signal_value = n + 1;
      plan.ops.push_back(o);
    }
    for (int s = 0; s < R; ++s) {
      if (!a.proxy_peer[s]) continue;
      for (int el = 0; el < epr; ++el) {
        plan.expect.push_back({static_cast<uint32_t>(s), static_cast<uint32_t>(half_sig + L.dispatchCount(el, s)),
                               int64_t{count(s, a.rank * epr + el)} + 1});
      }
    }
    return plan;
  }
  for (int el = 0; el < epr; ++el) {
    const int expert = a.rank * epr + el;
    int begin = 0;  // layout_range: rows of the sources before s
    for (int s = 0; s < R; ++s) {
      const int n = count(s, expert);
      if (a.proxy_peer[s] && n > 0) {  // a pair without rows sends nothing (ll_combine.cu)
        proxy::FloorOp o;
        o.peer = static_cast<uint32_t>(s);
        o.lane = lane(el * R + s);
        o.src_offset = half_off + L.combineSend(el, begin);
        o.dst_offset = half_off + L.combineRecv(expert, 0);
        o.bytes = static_cast<uint64_t>(n) * L.row_bytes;
        o.signal_index = static_cast<uint32_t>(half_sig + L.combineFlag(expert));
        o.signal_value = 1;
        plan.ops.push_back(o);
      }
      begin += n;
    }
  }
  for (int e = 0; e < E; ++e) {
    const int owner = e / epr;
    if (a.proxy_peer[owner] && count(a.rank, e) > 0) {
      plan.expect.push_back({static_cast<uint32_t>(owner), static_cast<uint32_t>(half_sig + L.combineFlag(e)), 1});
    }
  }
  return plan;
}

}  // namespace uccl::ep::runtime
