// VerbsTransport hot path: post() chains work requests per peer, poll() drains the shared CQ.
//
// Ordering: requests to one peer go to one RC QP in posting order, and RC places them in that order (writes,
// write-with-imm and fetch-adds alike), so "data write, then signal" on one QP needs no fence. Requests to
// different peers are independent.
#include <arpa/inet.h>

#include <cstring>

#include "transport/verbs/verbs_endpoint.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport::verbs {

void VerbsTransport::buildWr(const WorkRequest& r, size_t k, bool signal) {
  ibv_send_wr& w = wrs_[k];
  ibv_sge& s = sges_[k];
  w = ibv_send_wr{};
  w.next = &wrs_[k + 1];  // the caller terminates the chain
  w.sg_list = &s;
  w.send_flags = signal ? IBV_SEND_SIGNALED : 0;
  if (r.remote.key > UINT32_MAX) {
    UCCL_EP_THROW("verbs: {}: request wr_id={} to peer {} names key {:#x}, which is not a 32-bit rkey", name_, r.wr_id,
                  r.peer, r.remote.key);
  }
  const auto rkey = static_cast<uint32_t>(r.remote.key);
  const uint64_t raddr = r.remote.addr + r.remote_offset;

  if (r.kind == OpKind::kFetchAdd) {
    if (!atomics_) {
      UCCL_EP_THROW(
          "verbs: {} reports no atomics (atomic_cap NONE): fetch-add to peer {} cannot be posted (expected "
          "the immediate-data signal path, kRemoteCqData)",
          name_, r.peer);
    }
    if (raddr % 8 != 0 || (r.remote.size != 0 && r.remote_offset + 8 > r.remote.size)) {
      UCCL_EP_THROW(
          "verbs: {}: fetch-add to peer {} at {:#x} (offset {} of {} bytes): expected an 8-byte aligned "
          "word inside the region",
          name_, r.peer, raddr, r.remote_offset, r.remote.size);
    }
    s = ibv_sge{reinterpret_cast<uint64_t>(&scratch_), sizeof(scratch_), scratch_mr_->lkey};
    w.num_sge = 1;
    w.opcode = IBV_WR_ATOMIC_FETCH_AND_ADD;
    w.wr.atomic.remote_addr = raddr;
    w.wr.atomic.compare_add = r.imm;
    w.wr.atomic.rkey = rkey;
    return;
  }

  const MemoryRegistry::Region* mem = registry_->find(r.local_mem);
  if (mem == nullptr) {
    UCCL_EP_THROW("verbs: {}: request wr_id={} to peer {} names local region {}, which is not registered", name_,
                  r.wr_id, r.peer, r.local_mem);
  }
  if (r.local_offset > mem->size || r.length > mem->size - r.local_offset ||
      (r.remote.size != 0 && (r.remote_offset > r.remote.size || r.length > r.remote.size - r.remote_offset)) ||
      r.length > dev_.port_attr.max_msg_sz) {
    UCCL_EP_THROW(
        "verbs: {}: request wr_id={} to peer {}: {} bytes at local offset {} (region {} of {} bytes) to "
        "remote offset {} (of {} bytes) is out of bounds (max message {})",
        name_, r.wr_id, r.peer, r.length, r.local_offset, r.local_mem, mem->size, r.remote_offset, r.remote.size,
        dev_.port_attr.max_msg_sz);
  }
  s = ibv_sge{reinterpret_cast<uint64_t>(mem->base + r.local_offset), static_cast<uint32_t>(r.length), mem->mr->lkey};
  w.num_sge = r.length > 0 ? 1 : 0;  // a zero-length write-with-imm is a pure signal
  w.wr.rdma.remote_addr = raddr;
  w.wr.rdma.rkey = rkey;
  if (r.kind == OpKind::kWriteImm) {
    if (r.imm > UINT32_MAX) {
      UCCL_EP_THROW("verbs: {}: immediate {:#x} to peer {} does not fit the 32 bits verbs carries (immediateBytes()=4)",
                    name_, r.imm, r.peer);
    }
    w.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    w.imm_data = htonl(static_cast<uint32_t>(r.imm));  // network order on the wire; poll() applies ntohl
  } else {
    w.opcode = IBV_WR_RDMA_WRITE;
  }
}

