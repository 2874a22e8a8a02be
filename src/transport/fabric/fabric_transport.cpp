// Control path of the libfabric transport: opening the provider, capabilities, addresses, registration.
#include "transport/fabric/fabric_transport.hpp"

#include <rdma/fi_atomic.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>

#include <algorithm>

#include "transport/backends.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::transport::fabric {
namespace {

constexpr size_t kMaxTxDepth = 4096;   // bounds the op pool when a provider advertises a huge queue
constexpr size_t kRxCqDataPool = 256;  // zero-length receives kept posted under FI_RX_CQ_DATA
// shm lanes: each peer's endpoint keeps this many operations in flight (shm's default of 1024 was the depth of the one
// endpoint every peer shared). libfabric 1.17 makes each endpoint's region 16 MiB whatever the depth.
constexpr size_t kShmLaneDepth = 256;
// Local use as the source of writes and atomics; remotely only what the protocol does to a region: writes (data,
// signals) and, where the provider offers only fetching atomics, the read half of those. Never plain remote reads.
constexpr uint64_t kMrLocalAccess = FI_READ | FI_WRITE;

void checkFi(int rc, const std::string& prov, const char* what) {
  if (rc != 0) UCCL_EP_THROW("fabric/{}: {} failed: {} ({})", prov, what, fi_strerror(-rc), rc);
}

}  // namespace

FabricTransport::FabricTransport(const TransportOptions& options, const std::string& provider)
    : rank_(options.rank), world_(options.world) {
  UCCL_EP_CHECK(world_ > 0 && rank_ >= 0 && rank_ < world_, "fabric/{}: rank {} outside world of {}", provider, rank_,
                world_);
  try {
    open(options, provider);
  } catch (...) {
    close();
    throw;
  }
}

FabricTransport::~FabricTransport() { close(); }

// GPU memory through the provider (FI_HMEM): asked for only with a CUDA device and UCCL_EP_FABRIC_HMEM not off. The
// entry that grants it may offer less otherwise (shm's has no atomics), so without a device nothing changes. A grant
// is a promise to try: the CUDA registration itself (registerMemory) is the rest of the probe, and the runtime falls
// back to pinned host memory when it fails.
Selection FabricTransport::select(const TransportOptions& options, const std::string& provider) {
  const bool want = options.gpu_device >= 0 && options.fabric_hmem != "off";
  if (want) {
    try {
      Selection s = selectInfo(options, provider, /*hmem=*/true);
      if (s.hmem) return s;
    } catch (const Error& e) {
      if (options.fabric_hmem == "on") {
        UCCL_EP_THROW("fabric/{}: UCCL_EP_FABRIC_HMEM=on, but the provider grants no FI_HMEM endpoint: {}", provider,
                      e.what());
      }
      log().debug("fabric/{} (rank {}, thread {}): no FI_HMEM endpoint, GPU memory stays unregistered ({})", provider,
                 options.rank, options.thread_index, e.what());
    }
  }
  return selectInfo(options, provider);
}

