// Data path of the libfabric transport: post() and poll(). Nothing here allocates, except the text of a failed
// completion (cold path).
#include <rdma/fi_atomic.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_rma.h>

#include <algorithm>

#include "transport/fabric/fabric_transport.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport::fabric {
namespace {

constexpr size_t kPollBatch = 32;
constexpr size_t kErrorHistory = 64;  // failed completions whose text describe() can still give

const char* opName(OpKind k) {
  switch (k) {
    case OpKind::kWrite:
      return "write";
    case OpKind::kWriteImm:
      return "write-with-imm";
    case OpKind::kFetchAdd:
      return "fetch-add";
  }
  return "?";
}

}  // namespace

FabricTransport::Op* FabricTransport::opOf(void* context) const {
  if (!context || ops_.empty()) return nullptr;
  const auto* p = static_cast<const char*>(context);
  const auto* lo = reinterpret_cast<const char*>(ops_.data());
  const auto* hi = reinterpret_cast<const char*>(ops_.data() + ops_.size());
  if (p < lo || p >= hi) return nullptr;
  return const_cast<Op*>(reinterpret_cast<const Op*>(p));  // ctx is the first member of Op
}

const FabricTransport::Region& FabricTransport::localRegion(const WorkRequest& r) const {
  if (r.local_mem >= regions_.size() || regions_[r.local_mem].mr == nullptr) {
    UCCL_EP_THROW("{}: {} to peer {} names local_mem {}, which is not registered ({} regions)", name_, opName(r.kind),
                  r.peer, r.local_mem, regions_.size());
  }
  const Region& m = regions_[r.local_mem];
  if (r.local_offset > m.size || r.length > m.size - r.local_offset) {
    UCCL_EP_THROW("{}: {} to peer {} reads [{}, +{}) of local_mem {}, which has {} bytes", name_, opName(r.kind),
                  r.peer, r.local_offset, r.length, r.local_mem, m.size);
  }
  return m;
}

ssize_t FabricTransport::issue(const WorkRequest& r, Op& op) {
  const fi_addr_t dest = r.peer;  // FI_AV_TABLE: fi_addr == rank (with lanes, the peer's lane for this rank)
  fid_ep* ep = eps_[laneOf(r.peer)];
  const uint64_t raddr = r.remote.addr + r.remote_offset;
  if (r.kind == OpKind::kFetchAdd) {
    if (!(caps_ & kNativeAtomics)) {
      UCCL_EP_THROW("{}: fetch-add to peer {} but the provider has no native 64-bit atomics (kNativeAtomics unset)",
                    name_, r.peer);
    }
    op.operand = static_cast<int64_t>(r.imm);
    fi_ioc ioc{&op.operand, 1};
    fi_rma_ioc rioc{raddr, 1, r.remote.key};
    void* desc = opsDesc_;
    fi_msg_atomic msg{};
    msg.msg_iov = &ioc;
    msg.desc = &desc;
    msg.iov_count = 1;
    msg.addr = dest;
    msg.rma_iov = &rioc;
    msg.rma_iov_count = 1;
    msg.datatype = FI_INT64;
    msg.op = FI_SUM;
    msg.context = &op.ctx;
    if (!fetchOnly_) return fi_atomicmsg(ep, &msg, txFlagsBare_);
    fi_ioc res{&op.result, 1};
    void* resDesc = opsDesc_;
    return fi_fetch_atomicmsg(ep, &msg, &res, &resDesc, 1, txFlagsBare_);
  }
  // Zero length (the proxy's signals) names no local bytes, so no region is looked up; the one empty iov (rather
  // than none) is what both rxm and shm were tested with.
  iovec iov{};
  void* desc = nullptr;
  if (r.length > 0) {
    const Region& m = localRegion(r);
    iov.iov_base = m.base + r.local_offset;
    iov.iov_len = r.length;
    desc = m.desc;
  }
  fi_rma_iov rma{raddr, r.length, r.remote.key};
  fi_msg_rma msg{};
  msg.msg_iov = &iov;
  msg.desc = &desc;
  msg.iov_count = 1;
  msg.addr = dest;
  msg.rma_iov = &rma;
  msg.rma_iov_count = 1;
  msg.context = &op.ctx;
  uint64_t flags = r.length > 0 ? txFlags_ : txFlagsBare_;
  if (r.kind == OpKind::kWriteImm) {
    if (immBytes_ < 8 && (immBytes_ == 0 || (r.imm >> (8 * immBytes_)) != 0)) {
      UCCL_EP_THROW("{}: write-with-imm to peer {} carries imm {:#x}, wider than the provider's {} bytes", name_,
                    r.peer, r.imm, immBytes_);
    }
    msg.data = r.imm;
    flags |= FI_REMOTE_CQ_DATA;
  }
  return fi_writemsg(ep, &msg, flags);
}

