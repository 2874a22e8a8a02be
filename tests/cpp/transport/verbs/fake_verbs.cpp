#include "fake_verbs.hpp"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>

namespace uccl::ep::transport::verbs::testing {

FakeVerbs::FakeVerbs() { bind(); }
FakeVerbs::~FakeVerbs() = default;

FakeDevice& FakeVerbs::addDevice(const std::string& name, int ports) {
  devices_.push_back(std::make_unique<FakeDevice>());
  FakeDevice& d = *devices_.back();
  d.name = name;
  std::strncpy(d.dev.name, name.c_str(), sizeof(d.dev.name) - 1);
  d.ctx.device = &d.dev;
  d.ports.resize(ports);
  for (FakePort& p : d.ports) p.gids[0] = ipv4Gid(0, IBV_GID_TYPE_ROCE_V2, 10, 0, 0, 1);
  return d;
}

ibv_gid_entry FakeVerbs::gidEntry(int index, uint32_t type, const std::vector<uint8_t>& raw16) {
  ibv_gid_entry e{};
  std::memcpy(e.gid.raw, raw16.data(), 16);
  e.gid_index = static_cast<uint32_t>(index);
  e.gid_type = type;
  return e;
}

ibv_gid_entry FakeVerbs::ipv4Gid(int index, uint32_t type, uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return gidEntry(index, type, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d});
}

FakeQp* FakeVerbs::qpByNum(uint32_t qpn) {
  for (auto& q : qps_) {
    if (q->qp.qp_num == qpn && !q->destroyed) return q.get();
  }
  return nullptr;
}

std::vector<FakeQp*> FakeVerbs::qps() {
  std::vector<FakeQp*> v;
  for (auto& q : qps_) v.push_back(q.get());
  return v;
}

int FakeVerbs::liveQps() const {
  int n = 0;
  for (auto& q : qps_) n += q->destroyed ? 0 : 1;
  return n;
}

void FakeVerbs::pushCqe(FakeQp* qp, ibv_wc wc) {
  wc.qp_num = qp->qp.qp_num;
  cqes_[qp->init.send_cq].push_back(wc);
}

void FakeVerbs::complete(FakeQp& qp, const PostedWr& w, ibv_wc_status status) {
  // Unsignaled successes leave no CQE; their slots are freed by the next CQE (in-order completion).
  if (status == IBV_WC_SUCCESS && !(w.flags & IBV_SEND_SIGNALED)) {
    ++qp.unsignaled_tail;
    return;
  }
  qp.unsignaled_tail = 0;
  ibv_wc wc{};
  wc.wr_id = w.wr_id;
  wc.status = status;
  wc.opcode = w.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD ? IBV_WC_FETCH_ADD : IBV_WC_RDMA_WRITE;
  pushCqe(&qp, wc);
  qp.outstanding = static_cast<uint32_t>(qp.pending.size());  // this CQE frees every slot up to it
}

bool FakeVerbs::remoteOk(uint32_t rkey, uint64_t addr, uint64_t len) const {
  for (const auto& [p, rec] : mrs_) {
    const uint64_t base = reinterpret_cast<uint64_t>(rec->mr.addr);
    if (rec->mr.rkey == rkey && addr >= base && addr + len <= base + rec->mr.length) return true;
  }
  return false;
}