void FabricTransport::open(const TransportOptions& options, const std::string& provider) {
  sel_ = select(options, provider);
  gpuDevice_ = options.gpu_device;
  fi_info* info = sel_.info.get();
  prov_ = info->fabric_attr->prov_name;
  name_ = "fabric/" + prov_ + ":" + info->domain_attr->name;
  log().debug("{} (rank {}, thread {}): {}", name_, rank_, options.thread_index, describeInfo(*info));

  const uint64_t mrMode = info->domain_attr->mr_mode;
  mrLocal_ = mrMode & FI_MR_LOCAL;
  virtAddr_ = mrMode & FI_MR_VIRT_ADDR;
  provKey_ = mrMode & FI_MR_PROV_KEY;
  const size_t key_bytes = info->domain_attr->mr_key_size;
  if (key_bytes > 0 && key_bytes < sizeof(uint64_t)) keyMask_ = (uint64_t{1} << (8 * key_bytes)) - 1;
  mrEndpoint_ = mrMode & FI_MR_ENDPOINT;
  rxCqData_ = info->mode & FI_RX_CQ_DATA;
  // shm 1.17 mishandles FI_DELIVERY_COMPLETE outside writes with data: a zero-length write never completes, and
  // 2000 fetch-adds left the counter above the exact sum (a completion before shm was done with the operand, or
  // an add applied twice). Without the flag both are exact (the tests hold this); a zero-length signal or an
  // atomic then completes locally once it sits in the target's queue, which shm applies in order.
  const bool dcBroken = prov_ == "shm";
  txFlags_ = FI_COMPLETION | (sel_.delivery ? FI_DELIVERY_COMPLETE : 0);
  txFlagsBare_ = dcBroken ? FI_COMPLETION : txFlags_;

  checkFi(fi_fabric(info->fabric_attr, &fabric_, nullptr), prov_, "fi_fabric");
  checkFi(fi_domain(fabric_, info, &domain_, nullptr), prov_, "fi_domain");

  // Lanes (see the header): one endpoint per peer on shm. FI_RX_CQ_DATA receives and FI_MR_ENDPOINT bindings live
  // on lane 0 alone; shm 1.17 asks for neither, and a shm that does keeps one endpoint (and its limits under faults).
  size_t lanes = prov_ == "shm" && world_ > 1 ? static_cast<size_t>(world_) : 1;
  if (lanes > 1 && (rxCqData_ || mrEndpoint_)) {
    log().warn("{}: the provider asks for {}: one endpoint for every peer, so under enable_shrink a dead peer's "
               "unanswered operations can hold back the completions to live ones",
               name_, rxCqData_ ? "FI_RX_CQ_DATA" : "FI_MR_ENDPOINT");
    lanes = 1;
  }
  std::vector<InfoPtr> laneInfo;  // with lanes, each endpoint's own copy (its own name); else `info` serves
  if (lanes > 1) {
    for (size_t l = 0; l < lanes; ++l) laneInfo.push_back(shmLaneInfo(*info, kShmLaneDepth));
  }
  const fi_info* epInfo = lanes > 1 ? laneInfo[0].get() : info;
  txDepth_ = std::min(epInfo->tx_attr->size, kMaxTxDepth);
  UCCL_EP_CHECK(txDepth_ > 0, "{}: provider advertises a transmit queue of size 0", name_);
  const size_t rxPool = rxCqData_ ? std::min(info->rx_attr->size, kRxCqDataPool) : 0;

  fi_cq_attr cqAttr{};
  cqAttr.size = (txDepth_ + std::max<size_t>(epInfo->rx_attr->size, rxPool)) * lanes + 64;
  cqAttr.format = FI_CQ_FORMAT_DATA;
  cqAttr.wait_obj = FI_WAIT_NONE;  // the proxy polls; nothing here sleeps
  checkFi(fi_cq_open(domain_, &cqAttr, &cq_, nullptr), prov_, "fi_cq_open");

  fi_av_attr avAttr{};
  avAttr.type = FI_AV_TABLE;
  avAttr.count = static_cast<size_t>(world_);
  checkFi(fi_av_open(domain_, &avAttr, &av_, nullptr), prov_, "fi_av_open");

  for (size_t l = 0; l < lanes; ++l) {
    fid_ep* ep = nullptr;
    checkFi(fi_endpoint(domain_, lanes > 1 ? laneInfo[l].get() : info, &ep, nullptr), prov_, "fi_endpoint");
    eps_.push_back(ep);
    checkFi(fi_ep_bind(ep, &av_->fid, 0), prov_, "fi_ep_bind(av)");
    checkFi(fi_ep_bind(ep, &cq_->fid, FI_TRANSMIT | FI_RECV), prov_, "fi_ep_bind(cq)");
    checkFi(fi_enable(ep), prov_, "fi_enable");
  }

  // The pool is allocated once and never resized: providers keep pointers into it while operations fly.
  const size_t txOps = txDepth_ * lanes;
  ops_.assign(txOps + rxPool, Op{});
  freeOps_.assign(lanes, {});
  for (size_t l = 0; l < lanes; ++l) {
    freeOps_[l].reserve(txDepth_);
    for (size_t i = txDepth_; i-- > 0;) freeOps_[l].push_back(static_cast<uint32_t>(l * txDepth_ + i));
  }
  setupAtomics();
  for (size_t i = txOps; i < ops_.size(); ++i) {
    ops_[i].recv = true;
    postReceive(ops_[i]);
  }

  immBytes_ = static_cast<uint32_t>(std::min<size_t>(info->domain_attr->cq_data_size, 8));
  if (immBytes_ > 0) caps_ |= kRemoteCqData;
  if (sel_.hmem) caps_ |= kGpuMemory;
  if (sel_.ordered && orderedDelivery(*info)) caps_ |= kOrderedDelivery;
  log().debug(
      "{}: capabilities: native atomics {}{}, remote cq data {} bytes, ordered delivery {}, delivery complete {}, "
      "FI_SOURCE {}, FI_RX_CQ_DATA {}, tx depth {} x {} lane(s), GPU memory (FI_HMEM) {}",
      name_, (caps_ & kNativeAtomics) != 0, fetchOnly_ ? " (fetching)" : "", immBytes_, (caps_ & kOrderedDelivery) != 0,
      sel_.delivery, sel_.source, rxCqData_, txDepth_, lanes,
      sel_.hmem ? fmt::format("granted, CUDA device {}", gpuDevice_) : std::string("no"));
  if (!sel_.delivery) {
    log().warn("{}: provider refused FI_DELIVERY_COMPLETE; a local completion may precede placement at the target",
               name_);
  }
}

