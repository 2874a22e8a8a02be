#include "transport/verbs/qp_setup.hpp"

#include <fmt/format.h>

#include <cstring>

#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport::verbs {
namespace {

void modify(const VerbsApi& api, ibv_qp* qp, ibv_qp_attr& attr, int mask, const char* from, const char* to,
            const QpContext& w) {
  const int rc = api.modifyQp(qp, &attr, mask);
  if (rc != 0) {
    UCCL_EP_THROW("verbs: {} port {}: QP {} to peer {}: transition {}->{} failed: {} (rc {}, attr mask {:#x})",
                  w.device, w.port, qp->qp_num, w.peer, from, to, std::strerror(rc), rc, mask);
  }
}

}  // namespace

uint32_t initialPsn(uint32_t qpn) { return (qpn * 2654435761u) & 0xffffffu; }

ibv_qp* createRcQp(const VerbsApi& api, ibv_pd* pd, ibv_cq* cq, uint32_t send_depth, uint32_t recv_depth,
                   const QpContext& w) {
  ibv_qp_init_attr init{};
  init.send_cq = cq;
  init.recv_cq = cq;
  init.qp_type = IBV_QPT_RC;
  init.sq_sig_all = 0;  // selective signalling: only WRs flagged IBV_SEND_SIGNALED produce a success CQE
  init.cap.max_send_wr = send_depth;
  init.cap.max_recv_wr = recv_depth;
  init.cap.max_send_sge = 1;
  init.cap.max_recv_sge = 1;
  ibv_qp* qp = api.createQp(pd, &init);
  UCCL_EP_CHECK(qp != nullptr, "verbs: {} port {}: ibv_create_qp (RC, send depth {}, recv depth {}) for peer {} failed",
                w.device, w.port, send_depth, recv_depth, w.peer);
  return qp;
}

void qpToInit(const VerbsApi& api, ibv_qp* qp, const QpContext& w) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_INIT;
  a.pkey_index = 0;
  a.port_num = w.port;
  a.qp_access_flags = kQpAccess;
  modify(api, qp, a, kInitMask, "RESET", "INIT", w);
}

void qpToRtr(const VerbsApi& api, ibv_qp* qp, const RtrParams& p, const QpContext& w) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = p.mtu;
  a.dest_qp_num = p.dest_qpn;
  a.rq_psn = p.rq_psn;
  a.max_dest_rd_atomic = p.max_dest_rd_atomic;
  a.min_rnr_timer = kQpMinRnrTimer;
  a.ah_attr.dlid = p.dlid;
  a.ah_attr.sl = p.sl;
  a.ah_attr.src_path_bits = 0;
  a.ah_attr.port_num = w.port;
  a.ah_attr.is_global = p.use_grh ? 1 : 0;
  if (p.use_grh) {
    a.ah_attr.grh.dgid = p.dgid;
    a.ah_attr.grh.sgid_index = static_cast<uint8_t>(p.sgid_index);
    a.ah_attr.grh.hop_limit = kHopLimit;
    a.ah_attr.grh.traffic_class = p.traffic_class;
    a.ah_attr.grh.flow_label = 0;
  }
  modify(api, qp, a, kRtrMask, "INIT", "RTR", w);
}

void qpToRts(const VerbsApi& api, ibv_qp* qp, uint32_t sq_psn, uint8_t max_rd_atomic, const QpContext& w) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTS;
  a.timeout = kQpTimeout;
  a.retry_cnt = kQpRetryCount;
  a.rnr_retry = kQpRnrRetry;
  a.sq_psn = sq_psn;
  a.max_rd_atomic = max_rd_atomic;
  modify(api, qp, a, kRtsMask, "RTR", "RTS", w);
}

}  // namespace uccl::ep::transport::verbs