void FakeVerbs::runWr(FakeQp& src, const PostedWr& w) {
  if (src.state == IBV_QPS_ERR) return complete(src, w, IBV_WC_WR_FLUSH_ERR);
  FakeQp* dst = nullptr;
  for (const Transition& t : src.transitions) {
    if (t.attr.qp_state == IBV_QPS_RTR) dst = qpByNum(t.attr.dest_qp_num);
  }
  ibv_wc_status status = IBV_WC_SUCCESS;
  uint64_t len = 0;
  for (const ibv_sge& s : w.sges) len += s.length;
  if (dst == nullptr || dst->state < IBV_QPS_RTR || dst->state == IBV_QPS_ERR) {
    status = IBV_WC_RETRY_EXC_ERR;
  } else if (w.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD) {
    if (!remoteOk(w.rkey, w.remote_addr, 8)) {
      status = IBV_WC_REM_ACCESS_ERR;
    } else {
      // Atomic like the NIC's own: the host may be polling the word while the "NIC" adds to it.
      const uint64_t old = __atomic_fetch_add(reinterpret_cast<uint64_t*>(w.remote_addr), w.compare_add,
                                              __ATOMIC_SEQ_CST);
      std::memcpy(reinterpret_cast<void*>(w.sges.at(0).addr), &old, 8);
    }
  } else if (!remoteOk(w.rkey, w.remote_addr, len == 0 ? 1 : len) && len > 0) {
    status = IBV_WC_REM_ACCESS_ERR;
  } else if (w.opcode == IBV_WR_RDMA_WRITE_WITH_IMM && dst->recvs.empty()) {
    status = IBV_WC_RNR_RETRY_EXC_ERR;
  } else {
    uint64_t at = w.remote_addr;
    for (const ibv_sge& s : w.sges) {
      std::memcpy(reinterpret_cast<void*>(at), reinterpret_cast<void*>(s.addr), s.length);
      at += s.length;
    }
    if (w.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
      ibv_wc wc{};
      wc.wr_id = dst->recvs.front();
      dst->recvs.pop_front();
      wc.status = IBV_WC_SUCCESS;
      wc.opcode = IBV_WC_RECV_RDMA_WITH_IMM;
      wc.wc_flags = IBV_WC_WITH_IMM;
      wc.imm_data = w.imm_data;
      wc.byte_len = static_cast<uint32_t>(len);
      pushCqe(dst, wc);
    }
  }
  if (status != IBV_WC_SUCCESS) src.state = IBV_QPS_ERR;
  complete(src, w, status);
}

void FakeVerbs::execute() {
  for (auto& q : qps_) {
    if (q->destroyed || q->state < IBV_QPS_RTS) continue;
    while (!q->pending.empty()) {
      const PostedWr w = q->pending.front();
      q->pending.pop_front();
      runWr(*q, w);
    }
    q->outstanding = q->unsignaled_tail;  // executed but unsignaled WRs hold their slots until a later CQE
  }
}

void FakeVerbs::deliverImm(FakeQp* qp, uint32_t imm) {
  ibv_wc wc{};
  wc.wr_id = qp->recvs.front();
  qp->recvs.pop_front();
  wc.opcode = IBV_WC_RECV_RDMA_WITH_IMM;
  wc.wc_flags = IBV_WC_WITH_IMM;
  wc.imm_data = htonl(imm);
  pushCqe(qp, wc);
}