// kNativeAtomics only when the endpoint itself validates FI_SUM on FI_INT64; a provider that knows only the
// fetching form gets it too, with the result landing in the op's scratch word.
void FabricTransport::setupAtomics() {
  if (!sel_.atomics) return;
  size_t count = 0;
  if (fi_atomicvalid(eps_[0], FI_INT64, FI_SUM, &count) == 0 && count > 0) {
    caps_ |= kNativeAtomics;
  } else if (fi_fetch_atomicvalid(eps_[0], FI_INT64, FI_SUM, &count) == 0 && count > 0) {
    caps_ |= kNativeAtomics;
    fetchOnly_ = true;
  }
  if ((caps_ & kNativeAtomics) && mrLocal_) {
    fid_mr* mr = nullptr;
    checkFi(
        fi_mr_reg(domain_, ops_.data(), ops_.size() * sizeof(Op), kMrLocalAccess, 0, provKey_ ? 0 : newKey(), 0, &mr,
                  nullptr),
        prov_, "fi_mr_reg(atomic operand pool)");
    opsMr_ = mr;
    if (mrEndpoint_) {
      checkFi(fi_mr_bind(mr, &eps_[0]->fid, 0), prov_, "fi_mr_bind(atomic operand pool)");
      checkFi(fi_mr_enable(mr), prov_, "fi_mr_enable(atomic operand pool)");
    }
    opsDesc_ = fi_mr_desc(mr);
  }
}

void FabricTransport::postReceive(Op& op) {
  const ssize_t rc = fi_recv(eps_[0], nullptr, 0, nullptr, FI_ADDR_UNSPEC, &op.ctx);
  if (rc != 0) UCCL_EP_THROW("{}: posting a receive for remote CQ data failed: {}", name_, fi_strerror(-rc));
}

void FabricTransport::close() noexcept {
  for (Region& r : regions_) {
    if (r.mr) fi_close(&r.mr->fid);
    r.mr = nullptr;
  }
  if (opsMr_) fi_close(&opsMr_->fid);
  for (fid_ep* ep : eps_) fi_close(&ep->fid);
  eps_.clear();
  if (av_) fi_close(&av_->fid);
  if (cq_) fi_close(&cq_->fid);
  if (domain_) fi_close(&domain_->fid);
  if (fabric_) fi_close(&fabric_->fid);
  opsMr_ = nullptr;
  av_ = nullptr;
  cq_ = nullptr;
  domain_ = nullptr;
  fabric_ = nullptr;
}

// Every lane's name, lane by lane; all of one length (connect() slices a peer's address by it).
Blob FabricTransport::address() const {
  Blob all;
  size_t first = 0;
  for (fid_ep* ep : eps_) {
    size_t len = 0;
    int rc = fi_getname(&ep->fid, nullptr, &len);
    UCCL_EP_CHECK(rc == -FI_ETOOSMALL || rc == 0, "{}: fi_getname(size) failed: {}", name_, fi_strerror(-rc));
    Blob b(len);
    rc = fi_getname(&ep->fid, b.data(), &len);
    UCCL_EP_CHECK(rc == 0, "{}: fi_getname failed: {}", name_, fi_strerror(-rc));
    b.resize(len);
    if (all.empty()) first = len;
    UCCL_EP_CHECK(len == first, "{}: lane names of {} and {} bytes", name_, first, len);
    all.insert(all.end(), b.begin(), b.end());
  }
  return all;
}

// Inserting addresses is all the setup RDM needs: rxm and shm connect lazily on the first operation to a peer,
// so nothing here waits and options.timeout_ns bounds nothing; a peer that never answers surfaces as -FI_EAGAIN
// on post (the proxy's in-flight timeout names it) or as an error completion.
void FabricTransport::connect(const std::vector<Blob>& addresses) {
  UCCL_EP_CHECK(!connected_, "{}: connect called twice on rank {}", name_, rank_);
  UCCL_EP_CHECK(addresses.size() == static_cast<size_t>(world_), "{}: connect got {} addresses, expected world {}",
                name_, addresses.size(), world_);
  // A peer's address holds as many lanes as ours (the same provider and world); with lanes, ours at peer r is its
  // lane `rank_`.
  const size_t total = address().size();
  const size_t len = total / eps_.size();
  const size_t at = eps_.size() == 1 ? 0 : static_cast<size_t>(rank_) * len;
  Blob all;
  all.reserve(len * addresses.size());
  for (size_t r = 0; r < addresses.size(); ++r) {
    UCCL_EP_CHECK(addresses[r].size() == total, "{}: address of rank {} has {} bytes, expected {}", name_, r,
                  addresses[r].size(), total);
    all.insert(all.end(), addresses[r].begin() + at, addresses[r].begin() + at + len);
  }
  std::vector<fi_addr_t> fiAddrs(addresses.size(), FI_ADDR_NOTAVAIL);
  const int n = fi_av_insert(av_, all.data(), addresses.size(), fiAddrs.data(), 0, nullptr);
  UCCL_EP_CHECK(n == world_, "{}: fi_av_insert took {} of {} addresses", name_, n, world_);
  for (size_t r = 0; r < fiAddrs.size(); ++r) {
    UCCL_EP_CHECK(fiAddrs[r] == r, "{}: FI_AV_TABLE gave rank {} fi_addr {}, expected {}", name_, r, fiAddrs[r], r);
  }
  connected_ = true;
  log().debug("{}: rank {} inserted {} peer addresses", name_, rank_, world_);
}

