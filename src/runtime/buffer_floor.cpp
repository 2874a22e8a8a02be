// runtime::Buffer, the transport floor: a low-latency call's proxy work as a plan (runtime/ll_floor_plan.hpp), and a
// TransportFloor (uccl_ep/proxy/transport_floor.hpp) opened through the proxies' configuration over the same RDMA
// buffer, so that the floor moves what the call moves, between the same processes, through the same provider.
#include <atomic>

#include "runtime/buffer_impl.hpp"
#include "runtime/internode_floor_plan.hpp"
#include "runtime/cuda_check.hpp"
#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {

proxy::FloorPlan Buffer::lowLatencyFloorPlan(const LowLatencyShape& shape, LowLatencyCall call,
                                             const std::vector<int32_t>& counts) {
  Impl& m = *impl_;
  m.requireConnected("low_latency_floor_plan");
  LowLatencyFloorArgs a;
  a.layout = lowLatencyLayout(shape);
  a.call = call;
  a.rank = m.cfg.rank;
  a.counts = counts;
  for (int p = 0; p < m.cfg.num_ranks; ++p) a.proxy_peer.push_back(m.proxies && !m.isLowLatencyNvlPeer(p));
  a.num_rings = m.proxies ? static_cast<int>(m.rings.size()) : 1;
  a.num_threads = m.proxies ? m.proxies->numThreads() : 1;
  return runtime::lowLatencyFloorPlan(a);
}

proxy::FloorPlan Buffer::internodeFloorPlan(bool dispatch, size_t hidden_bytes, int num_scales, int num_topk,
                                            const NormalConfig& config, const std::vector<int32_t>& sent,
                                            const std::vector<int32_t>& received) {
  Impl& m = *impl_;
  const char* call = "internode_floor_plan";
  m.requireConnected(call);
  if (!m.internode) UCCL_EP_THROW("rank {}: {}: this Buffer is one NVLink domain (no internode calls)", m.cfg.rank, call);
  if (hidden_bytes % 16 != 0 || num_scales < 0 || num_topk < 0 || num_topk > kernels::kMaxTopk) {
    UCCL_EP_THROW_ARG("{}: hidden_bytes {} (a multiple of 16), {} scales, top-{} (0 to {})", call, hidden_bytes,
                      num_scales, num_topk, kernels::kMaxTopk);
  }
  // The record sizes the kernels use (kernels/internode.hpp): the dispatch's token record and positions, the
  // combine's partial row, weights and token index.
  const size_t record =
      dispatch ? kernels::internode::recordBytes(kernels::intranode::makeLayout(m.cfg.num_ranks, 0, hidden_bytes,
                                                                               size_t(num_scales) * 4, num_topk, 0)
                                                     .token_stride,
                                                 m.topo.ranks_per_node)
               : kernels::internode::combineRecordBytes(static_cast<int>(hidden_bytes / 2), num_topk);
  const kernels::internode::Context c = m.internodeContext(call, config, 0, record);
  InternodeFloorArgs a;
  a.layout = c.rdma_layout;
  a.rank = m.cfg.rank;
  a.ranks_per_node = c.ranks_per_node;
  a.send_chunk = c.send_chunk;
  a.signal_base = c.signal_base;
  a.counts = dispatch;
  a.entered = !dispatch;
  a.sent = sent;
  a.received = received;
  a.num_rings = c.num_rings;
  a.num_threads = m.proxies->numThreads();
  return runtime::internodeFloorPlan(a);
}

std::string Buffer::transportFloorInfo() {
  Impl& m = *impl_;
  m.requireConnected("transport_floor_info");
  if (!m.proxies) {
    UCCL_EP_THROW(
        "rank {}: the transport floor measures the proxies' transport, and this Buffer reaches every peer "
        "over NVLink (no proxies); emulate nodes with UCCL_EP_RANKS_PER_NODE to have some",
        m.cfg.rank);
  }
  if (!m.floor) {
    m.floor = std::make_unique<proxy::TransportFloor>(
        m.proxies->config(), m.rdma_region, static_cast<size_t>(m.cfg.num_rdma_bytes), m.rdma_kind, m.signal_count);
  }
  const transport::Blob b = m.floor->localInfo();
  return std::string(b.begin(), b.end());
}

void Buffer::transportFloorConnect(const std::vector<std::string>& infos) {
  Impl& m = *impl_;
  UCCL_EP_CHECK(m.floor != nullptr, "rank {}: transport_floor_connect before transport_floor_info", m.cfg.rank);
  std::vector<transport::Blob> blobs;
  for (const std::string& s : infos) blobs.emplace_back(s.begin(), s.end());
  m.floor->connect(blobs);
}

proxy::FloorResult Buffer::transportFloorRun(const proxy::FloorPlan& plan) {
  Impl& m = *impl_;
  UCCL_EP_CHECK(m.floor != nullptr, "rank {}: transport_floor_run before transport_floor_connect", m.cfg.rank);
  checkErrors();
  m.waitForDevice("transport_floor_run: waiting for the device");
  for (const auto& r : m.rings) {
    const ring::RingControl* c = r->control();
    const uint64_t taken = __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
    const uint64_t done = __atomic_load_n(&c->completed, __ATOMIC_ACQUIRE);
    if (taken != done) {
      UCCL_EP_THROW(
          "rank {}: transport_floor_run while ring {} still has {} descriptors in flight: run the floor "
          "with no low-latency call outstanding",
          m.cfg.rank, c->ring_id, taken - done);
    }
  }
  return m.floor->run(plan);
}

void Buffer::transportFloorClose() { impl_->floor.reset(); }

std::string Buffer::transportName() const { return impl_->transport_name; }

}  // namespace uccl::ep::runtime