void FakeVerbs::bind() {
  VerbsApi& a = api_;
  a.getDeviceList = [this](int* num) -> ibv_device** {
    *num = list_devices_null ? 0 : static_cast<int>(devices_.size());
    if (list_devices_null) return nullptr;
    auto** list = new ibv_device*[devices_.size() + 1];
    for (size_t i = 0; i < devices_.size(); ++i) list[i] = &devices_[i]->dev;
    list[devices_.size()] = nullptr;
    return list;
  };
  a.freeDeviceList = [](ibv_device** list) { delete[] list; };
  a.deviceName = [](ibv_device* dev) -> const char* { return dev->name; };
  a.openDevice = [this](ibv_device* dev) -> ibv_context* {
    for (auto& d : devices_) {
      if (&d->dev == dev) {
        ++open_contexts_;
        return &d->ctx;
      }
    }
    return nullptr;
  };
  a.closeDevice = [this](ibv_context*) {
    --open_contexts_;
    return 0;
  };
  a.queryDevice = [](ibv_context* ctx, ibv_device_attr* attr) {
    const FakeDevice* d =
        reinterpret_cast<const FakeDevice*>(reinterpret_cast<const char*>(ctx) - offsetof(FakeDevice, ctx));
    *attr = ibv_device_attr{};
    attr->phys_port_cnt = static_cast<uint8_t>(d->ports.size());
    attr->atomic_cap = d->atomic_cap;
    attr->max_qp_wr = d->max_qp_wr;
    attr->max_cqe = d->max_cqe;
    attr->max_qp_rd_atom = 16;
    attr->max_qp_init_rd_atom = 16;
    return 0;
  };
  a.queryPort = [](ibv_context* ctx, uint8_t port, ibv_port_attr* attr) {
    const FakeDevice* d =
        reinterpret_cast<const FakeDevice*>(reinterpret_cast<const char*>(ctx) - offsetof(FakeDevice, ctx));
    if (port < 1 || port > d->ports.size()) return EINVAL;
    const FakePort& p = d->ports[port - 1];
    *attr = ibv_port_attr{};
    attr->state = p.state;
    attr->link_layer = p.link_layer;
    attr->lid = p.lid;
    attr->active_mtu = p.active_mtu;
    attr->max_mtu = IBV_MTU_4096;
    attr->gid_tbl_len = p.gid_tbl_len;
    attr->max_msg_sz = 1u << 30;
    return 0;
  };
  a.queryGidEx = [](ibv_context* ctx, uint32_t port, uint32_t index, ibv_gid_entry* e) {
    const FakeDevice* d =
        reinterpret_cast<const FakeDevice*>(reinterpret_cast<const char*>(ctx) - offsetof(FakeDevice, ctx));
    const FakePort& p = d->ports.at(port - 1);
    const auto it = p.gids.find(static_cast<int>(index));
    if (it == p.gids.end()) return ENODATA;
    *e = it->second;
    e->port_num = port;
    return 0;
  };
  a.allocPd = [this](ibv_context* ctx) {
    auto pd = std::make_unique<ibv_pd>();
    pd->context = ctx;
    ibv_pd* raw = pd.get();
    pds_[raw] = std::move(pd);
    return raw;
  };
  a.deallocPd = [this](ibv_pd* pd) { return pds_.erase(pd) == 1 ? 0 : EINVAL; };
  a.regMr = [this](ibv_pd* pd, void* addr, size_t length, int access) -> ibv_mr* {
    reg_mr_addrs.push_back(addr);
    reg_mr_access.push_back(access);
    if (reg_mr_fails) {
      errno = EFAULT;
      return nullptr;
    }
    auto rec = std::make_unique<MrRec>();
    rec->mr = ibv_mr{pd->context, pd, addr, length, 0, next_key_, next_key_ + 1};
    next_key_ += 2;
    ibv_mr* raw = &rec->mr;
    mrs_[raw] = std::move(rec);
    return raw;
  };
  a.regDmabufMr = [this](ibv_pd* pd, uint64_t offset, size_t length, uint64_t iova, int fd, int access) -> ibv_mr* {
    reg_mr_access.push_back(access);
    dmabuf_calls.push_back(DmabufCall{offset, length, iova, fd, last_aligned_base_, last_aligned_size_});
    if (dmabuf_reg_fails) {
      errno = EOPNOTSUPP;
      return nullptr;
    }
    auto rec = std::make_unique<MrRec>();
    rec->mr = ibv_mr{pd->context, pd, reinterpret_cast<void*>(iova), length, 0, next_key_, next_key_ + 1};
    next_key_ += 2;
    ibv_mr* raw = &rec->mr;
    mrs_[raw] = std::move(rec);
    return raw;
  };
  a.deregMr = [this](ibv_mr* mr) { return mrs_.erase(mr) == 1 ? 0 : EINVAL; };
  a.createCq = [this](ibv_context* ctx, int cqe) {
    auto cq = std::make_unique<ibv_cq>();
    cq->context = ctx;
    cq->cqe = cqe;
    last_cqe_ = cqe;
    ibv_cq* raw = cq.get();
    cqs_[raw] = std::move(cq);
    return raw;
  };
  a.destroyCq = [this](ibv_cq* cq) { return cqs_.erase(cq) == 1 ? 0 : EINVAL; };
  a.createQp = [this](ibv_pd* pd, ibv_qp_init_attr* attr) {
    qps_.push_back(std::make_unique<FakeQp>());
    FakeQp& q = *qps_.back();
    q.init = *attr;
    q.qp.context = pd->context;
    q.qp.pd = pd;
    q.qp.send_cq = attr->send_cq;
    q.qp.recv_cq = attr->recv_cq;
    q.qp.qp_num = next_qpn_++;
    q.qp.qp_type = attr->qp_type;
    q.qp.state = IBV_QPS_RESET;
    return &q.qp;
  };
  a.destroyQp = [this](ibv_qp* qp) {
    qpByNum(qp->qp_num)->destroyed = true;
    return 0;
  };
  a.modifyQp = [this](ibv_qp* qp, ibv_qp_attr* attr, int mask) {
    FakeQp* q = qpByNum(qp->qp_num);
    q->transitions.push_back(Transition{mask, *attr});
    const ibv_qp_state to = attr->qp_state;
    const bool legal = (mask & IBV_QP_STATE) && ((q->state == IBV_QPS_RESET && to == IBV_QPS_INIT) ||
                                                 (q->state == IBV_QPS_INIT && to == IBV_QPS_RTR) ||
                                                 (q->state == IBV_QPS_RTR && to == IBV_QPS_RTS));
    if (!legal || to == fail_transition_to) return EINVAL;
    q->state = to;
    return 0;
  };
  a.postSend = [this](ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad) {
    ++post_send_calls_;
    FakeQp* q = qpByNum(qp->qp_num);
    std::vector<PostedWr> chain;
    int rc = 0;
    int index = 0;
    for (ibv_send_wr* w = wr; w != nullptr; w = w->next, ++index) {
      if (q->state != IBV_QPS_RTS) rc = EINVAL;
      if (q->outstanding >= q->init.cap.max_send_wr) rc = ENOMEM;  // the backend overran the queue
      if (post_send_rc != 0 && index == fail_post_send_at) rc = post_send_rc;
      if (rc != 0) {
        *bad = w;
        break;
      }
      PostedWr p;
      p.wr_id = w->wr_id;
      p.opcode = w->opcode;
      p.flags = w->send_flags;
      p.imm_data = w->imm_data;
      const bool atomic = w->opcode == IBV_WR_ATOMIC_FETCH_AND_ADD;
      p.remote_addr = atomic ? w->wr.atomic.remote_addr : w->wr.rdma.remote_addr;
      p.rkey = atomic ? w->wr.atomic.rkey : w->wr.rdma.rkey;
      p.compare_add = atomic ? w->wr.atomic.compare_add : 0;
      for (int s = 0; s < w->num_sge; ++s) p.sges.push_back(w->sg_list[s]);
      chain.push_back(p);
      q->pending.push_back(p);
      ++q->outstanding;
    }
    q->chains.push_back(chain);
    return rc;
  };
  a.postRecv = [this](ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad) {
    FakeQp* q = qpByNum(qp->qp_num);
    ++q->recv_posts;
    for (ibv_recv_wr* w = wr; w != nullptr; w = w->next) {
      if (q->state == IBV_QPS_RESET || q->recvs.size() >= q->init.cap.max_recv_wr || w->num_sge != 0) {
        *bad = w;
        return EINVAL;
      }
      q->recvs.push_back(w->wr_id);
    }
    return 0;
  };
  a.pollCq = [this](ibv_cq* cq, int num, ibv_wc* wc) {
    auto& queue = cqes_[cq];
    int n = 0;
    for (; n < num && !queue.empty(); ++n) {
      wc[n] = queue.front();
      queue.pop_front();
    }
    return n;
  };
  a.wcStatusStr = [](ibv_wc_status s) { return ibv_wc_status_str(s); };
  a.cudaDmabufFd = [this](void* base, size_t size, std::string* why) {
    last_aligned_base_ = base;
    last_aligned_size_ = size;
    if (dmabuf_fd < 0) *why = dmabuf_why;
    return dmabuf_fd;
  };
  a.closeFd = [this](int fd) { closed_fds.push_back(fd); };
  a.cudaDmabufAvailable = [this] { return cuda_present; };
  a.peermemLoaded = [this] { return peermem; };
}

}  // namespace uccl::ep::transport::verbs::testing
