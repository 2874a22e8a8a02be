// VerbsTransport setup: device, addressing, PD/CQ/QPs, receive pools, memory registration, connect.
#include "transport/verbs/verbs_transport.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "transport/backends.hpp"
#include "transport/verbs/endpoint_address.hpp"
#include "transport/verbs/qp_setup.hpp"
#include "transport/verbs/verbs_endpoint.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::transport::verbs {
namespace {

uint32_t floorPow2(uint32_t v) {
  uint32_t p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

}  // namespace

VerbsTransport::VerbsTransport(const TransportOptions& o, const VerbsApi& api, const Env& env)
    : api_(api),
      rank_(static_cast<uint32_t>(o.rank)),
      world_(static_cast<uint32_t>(o.world)),
      thread_index_(o.thread_index) {
  UCCL_EP_CHECK(o.world > 0 && o.rank >= 0 && o.rank < o.world, "verbs: rank {} of world {} is not valid", o.rank,
                o.world);
  try {
    setup(env);
  } catch (...) {
    release();
    throw;
  }
}

VerbsTransport::~VerbsTransport() { release(); }

void VerbsTransport::setup(const Env& env) {
  UCCL_EP_CHECK(env.ib_sl >= 0 && env.ib_sl <= 15, "verbs: UCCL_IB_SL={} (expected 0..15)", env.ib_sl);
  UCCL_EP_CHECK(env.ib_tc >= 0 && env.ib_tc <= 255, "verbs: UCCL_IB_TC={} (expected 0..255)", env.ib_tc);
  sl_ = static_cast<uint8_t>(env.ib_sl);
  tc_ = static_cast<uint8_t>(env.ib_tc);

  dev_ = openSelectedDevice(api_, env.ib_hca, thread_index_);
  name_ = fmt::format("verbs/{}:{}", dev_.name, dev_.port);
  gid_ = selectGid(api_, dev_.ctx, dev_.name, dev_.port, dev_.port_attr, env.gid_index);
  const ibv_device_attr& da = dev_.device_attr;
  atomics_ = da.atomic_cap != IBV_ATOMIC_NONE;

  pd_ = api_.allocPd(dev_.ctx);
  UCCL_EP_CHECK(pd_ != nullptr, "verbs: {}: ibv_alloc_pd failed", name_);
  registry_ = std::make_unique<MemoryRegistry>(api_, pd_, name_);

  send_depth_ = floorPow2(std::min<uint32_t>(kSendQueueDepth, static_cast<uint32_t>(std::max(da.max_qp_wr, 1))));
  recv_depth_ = std::min<uint32_t>(kRecvPoolDepth, static_cast<uint32_t>(std::max(da.max_qp_wr, 1)));
  const uint64_t cqe = uint64_t{world_} * (send_depth_ + recv_depth_);
  if (cqe > static_cast<uint64_t>(da.max_cqe)) {
    UCCL_EP_THROW(
        "verbs: {}: a CQ for {} peers needs {} entries, the device allows {} (expected world * {} <= "
        "max_cqe)",
        name_, world_, cqe, da.max_cqe, send_depth_ + recv_depth_);
  }
  cq_ = api_.createCq(dev_.ctx, static_cast<int>(cqe));
  UCCL_EP_CHECK(cq_ != nullptr, "verbs: {}: ibv_create_cq({} entries) failed", name_, cqe);

  qps_.assign(world_, nullptr);
  psn_.assign(world_, 0);
  sends_.resize(world_);
  for (uint32_t p = 0; p < world_; ++p) {
    const QpContext where{dev_.name, dev_.port, p};
    qps_[p] = createRcQp(api_, pd_, cq_, send_depth_, recv_depth_, where);
    qp_to_peer_[qps_[p]->qp_num] = p;
    psn_[p] = initialPsn(qps_[p]->qp_num);
    sends_[p].init(send_depth_);
    qpToInit(api_, qps_[p], where);
    postRecvPool(p);
  }

  scratch_mr_ = api_.regMr(pd_, &scratch_, sizeof(scratch_), IBV_ACCESS_LOCAL_WRITE);
  UCCL_EP_CHECK(scratch_mr_ != nullptr, "verbs: {}: registering the 8-byte fetch-add scratch buffer failed", name_);

  wrs_.assign(send_depth_, ibv_send_wr{});
  sges_.assign(send_depth_, ibv_sge{});
  wcs_.assign(kPollBatch, ibv_wc{});

  caps_ = kOrderedDelivery | kRemoteCqData | kCumulativeCompletions;
  if (atomics_) caps_ |= kNativeAtomics;
  if (api_.cudaDmabufAvailable() || api_.peermemLoaded()) caps_ |= kGpuMemory;

  log().info("verbs: rank {} thread {} uses {} ({}, {}{}), {} QPs of send depth {}, atomics {}", rank_, thread_index_,
             name_, gid_.use_grh ? "Ethernet" : "InfiniBand",
             gid_.use_grh ? fmt::format("GID index {} {} {}", gid_.index, gidTypeName(gid_.type), gidToString(gid_.gid))
                          : fmt::format("LID {}", dev_.port_attr.lid),
             gid_.use_grh ? fmt::format(", SL {} TC {}", sl_, tc_) : fmt::format(", SL {}", sl_), world_, send_depth_,
             atomics_ ? "yes" : "no");
}

void VerbsTransport::release() {
  for (ibv_qp* qp : qps_) {
    if (qp != nullptr) api_.destroyQp(qp);
  }
  qps_.clear();
  if (scratch_mr_ != nullptr) api_.deregMr(scratch_mr_);
  scratch_mr_ = nullptr;
  registry_.reset();
  if (cq_ != nullptr) api_.destroyCq(cq_);
  cq_ = nullptr;
  if (pd_ != nullptr) api_.deallocPd(pd_);
  pd_ = nullptr;
  if (dev_.ctx != nullptr) api_.closeDevice(dev_.ctx);
  dev_.ctx = nullptr;
}

void VerbsTransport::postRecvPool(uint32_t peer) {
  // Zero-length receives: a write-with-immediate places its data by RDMA and only consumes the WR for its imm.
  std::vector<ibv_recv_wr> pool(recv_depth_);
  for (uint32_t i = 0; i < recv_depth_; ++i) {
    pool[i].wr_id = kRecvTag | (uint64_t{peer} << 32);
    pool[i].next = i + 1 < recv_depth_ ? &pool[i + 1] : nullptr;
  }
  ibv_recv_wr* bad = nullptr;
  const int rc = api_.postRecv(qps_[peer], pool.data(), &bad);
  if (rc != 0) {
    UCCL_EP_THROW("verbs: {}: posting {} receives on the QP to peer {} failed: {}", name_, recv_depth_, peer,
                  std::strerror(rc));
  }
}

Blob VerbsTransport::address() const {
  EndpointAddress a;
  a.rank = rank_;
  a.world = world_;
  a.port = dev_.port;
  a.link_layer = dev_.port_attr.link_layer;
  a.mtu = static_cast<uint8_t>(dev_.port_attr.active_mtu);
  a.use_grh = gid_.use_grh ? 1 : 0;
  a.lid = dev_.port_attr.lid;
  a.gid = gid_.gid;
  for (uint32_t p = 0; p < world_; ++p) {
    a.qpn.push_back(qps_[p]->qp_num);
    a.psn.push_back(psn_[p]);
  }
  return encodeAddress(a);
}

void VerbsTransport::connect(const std::vector<Blob>& addresses) {
  UCCL_EP_CHECK(!connected_, "verbs: {}: connect() called twice", name_);
  if (addresses.size() != world_) {
    UCCL_EP_THROW("verbs: {}: connect got {} addresses, expected world size {}", name_, addresses.size(), world_);
  }
  const ibv_device_attr& da = dev_.device_attr;
  const uint8_t max_dest_rd = static_cast<uint8_t>(std::min<int>(kMaxRdAtomic, da.max_qp_rd_atom));
  const uint8_t max_rd = static_cast<uint8_t>(std::min<int>(kMaxRdAtomic, da.max_qp_init_rd_atom));
  for (uint32_t p = 0; p < world_; ++p) {
    const EndpointAddress a = decodeAddress(addresses[p], p);
    if (a.world != world_) {
      UCCL_EP_THROW("verbs: {}: peer {} was built for world {}, this endpoint for {}", name_, p, a.world, world_);
    }
    if (a.link_layer != dev_.port_attr.link_layer || (a.use_grh != 0) != gid_.use_grh) {
      UCCL_EP_THROW("verbs: {}: peer {} is on link layer {} (grh {}), this endpoint on {} (grh {}): expected the same",
                    name_, p, a.link_layer, a.use_grh, dev_.port_attr.link_layer, gid_.use_grh);
    }
    RtrParams r;
    r.dest_qpn = a.qpn[rank_];  // the peer's QP for this rank
    r.rq_psn = a.psn[rank_];
    r.mtu = static_cast<ibv_mtu>(std::min<int>(a.mtu, dev_.port_attr.active_mtu));
    r.dlid = a.lid;
    r.use_grh = gid_.use_grh;
    r.dgid = a.gid;
    r.sgid_index = gid_.index;
    r.sl = sl_;
    r.traffic_class = tc_;
    r.max_dest_rd_atomic = max_dest_rd;
    const QpContext where{dev_.name, dev_.port, p};
    qpToRtr(api_, qps_[p], r, where);
    qpToRts(api_, qps_[p], psn_[p], max_rd, where);
  }
  connected_ = true;
}

LocalMemory VerbsTransport::registerMemory(void* base, size_t size, MemoryKind kind) {
  return registry_->add(base, size, kind);
}

void VerbsTransport::deregisterMemory(uint32_t id) { registry_->remove(id); }

std::unique_ptr<Transport> createVerbsTransportWithApi(const TransportOptions& options, const VerbsApi& api,
                                                       const Env& env) {
  return std::make_unique<VerbsTransport>(options, api, env);
}

bool verbsDeviceAvailableWithApi(const VerbsApi& api) {
  int n = 0;
  ibv_device** list = api.getDeviceList(&n);
  if (list == nullptr) return false;  // no kernel support (ENOSYS) or no devices
  api.freeDeviceList(list);
  return n > 0;
}

}  // namespace uccl::ep::transport::verbs

namespace uccl::ep::transport {

std::unique_ptr<Transport> createVerbsTransport(const TransportOptions& options) {
  return verbs::createVerbsTransportWithApi(options, verbs::realVerbsApi(), env());
}

bool verbsDeviceAvailable() { return verbs::verbsDeviceAvailableWithApi(verbs::realVerbsApi()); }

}  // namespace uccl::ep::transport