size_t FabricTransport::post(const WorkRequest* reqs, size_t count) {
  size_t taken = 0;
  for (; taken < count; ++taken) {
    const WorkRequest& r = reqs[taken];
    if (!connected_ || r.peer >= static_cast<uint32_t>(world_)) {
      UCCL_EP_THROW("{}: {} to peer {} out of range (world {}, connected {})", name_, opName(r.kind), r.peer, world_,
                    connected_);
    }
    if (r.kind != OpKind::kFetchAdd && r.length > 0) localRegion(r);  // validate before taking an op
    std::vector<uint32_t>& free = freeOps_[laneOf(r.peer)];
    if (free.empty()) {  // our pool mirrors the provider's transmit queue: full
      progress();
      break;
    }
    const uint32_t index = free.back();
    Op& op = ops_[index];
    op.wr_id = r.wr_id;
    op.peer = r.peer;
    op.signaled = r.signaled;
    const ssize_t rc = issue(r, op);
    if (rc == 0) {
      free.pop_back();
      continue;
    }
    if (rc == -FI_EAGAIN) {
      progress();
      break;
    }
    UCCL_EP_THROW("{}: posting {} of {} bytes to peer {} (remote addr {:#x} + {}, key {:#x}) failed: {} ({})", name_,
                  opName(r.kind), r.length, r.peer, r.remote.addr, r.remote_offset, r.remote.key,
                  fi_strerror(static_cast<int>(-rc)), rc);
  }
  return taken;
}

// Reading zero entries still runs the provider's progress engine (rxm and shm move data only from here) and
// leaves every completion queued for the next poll().
void FabricTransport::progress() { (void)fi_cq_read(cq_, nullptr, 0); }

bool FabricTransport::convert(const fi_cq_data_entry& e, fi_addr_t src, Completion* out) {
  Op* op = opOf(e.op_context);
  if (e.flags & FI_REMOTE_CQ_DATA) {
    if (op && op->recv) postReceive(*op);
    *out = Completion{};
    out->kind = Completion::Kind::kRemoteData;
    out->peer = rankOf(src);
    out->imm = e.data;
    return true;
  }
  if (!op) return false;  // not ours (a provider-internal entry); nothing to report
  if (op->recv) {         // a plain message consumed a receive meant for CQ data: keep the pool full
    postReceive(*op);
    return false;
  }
  releaseOp(*op);
  if (!op->signaled) return false;
  *out = Completion{};
  out->kind = Completion::Kind::kLocal;
  out->peer = op->peer;
  out->wr_id = op->wr_id;
  return true;
}

Completion FabricTransport::readError() {
  fi_cq_err_entry err{};
  const ssize_t rc = fi_cq_readerr(cq_, &err, 0);
  if (rc < 0) UCCL_EP_THROW("{}: fi_cq_readerr failed: {}", name_, fi_strerror(static_cast<int>(-rc)));
  Completion c;
  c.ok = false;
  c.error = err.prov_errno != 0 ? err.prov_errno : err.err;
  Op* op = opOf(err.op_context);
  if (op && !op->recv) {
    c.kind = Completion::Kind::kLocal;
    c.peer = op->peer;
    c.wr_id = op->wr_id;
    releaseOp(*op);
  } else {
    c.kind = Completion::Kind::kRemoteData;
    if (op && err.err != FI_ECANCELED) postReceive(*op);
  }
  char buf[256] = {0};
  const char* provText = fi_cq_strerror(cq_, err.prov_errno, err.err_data, buf, sizeof(buf));
  ErrorRecord rec{c.kind, c.peer, c.wr_id,
                  fmt::format("{}: {} completion for wr_id {} with peer {} failed: {} (provider: {}, prov_errno {})",
                              name_, c.kind == Completion::Kind::kLocal ? "local" : "remote", c.wr_id,
                              c.peer == UINT32_MAX ? std::string("unknown") : std::to_string(c.peer),
                              fi_strerror(err.err), provText ? provText : "", err.prov_errno)};
  errors_.push_back(std::move(rec));
  if (errors_.size() > kErrorHistory) errors_.pop_front();
  return c;
}

size_t FabricTransport::poll(Completion* out, size_t max) {
  if (max == 0) {
    progress();
    return 0;
  }
  size_t n = 0;
  fi_cq_data_entry entries[kPollBatch];
  fi_addr_t sources[kPollBatch];
  while (n < max) {
    // Each entry yields at most one Completion, so asking for max - n never overflows `out`.
    const size_t want = std::min(kPollBatch, max - n);
    const ssize_t got = sel_.source ? fi_cq_readfrom(cq_, entries, want, sources) : fi_cq_read(cq_, entries, want);
    if (got == -FI_EAGAIN) break;
    if (got == -FI_EAVAIL) {
      out[n++] = readError();
      continue;
    }
    if (got < 0) UCCL_EP_THROW("{}: fi_cq_read failed: {}", name_, fi_strerror(static_cast<int>(-got)));
    for (ssize_t i = 0; i < got; ++i) {
      if (convert(entries[i], sel_.source ? sources[i] : FI_ADDR_NOTAVAIL, &out[n])) ++n;
    }
    if (static_cast<size_t>(got) < want) break;
  }
  return n;
}

std::string FabricTransport::describe(const Completion& c) const {
  for (auto it = errors_.rbegin(); it != errors_.rend(); ++it) {
    if (it->kind == c.kind && it->peer == c.peer && it->wr_id == c.wr_id) return it->text;
  }
  if (c.ok) return fmt::format("{}: completion for wr_id {} with peer {} succeeded", name_, c.wr_id, c.peer);
  return fmt::format("{}: completion for wr_id {} with peer {} failed: {} ({})", name_, c.wr_id, c.peer,
                     fi_strerror(c.error), c.error);
}

}  // namespace uccl::ep::transport::fabric
