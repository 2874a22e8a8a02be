// QP creation and the RESET -> INIT -> RTR -> RTS walk: attributes, masks, per-peer wiring, loopback, failures.
#include "transport/verbs/qp_setup.hpp"
#include "verbs_test_util.hpp"

namespace uccl::ep::transport::verbs::testing {
namespace {

TEST(VerbsQp, CreatedPerPeerInInitWithSelectiveSignalling) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  auto t = make(f, 1, 3);
  const auto qps = liveQps(f);
  ASSERT_EQ(qps.size(), 3u);
  for (FakeQp* q : qps) {
    EXPECT_EQ(q->init.qp_type, IBV_QPT_RC);
    EXPECT_EQ(q->init.sq_sig_all, 0);
    EXPECT_EQ(q->init.send_cq, q->init.recv_cq);
    EXPECT_EQ(q->init.cap.max_send_wr, 256u);
    ASSERT_EQ(q->transitions.size(), 1u);
    const Transition& init = q->transitions[0];
    EXPECT_EQ(init.attr.qp_state, IBV_QPS_INIT);
    EXPECT_EQ(init.mask, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    EXPECT_EQ(init.attr.port_num, 1);
    EXPECT_EQ(init.attr.pkey_index, 0);
    EXPECT_TRUE(init.attr.qp_access_flags & IBV_ACCESS_REMOTE_WRITE);
    EXPECT_TRUE(init.attr.qp_access_flags & IBV_ACCESS_REMOTE_ATOMIC);
    EXPECT_FALSE(init.attr.qp_access_flags & IBV_ACCESS_REMOTE_READ) << "nothing reads a peer's memory";
    EXPECT_EQ(q->state, IBV_QPS_INIT);
    EXPECT_EQ(q->recvs.size(), 128u);  // the receive pool is posted before the peer can send
  }
  EXPECT_EQ(f.lastCqSize(), 3 * (256 + 128));
}

TEST(VerbsQp, ConnectWalksRtrAndRtsWithPeerQpNumbers) {
  FakeVerbs f;
  FakePort& port = f.addDevice("mlx5_0").ports[0];
  auto a = make(f, 0, 2);
  port.active_mtu = IBV_MTU_1024;  // b sees a smaller MTU: the path uses the smaller one
  auto b = make(f, 1, 2);
  connectAll({a.get(), b.get()});
  const auto qps = liveQps(f);  // a: [to 0, to 1], b: [to 0, to 1]
  ASSERT_EQ(qps.size(), 4u);
  struct Case {
    FakeQp* qp;
    FakeQp* remote;
  };
  for (const Case& c : {Case{qps[0], qps[0]}, Case{qps[1], qps[2]}, Case{qps[2], qps[1]}, Case{qps[3], qps[3]}}) {
    ASSERT_EQ(c.qp->transitions.size(), 3u);
    EXPECT_EQ(c.qp->state, IBV_QPS_RTS);
    const Transition& rtr = c.qp->transitions[1];
    EXPECT_EQ(rtr.attr.qp_state, IBV_QPS_RTR);
    EXPECT_EQ(rtr.mask, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                            IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    EXPECT_EQ(rtr.attr.dest_qp_num, c.remote->qp.qp_num);
    EXPECT_EQ(rtr.attr.rq_psn, initialPsn(c.remote->qp.qp_num));
    EXPECT_EQ(rtr.attr.max_dest_rd_atomic, 16);
    EXPECT_EQ(rtr.attr.min_rnr_timer, 12);
    EXPECT_EQ(rtr.attr.ah_attr.port_num, 1);
    EXPECT_EQ(rtr.attr.ah_attr.is_global, 1);
    EXPECT_EQ(rtr.attr.ah_attr.grh.sgid_index, 0);
    const Transition& rts = c.qp->transitions[2];
    EXPECT_EQ(rts.attr.qp_state, IBV_QPS_RTS);
    EXPECT_EQ(rts.mask, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                            IBV_QP_MAX_QP_RD_ATOMIC);
    EXPECT_EQ(rts.attr.timeout, 14);
    EXPECT_EQ(rts.attr.retry_cnt, 7);
    EXPECT_EQ(rts.attr.rnr_retry, 7);
    EXPECT_EQ(rts.attr.sq_psn, initialPsn(c.qp->qp.qp_num));
    EXPECT_EQ(rts.attr.max_rd_atomic, 16);
  }
  EXPECT_EQ(qps[0]->transitions[1].attr.path_mtu, IBV_MTU_4096);  // a to itself
  EXPECT_EQ(qps[1]->transitions[1].attr.path_mtu, IBV_MTU_1024);  // min(4096, 1024) both ways
  EXPECT_EQ(qps[2]->transitions[1].attr.path_mtu, IBV_MTU_1024);
  EXPECT_EQ(qps[3]->transitions[1].attr.path_mtu, IBV_MTU_1024);
}

TEST(VerbsQp, SingleRankLoopbackConnectsItsQpToItself) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  auto t = make(f, 0, 1);
  connectAll({t.get()});
  FakeQp* q = liveQps(f).at(0);
  EXPECT_EQ(transitionTo(q, IBV_QPS_RTR)->attr.dest_qp_num, q->qp.qp_num);
  EXPECT_EQ(q->state, IBV_QPS_RTS);
}

TEST(VerbsQp, FailedTransitionNamesItAndThePeer) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  f.fail_transition_to = IBV_QPS_RTR;
  auto a = make(f, 0, 2);
  auto b = make(f, 1, 2);
  std::string err = errorOf([&] { connectAll({a.get(), b.get()}); });
  EXPECT_NE(err.find("mlx5_0 port 1: QP"), std::string::npos) << err;
  EXPECT_NE(err.find("to peer 0: transition INIT->RTR failed"), std::string::npos) << err;

