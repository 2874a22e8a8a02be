// post() and poll(): WR chains per peer, selective signalling, send-queue limits, immediates and the receive
// pool, atomics, and completion errors with their descriptions.
#include <arpa/inet.h>

#include <cstring>
#include <map>

#include "verbs_test_util.hpp"

namespace uccl::ep::transport::verbs::testing {
namespace {

// Ranks 0 and 1 of one job on one fake device, connected, each with a registered 4 KiB host buffer.
struct Pair {
  explicit Pair(int max_qp_wr = 1024, ibv_atomic_cap atomics = IBV_ATOMIC_HCA) {
    FakeDevice& d = f.addDevice("mlx5_0");
    d.max_qp_wr = max_qp_wr;
    d.atomic_cap = atomics;
    a = make(f, 0, 2);
    b = make(f, 1, 2);
    connectAll({a.get(), b.get()});
    std::memset(abuf, 0, sizeof(abuf));
    std::memset(bbuf, 0, sizeof(bbuf));
    amem = a->registerMemory(abuf, sizeof(abuf), MemoryKind::kHost);
    bmem = b->registerMemory(bbuf, sizeof(bbuf), MemoryKind::kHost);
    const auto qps = liveQps(f);
    a_to_b = qps[1];
    b_from_a = qps[2];
  }
  WorkRequest write(uint32_t peer, uint64_t off, uint64_t len, uint64_t wr_id, bool signaled) const {
    WorkRequest r;
    r.kind = OpKind::kWrite;
    r.peer = peer;
    r.local_mem = amem.id;
    r.local_offset = off;
    r.length = len;
    r.remote = peer == 1 ? bmem.remote : amem.remote;
    r.remote_offset = off + 1024;
    r.wr_id = wr_id;
    r.signaled = signaled;
    return r;
  }
  std::vector<Completion> poll(Transport& t) {
    std::vector<Completion> out(256);
    out.resize(t.poll(out.data(), out.size()));
    return out;
  }

  FakeVerbs f;
  std::unique_ptr<Transport> a, b;
  alignas(8) uint8_t abuf[4096];
  alignas(8) uint8_t bbuf[4096];
  LocalMemory amem, bmem;
  FakeQp* a_to_b = nullptr;
  FakeQp* b_from_a = nullptr;
};

TEST(VerbsDatapath, ChainsConsecutiveSamePeerRequestsIntoOnePostSend) {
  Pair p;
  std::vector<WorkRequest> reqs;
  reqs.push_back(p.write(1, 0, 16, 100, false));
  WorkRequest imm = p.write(1, 16, 16, 101, true);
  imm.kind = OpKind::kWriteImm;
  imm.imm = 0xdeadbeef;
  reqs.push_back(imm);
  WorkRequest add;
  add.kind = OpKind::kFetchAdd;
  add.peer = 1;
  add.remote = p.bmem.remote;
  add.remote_offset = 8;
  add.imm = 5;
  add.wr_id = 102;
  add.signaled = false;
  reqs.push_back(add);
  reqs.push_back(p.write(0, 32, 8, 103, true));  // self (loopback QP)
  reqs.push_back(p.write(1, 40, 8, 104, true));
  for (int i = 0; i < 64; ++i) p.abuf[i] = static_cast<uint8_t>(i + 1);

  ASSERT_EQ(p.a->post(reqs.data(), reqs.size()), reqs.size());
  EXPECT_EQ(p.f.postSendCalls(), 3);
  ASSERT_EQ(p.a_to_b->chains.size(), 2u);
  const auto& c = p.a_to_b->chains[0];
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].opcode, IBV_WR_RDMA_WRITE);
  EXPECT_EQ(c[0].flags, 0u);
  EXPECT_EQ(c[0].remote_addr, p.bmem.remote.addr + 1024);
  EXPECT_EQ(c[0].rkey, p.bmem.remote.key);
  ASSERT_EQ(c[0].sges.size(), 1u);
  EXPECT_EQ(c[0].sges[0].addr, reinterpret_cast<uint64_t>(p.abuf));
  EXPECT_EQ(c[0].sges[0].length, 16u);
  EXPECT_EQ(c[1].opcode, IBV_WR_RDMA_WRITE_WITH_IMM);
  EXPECT_EQ(c[1].flags, static_cast<unsigned>(IBV_SEND_SIGNALED));
  EXPECT_EQ(c[1].imm_data, htonl(0xdeadbeef));
  EXPECT_EQ(c[1].remote_addr, p.bmem.remote.addr + 16 + 1024);
  EXPECT_EQ(c[2].opcode, IBV_WR_ATOMIC_FETCH_AND_ADD);
  EXPECT_EQ(c[2].flags, 0u);
  EXPECT_EQ(c[2].compare_add, 5u);
  EXPECT_EQ(c[2].remote_addr, p.bmem.remote.addr + 8);
  EXPECT_EQ(c[2].sges.at(0).length, 8u);
  EXPECT_EQ(p.a_to_b->chains[1].size(), 1u);
  EXPECT_EQ(liveQps(p.f)[0]->chains.at(0).at(0).remote_addr, p.amem.remote.addr + 32 + 1024);