void VerbsTransport::postChain(uint32_t peer, size_t n) {
  wrs_[n - 1].next = nullptr;
  ibv_send_wr* bad = nullptr;
  const int rc = api_.postSend(qps_[peer], wrs_.data(), &bad);
  if (rc != 0) {
    const size_t posted = bad != nullptr ? static_cast<size_t>(bad - wrs_.data()) : 0;
    sends_[peer].unpush(static_cast<uint32_t>(n - posted));
    UCCL_EP_THROW(
        "verbs: {}: ibv_post_send to peer {} failed at request {} of a chain of {}: {} (rc {}; {} "
        "outstanding of {})",
        name_, peer, posted, n, std::strerror(rc), rc, sends_[peer].outstanding(), send_depth_);
  }
}

size_t VerbsTransport::post(const WorkRequest* reqs, size_t count) {
  UCCL_EP_CHECK(connected_, "verbs: {}: post() before connect()", name_);
  size_t i = 0;
  while (i < count) {
    const uint32_t peer = reqs[i].peer;
    if (peer >= world_)
      UCCL_EP_THROW("verbs: {}: request wr_id={} names peer {} (world {})", name_, reqs[i].wr_id, peer, world_);
    SendTracker& t = sends_[peer];
    const uint32_t room = t.space();
    size_t n = 0;
    while (i + n < count && reqs[i + n].peer == peer && n < room) {
      // The WR that fills the queue is always signaled, so a full queue always has a CQE coming that drains it.
      buildWr(reqs[i + n], n, reqs[i + n].signaled || n + 1 == room);
      ++n;
    }
    if (n == 0) break;  // this peer's send queue is full: the caller posts the rest later, in order
    for (size_t k = 0; k < n; ++k) {
      wrs_[k].wr_id = (uint64_t{peer} << 32) | t.push(reqs[i + k].wr_id, reqs[i + k].signaled);
    }
    postChain(peer, n);
    i += n;
    if (n == room && i < count && reqs[i].peer == peer) break;
  }
  return i;
}

uint32_t VerbsTransport::peerOfQp(uint32_t qp_num, uint64_t wr_id) const {
  const auto it = qp_to_peer_.find(qp_num);
  return it != qp_to_peer_.end() ? it->second : static_cast<uint32_t>((wr_id >> 32) & 0x7fffffffu);
}

void VerbsTransport::repostRecv(uint32_t peer) {
  recv_wr_ = ibv_recv_wr{};
  recv_wr_.wr_id = kRecvTag | (uint64_t{peer} << 32);
  ibv_recv_wr* bad = nullptr;
  const int rc = api_.postRecv(qps_[peer], &recv_wr_, &bad);
  if (rc != 0)
    UCCL_EP_THROW("verbs: {}: reposting a receive on the QP to peer {} failed: {}", name_, peer, std::strerror(rc));
}

size_t VerbsTransport::poll(Completion* out, size_t max) {
  if (max == 0 || cq_ == nullptr) return 0;
  const int want = max < static_cast<size_t>(kPollBatch) ? static_cast<int>(max) : kPollBatch;
  const int got = api_.pollCq(cq_, want, wcs_.data());
  if (got < 0) UCCL_EP_THROW("verbs: {}: ibv_poll_cq failed (rc {})", name_, got);
  size_t n = 0;
  for (int i = 0; i < got; ++i) {
    const ibv_wc& wc = wcs_[i];
    Completion c;
    c.ok = wc.status == IBV_WC_SUCCESS;
    c.error = c.ok ? 0 : static_cast<int>(wc.status);
    if (wc.wr_id & kRecvTag) {
      // Only wr_id, status and qp_num are valid on an error CQE; a failed receive means the QP is dead, so it
      // is not reposted.
      c.kind = Completion::Kind::kRemoteData;
      c.peer = peerOfQp(wc.qp_num, wc.wr_id);
      if (c.ok) {
        c.imm = ntohl(wc.imm_data);
        repostRecv(c.peer);
      }
      out[n++] = c;
      continue;
    }
    c.kind = Completion::Kind::kLocal;
    c.peer = static_cast<uint32_t>(wc.wr_id >> 32);
    const SendTracker::Slot& slot = sends_[c.peer].complete(static_cast<uint32_t>(wc.wr_id));
    c.wr_id = slot.wr_id;
    if (slot.report || !c.ok) out[n++] = c;  // internal signals (queue-full) retire WRs silently
  }
  return n;
}

}  // namespace uccl::ep::transport::verbs