  f.fail_transition_to = IBV_QPS_RTS;
  auto c = make(f, 0, 1);
  err = errorOf([&] { connectAll({c.get()}); });
  EXPECT_NE(err.find("transition RTR->RTS failed"), std::string::npos) << err;

  f.fail_transition_to = IBV_QPS_INIT;
  err = errorOf([&] { make(f, 0, 2); });
  EXPECT_NE(err.find("to peer 0: transition RESET->INIT failed"), std::string::npos) << err;
  a.reset();
  b.reset();
  c.reset();
  EXPECT_EQ(f.openContexts(), 0);  // a failed constructor released what it had built
  EXPECT_EQ(f.liveQps(), 0);
  EXPECT_EQ(f.liveMrs(), 0);
  EXPECT_EQ(f.liveCqs(), 0);
}

TEST(VerbsQp, AddressTableIsChecked) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  auto a = make(f, 0, 2);
  auto b = make(f, 1, 2);
  EXPECT_NE(errorOf([&] { a->connect({a->address()}); }).find("expected world size 2"), std::string::npos);
  EXPECT_NE(errorOf([&] {
              a->connect({a->address(), Blob{1, 2, 3}});
            }).find("address blob of rank 1 is malformed"),
            std::string::npos);
  EXPECT_NE(errorOf([&] { a->connect({b->address(), a->address()}); }).find("claims rank 1"), std::string::npos);
  auto solo = make(f, 0, 1);
  EXPECT_NE(errorOf([&] {
              a->connect({solo->address(), b->address()});
            }).find("peer 0 was built for world 1, this endpoint for 2"),
            std::string::npos);
}

TEST(VerbsQp, PostBeforeConnectIsAnError) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  auto a = make(f, 0, 1);
  WorkRequest r;
  EXPECT_NE(errorOf([&] { a->post(&r, 1); }).find("post() before connect()"), std::string::npos);
}

}  // namespace
}  // namespace uccl::ep::transport::verbs::testing