  p.f.execute();
  std::vector<Completion> got = p.poll(*p.a);
  ASSERT_EQ(got.size(), 3u);  // 101, 103, 104: unsignaled 100 and 102 are covered by 101 / 104
  std::map<uint64_t, uint32_t> peer_of;
  for (const Completion& x : got) {
    EXPECT_TRUE(x.ok);
    EXPECT_EQ(x.kind, Completion::Kind::kLocal);
    peer_of[x.wr_id] = x.peer;
  }
  EXPECT_EQ(peer_of, (std::map<uint64_t, uint32_t>{{101, 1}, {103, 0}, {104, 1}}));
  EXPECT_EQ(0, std::memcmp(p.bbuf + 1024, p.abuf, 32));  // bytes landed at addr + offset
  uint64_t counter = 0;
  std::memcpy(&counter, p.bbuf + 8, 8);
  EXPECT_EQ(counter, 5u);

  got = p.poll(*p.b);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].kind, Completion::Kind::kRemoteData);
  EXPECT_TRUE(got[0].ok);
  EXPECT_EQ(got[0].imm, 0xdeadbeefu);
  EXPECT_EQ(got[0].peer, 0u);
}

TEST(VerbsDatapath, ZeroLengthWriteImmIsAPureSignal) {
  Pair p;
  WorkRequest r = p.write(1, 0, 0, 7, true);
  r.kind = OpKind::kWriteImm;
  r.imm = 42;
  ASSERT_EQ(p.a->post(&r, 1), 1u);
  EXPECT_TRUE(p.a_to_b->chains.at(0).at(0).sges.empty());
  p.f.execute();
  auto got = p.poll(*p.b);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].imm, 42u);
}

TEST(VerbsDatapath, ImmediateWiderThan32BitsIsRejected) {
  Pair p;
  EXPECT_EQ(p.a->immediateBytes(), 4u);
  WorkRequest r = p.write(1, 0, 8, 1, true);
  r.kind = OpKind::kWriteImm;
  r.imm = 1ull << 32;
  EXPECT_NE(errorOf([&] { p.a->post(&r, 1); }).find("does not fit the 32 bits"), std::string::npos);
  EXPECT_EQ(p.f.postSendCalls(), 0);
}

TEST(VerbsDatapath, FetchAddWithoutDeviceAtomicsThrows) {
  Pair p(1024, IBV_ATOMIC_NONE);
  EXPECT_EQ(p.a->capabilities() & kNativeAtomics, 0u);
  WorkRequest r;
  r.kind = OpKind::kFetchAdd;
  r.peer = 1;
  r.remote = p.bmem.remote;
  const std::string err = errorOf([&] { p.a->post(&r, 1); });
  EXPECT_NE(err.find("reports no atomics"), std::string::npos) << err;
  EXPECT_EQ(p.f.postSendCalls(), 0);
  Pair q;
  EXPECT_NE(q.a->capabilities() & kNativeAtomics, 0u);
  WorkRequest m = r;
  m.remote = q.bmem.remote;
  m.remote_offset = 4;  // misaligned
  EXPECT_NE(errorOf([&] { q.a->post(&m, 1); }).find("8-byte aligned"), std::string::npos);
}

