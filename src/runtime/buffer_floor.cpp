// runtime::Buffer, the transport floor: a low-latency call's proxy work as a plan (runtime/ll_floor_plan.hpp), and a
// TransportFloor (uccl_ep/proxy/transport_floor.hpp) opened through the proxies' configuration over the same RDMA
// buffer, so that the floor moves what the call moves, between the same processes, through the same provider.
#include <atomic>

#include "runtime/buffer_impl.hpp"
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
