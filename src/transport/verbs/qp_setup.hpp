// RC queue pairs: creation and the RESET -> INIT -> RTR -> RTS walk.
//
// Each Transport owns one RC QP per peer (itself included: a QP connected to itself is a valid loopback).
// The QP for peer j is connected to peer j's QP for this rank, whose number comes from peer j's address blob.
// Receives may be posted from INIT on, so the receive pool is filled before the peer can send (RTR).
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <string>

#include "transport/verbs/verbs_api.hpp"

namespace uccl::ep::transport::verbs {

// Transport-level retry: timeout 4.096us * 2^14 ~ 67 ms per try, 7 tries; RNR retry 7 = retry forever (the
// receive pool is reposted by poll(), so "receiver not ready" only means the peer's proxy is behind).
constexpr uint8_t kQpTimeout = 14;
constexpr uint8_t kQpRetryCount = 7;
constexpr uint8_t kQpRnrRetry = 7;
constexpr uint8_t kQpMinRnrTimer = 12;  // 0.64 ms
constexpr uint8_t kMaxRdAtomic = 16;    // clamped to the device's max_qp_(init_)rd_atom
constexpr uint8_t kHopLimit = 255;
// As kMrAccess (memory_registry.hpp): remote writes and atomics, no remote reads.
constexpr int kQpAccess =
    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;

constexpr int kInitMask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
constexpr int kRtrMask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                         IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
constexpr int kRtsMask =
    IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC;

// Names used in error messages: "<device> port <p>, QP <qpn> to peer <peer>".
struct QpContext {
  std::string device;
  uint8_t port = 0;
  uint32_t peer = 0;
};

ibv_qp* createRcQp(const VerbsApi& api, ibv_pd* pd, ibv_cq* cq, uint32_t send_depth, uint32_t recv_depth,
                   const QpContext& where);

void qpToInit(const VerbsApi& api, ibv_qp* qp, const QpContext& where);

struct RtrParams {
  uint32_t dest_qpn = 0;
  uint32_t rq_psn = 0;
  ibv_mtu mtu = IBV_MTU_1024;
  uint16_t dlid = 0;
  bool use_grh = false;
  ibv_gid dgid{};
  int sgid_index = 0;
  uint8_t sl = 0;
  uint8_t traffic_class = 0;
  uint8_t max_dest_rd_atomic = 0;
};
void qpToRtr(const VerbsApi& api, ibv_qp* qp, const RtrParams& p, const QpContext& where);
void qpToRts(const VerbsApi& api, ibv_qp* qp, uint32_t sq_psn, uint8_t max_rd_atomic, const QpContext& where);

// A start PSN derived from the QP number, so a recycled QP number does not accept a dead QP's stray packets.
uint32_t initialPsn(uint32_t qpn);

}  // namespace uccl::ep::transport::verbs