TEST(VerbsDatapath, FullSendQueueTakesWhatFitsAndDrains) {
  Pair p(8);  // send depth 8
  std::vector<WorkRequest> reqs;
  for (int i = 0; i < 20; ++i) reqs.push_back(p.write(1, 0, 8, 1000 + i, i == 19));
  size_t done = p.a->post(reqs.data(), reqs.size());
  ASSERT_EQ(done, 8u);
  const auto& chain = p.a_to_b->chains.at(0);
  ASSERT_EQ(chain.size(), 8u);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(chain[i].flags, 0u);
  EXPECT_EQ(chain[7].flags, static_cast<unsigned>(IBV_SEND_SIGNALED));  // filling WR signaled internally
  EXPECT_EQ(p.a->post(reqs.data() + done, reqs.size() - done), 0u);     // still full: nothing taken
  EXPECT_EQ(p.f.postSendCalls(), 1);

  std::vector<Completion> all;
  for (int round = 0; round < 10 && done < reqs.size(); ++round) {
    p.f.execute();
    for (const Completion& c : p.poll(*p.a)) all.push_back(c);
    done += p.a->post(reqs.data() + done, reqs.size() - done);
  }
  EXPECT_EQ(done, reqs.size());
  p.f.execute();
  for (const Completion& c : p.poll(*p.a)) all.push_back(c);
  ASSERT_EQ(all.size(), 1u);  // internal signals are not reported
  EXPECT_EQ(all[0].wr_id, 1019u);
  EXPECT_TRUE(all[0].ok);
}

TEST(VerbsDatapath, MixedPeersStopAtTheFirstFullQueue) {
  Pair p(8);
  std::vector<WorkRequest> reqs;
  for (int i = 0; i < 6; ++i) reqs.push_back(p.write(1, 0, 8, i, i == 5));
  for (int i = 0; i < 2; ++i) reqs.push_back(p.write(0, 0, 8, 10 + i, i == 1));
  for (int i = 0; i < 4; ++i) reqs.push_back(p.write(1, 0, 8, 20 + i, i == 3));
  EXPECT_EQ(p.a->post(reqs.data(), reqs.size()), 10u);  // 6 + 2 + 2 (peer 1 then full at 8)
  EXPECT_EQ(p.f.postSendCalls(), 3);
}

TEST(VerbsDatapath, RemoteAccessErrorSurfacesWithThePeer) {
  Pair p;
  std::vector<WorkRequest> reqs = {p.write(1, 0, 8, 1, false), p.write(1, 0, 8, 2, false), p.write(1, 0, 8, 3, true)};
  reqs[1].remote.key = 0x9999;  // not an rkey the peer registered
  ASSERT_EQ(p.a->post(reqs.data(), reqs.size()), 3u);
  p.f.execute();
  auto got = p.poll(*p.a);
  ASSERT_EQ(got.size(), 2u);  // the failed unsignaled WR reports; the one after it is flushed
  EXPECT_FALSE(got[0].ok);
  EXPECT_EQ(got[0].error, IBV_WC_REM_ACCESS_ERR);
  EXPECT_EQ(got[0].peer, 1u);
  EXPECT_EQ(got[0].wr_id, 2u);
  const std::string text = p.a->describe(got[0]);
  EXPECT_NE(text.find("peer 1"), std::string::npos) << text;
  EXPECT_NE(text.find("remote access error"), std::string::npos) << text;
  EXPECT_NE(text.find(ibv_wc_status_str(IBV_WC_REM_ACCESS_ERR)), std::string::npos) << text;
  EXPECT_EQ(got[1].error, IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(got[1].wr_id, 3u);
  EXPECT_NE(p.a->describe(got[1]).find("flushed"), std::string::npos);
}

TEST(VerbsDatapath, RetryExhaustionNamesTheUnreachablePeer) {
  Pair p;
  p.b.reset();  // the peer's QPs are gone: no ACKs come back
  WorkRequest r = p.write(1, 0, 8, 9, true);
  ASSERT_EQ(p.a->post(&r, 1), 1u);
  p.f.execute();
  auto got = p.poll(*p.a);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_FALSE(got[0].ok);
  EXPECT_EQ(got[0].error, IBV_WC_RETRY_EXC_ERR);
  EXPECT_EQ(got[0].wr_id, 9u);
  const std::string text = p.a->describe(got[0]);
  EXPECT_NE(text.find("verbs/mlx5_0:1"), std::string::npos) << text;
  EXPECT_NE(text.find("retry exhausted: peer 1 unreachable"), std::string::npos) << text;
}

TEST(VerbsDatapath, InjectedCompletionErrorForAReceive) {
  Pair p;
  ibv_wc wc{};
  wc.wr_id = p.b_from_a->recvs.front();
  wc.status = IBV_WC_LOC_LEN_ERR;
  p.f.pushCqe(p.b_from_a, wc);
  auto got = p.poll(*p.b);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].kind, Completion::Kind::kRemoteData);
  EXPECT_FALSE(got[0].ok);
  EXPECT_EQ(got[0].peer, 0u);
  EXPECT_NE(p.b->describe(got[0]).find("receive from peer 0"), std::string::npos);
}