LocalMemory FabricTransport::registerMemory(void* base, size_t size, MemoryKind kind) {
  const bool device = kind == MemoryKind::kDevice;
  if (device && !sel_.hmem) {
    UCCL_EP_THROW(
        "{}: device memory at {} cannot be registered: the endpoint was opened without FI_HMEM (it needs a "
        "CUDA device in the options, UCCL_EP_FABRIC_HMEM not off, and a provider that grants it)",
        name_, base);
  }
  UCCL_EP_CHECK(base != nullptr && size > 0, "{}: cannot register region at {} of {} bytes", name_, base, size);
  fid_mr* mr = nullptr;
  const uint64_t access = kMrLocalAccess | FI_REMOTE_WRITE | (fetchOnly_ ? FI_REMOTE_READ : 0);
  const iovec iov{base, size};
  fi_mr_attr attr{};
  attr.mr_iov = &iov;
  attr.iov_count = 1;
  attr.access = access;
  attr.iface = device ? FI_HMEM_CUDA : FI_HMEM_SYSTEM;
  attr.device.cuda = device ? gpuDevice_ : 0;
  int rc = -FI_ENOKEY;
  for (int attempt = 0; attempt < 8 && rc == -FI_ENOKEY; ++attempt) {  // a random key may be taken: draw again
    attr.requested_key = provKey_ ? 0 : newKey();
    rc = fi_mr_regattr(domain_, &attr, 0, &mr);
  }
  if (rc != 0 && device) {
    UCCL_EP_THROW("{}: registering {} bytes of CUDA device {} memory at {} (FI_HMEM_CUDA) failed: {} ({})", name_, size,
                  gpuDevice_, base, fi_strerror(-rc), rc);
  }
  checkFi(rc, prov_, "fi_mr_regattr");
  if (mrEndpoint_) {
    const int rc = fi_mr_bind(mr, &eps_[0]->fid, 0);
    const int en = rc == 0 ? fi_mr_enable(mr) : rc;
    if (en != 0) {
      fi_close(&mr->fid);
      UCCL_EP_THROW("{}: binding region at {} to the endpoint failed: {}", name_, base, fi_strerror(-en));
    }
  }
  Region r;
  r.mr = mr;
  r.desc = fi_mr_desc(mr);
  r.base = static_cast<char*>(base);
  r.size = size;
  regions_.push_back(r);

  LocalMemory m;
  m.id = static_cast<uint32_t>(regions_.size() - 1);
  m.base = base;
  m.size = size;
  // Without FI_MR_VIRT_ADDR the target names the region by offset from its start, so the base is 0.
  m.remote.addr = virtAddr_ ? reinterpret_cast<uint64_t>(base) : 0;
  m.remote.key = fi_mr_key(mr);
  m.remote.size = size;
  UCCL_EP_CHECK(m.remote.key != FI_KEY_NOTAVAIL, "{}: fi_mr_key gave no key for region at {}", name_, base);
  log().debug("{}: registered {} region {} at {} ({} bytes), key {:#x}", name_, device ? "device" : "host", m.id, base,
              size, m.remote.key);
  return m;
}

void FabricTransport::deregisterMemory(uint32_t id) {
  UCCL_EP_CHECK(id < regions_.size() && regions_[id].mr != nullptr, "{}: no registered region {} (have {})", name_, id,
                regions_.size());
  const int rc = fi_close(&regions_[id].mr->fid);
  regions_[id] = Region{};
  checkFi(rc, prov_, "fi_close(mr)");
}

}  // namespace uccl::ep::transport::fabric

namespace uccl::ep::transport {

std::unique_ptr<Transport> createFabricTransport(const TransportOptions& options, const std::string& provider) {
  return std::make_unique<fabric::FabricTransport>(options, provider);
}

}  // namespace uccl::ep::transport