TEST(VerbsDatapath, ReceivePoolIsRepostedAsImmediatesArrive) {
  Pair p;
  const size_t pool = p.b_from_a->recvs.size();
  ASSERT_EQ(pool, 128u);
  uint64_t seen = 0;
  for (uint32_t i = 0; i < 3 * pool; ++i) {
    p.f.deliverImm(p.b_from_a, 0x80000000u + i);  // would underflow the pool without reposting
    auto got = p.poll(*p.b);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].kind, Completion::Kind::kRemoteData);
    EXPECT_EQ(got[0].peer, 0u);
    EXPECT_EQ(got[0].imm, 0x80000000u + i);
    ++seen;
    EXPECT_EQ(p.b_from_a->recvs.size(), pool);
  }
  EXPECT_EQ(seen, 3 * pool);
}

TEST(VerbsDatapath, BadRequestsAreRejectedBeforePosting) {
  Pair p;
  WorkRequest r = p.write(1, 0, 8, 1, true);
  r.peer = 2;
  EXPECT_NE(errorOf([&] { p.a->post(&r, 1); }).find("names peer 2 (world 2)"), std::string::npos);
  r = p.write(1, 0, 8, 1, true);
  r.local_mem = 7;
  EXPECT_NE(errorOf([&] { p.a->post(&r, 1); }).find("local region 7, which is not registered"), std::string::npos);
  r = p.write(1, 4090, 8, 1, true);
  EXPECT_NE(errorOf([&] { p.a->post(&r, 1); }).find("out of bounds"), std::string::npos);
  r = p.write(1, 0, 8, 1, true);
  r.remote_offset = 4092;
  EXPECT_NE(errorOf([&] { p.a->post(&r, 1); }).find("out of bounds"), std::string::npos);
  EXPECT_EQ(p.f.postSendCalls(), 0);
}

TEST(VerbsDatapath, PostSendFailureNamesThePeerAndKeepsAccountingExact) {
  Pair p(8);
  p.f.post_send_rc = ENOMEM;
  p.f.fail_post_send_at = 2;
  std::vector<WorkRequest> reqs;
  for (int i = 0; i < 4; ++i) reqs.push_back(p.write(1, 0, 8, i, true));
  const std::string err = errorOf([&] { p.a->post(reqs.data(), reqs.size()); });
  EXPECT_NE(err.find("ibv_post_send to peer 1 failed at request 2 of a chain of 4"), std::string::npos) << err;
  p.f.post_send_rc = 0;
  p.f.execute();
  EXPECT_EQ(p.poll(*p.a).size(), 2u);
  // Only the 2 that reached the queue were counted: a full depth of 8 fits again.
  reqs.clear();
  for (int i = 0; i < 8; ++i) reqs.push_back(p.write(1, 0, 8, 50 + i, i == 7));
  EXPECT_EQ(p.a->post(reqs.data(), reqs.size()), 8u);
}

}  // namespace
}  // namespace uccl::ep::transport::verbs::testing
