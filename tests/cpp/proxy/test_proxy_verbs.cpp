// The proxy over the verbs backend, with the fake device playing the NIC: two ranks in one process, writes and
// signals through RC QPs, selective signalling (one signaled request per chain), both signal paths.
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "fake_verbs.hpp"
#include "transport/verbs/verbs_transport.hpp"
#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/ring/host_ring.hpp"

namespace uccl::ep::proxy {
namespace {

using transport::verbs::VerbsApi;
using transport::verbs::testing::FakeVerbs;

template <typename R, typename... A>
std::function<R(A...)> locked(std::mutex* mu, std::function<R(A...)> f) {
  return [mu, f](A... a) {
    std::lock_guard<std::mutex> g(*mu);
    return f(a...);
  };
}

// The fake is single-threaded: serialise it, and let every poll first play the NIC for all QPs.
VerbsApi serialised(FakeVerbs* fake, std::mutex* mu) {
  VerbsApi a = fake->api();
  VerbsApi s = a;
  s.getDeviceList = locked(mu, a.getDeviceList);
  s.freeDeviceList = locked(mu, a.freeDeviceList);
  s.openDevice = locked(mu, a.openDevice);
  s.closeDevice = locked(mu, a.closeDevice);
  s.queryDevice = locked(mu, a.queryDevice);
  s.queryPort = locked(mu, a.queryPort);
  s.queryGidEx = locked(mu, a.queryGidEx);
  s.allocPd = locked(mu, a.allocPd);
  s.deallocPd = locked(mu, a.deallocPd);
  s.regMr = locked(mu, a.regMr);
  s.deregMr = locked(mu, a.deregMr);
  s.createCq = locked(mu, a.createCq);
  s.destroyCq = locked(mu, a.destroyCq);
  s.createQp = locked(mu, a.createQp);
  s.destroyQp = locked(mu, a.destroyQp);
  s.modifyQp = locked(mu, a.modifyQp);
  s.postSend = locked(mu, a.postSend);
  s.postRecv = locked(mu, a.postRecv);
  s.pollCq = [fake, mu, poll = a.pollCq](ibv_cq* cq, int n, ibv_wc* wc) {
    std::lock_guard<std::mutex> g(*mu);
    fake->execute();
    return poll(cq, n, wc);
  };
  return s;
}

class ProxyOverVerbs : public ::testing::TestWithParam<SignalPath> {};

TEST_P(ProxyOverVerbs, WritesAndSignalsArriveWithSelectiveSignalling) {
  FakeVerbs fake;
  fake.addDevice("mlx5_0");
  std::mutex mu;
  const VerbsApi api = serialised(&fake, &mu);
  constexpr int kWorld = 2, kChunks = 200, kChunk = 256;
  std::vector<std::vector<uint8_t>> src(kWorld), dst(kWorld);
  std::vector<std::vector<int64_t>> counters(kWorld, std::vector<int64_t>(4, 0));
  std::vector<std::unique_ptr<ProxyGroup>> groups;
  std::vector<std::unique_ptr<ring::HostRing>> rings;
  std::vector<transport::Blob> infos;
  for (int r = 0; r < kWorld; ++r) {
    src[r].assign(kChunks * kChunk, 0);
    for (size_t i = 0; i < src[r].size(); ++i) src[r][i] = static_cast<uint8_t>(i * 7 + r * 3 + 1);
    dst[r].assign(kChunks * kChunk, 0);
    ProxyConfig c;
    c.rank = r;
    c.world = kWorld;
    c.num_threads = 1;
    c.signal_path = GetParam();
    c.transport_factory = [&api](const transport::TransportOptions& o) {
      return transport::verbs::createVerbsTransportWithApi(o, api, Env{});
    };
    groups.push_back(std::make_unique<ProxyGroup>(c));
    groups[r]->addRegion(0, src[r].data(), src[r].size(), transport::MemoryKind::kHost);
    groups[r]->addRegion(1, dst[r].data(), dst[r].size(), transport::MemoryKind::kHost);
    groups[r]->setSignalRegion(counters[r].data(), counters[r].size());
    rings.push_back(std::make_unique<ring::HostRing>(9, 0));
    groups[r]->addRing(rings[r]->view(), RingKind::kNormal);
    infos.push_back(groups[r]->localInfo());
  }
  for (auto& g : groups) g->connect(infos);
  EXPECT_EQ(groups[0]->signalPath(), GetParam());
  for (auto& g : groups) g->start();

  const uint64_t second = 1000ull * 1000 * 1000;
  for (int r = 0; r < kWorld; ++r) {
    const int peer = 1 - r;
    for (int i = 0; i < kChunks; ++i) {
      ASSERT_EQ(ring::push(rings[r]->view(), ring::makeWrite(peer, 0, i * kChunk, 1, i * kChunk, kChunk), second).status,
                ring::Status::kOk);
      if (i % 10 == 9) {
        ASSERT_EQ(ring::push(rings[r]->view(), ring::makeSignal(peer, 2, 10), second).status, ring::Status::kOk);
      }
    }
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (int r = 0; r < kWorld; ++r) {
    while (__atomic_load_n(&counters[r][2], __ATOMIC_ACQUIRE) < kChunks && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  for (auto& g : groups) g->stop();
  for (int r = 0; r < kWorld; ++r) {
    EXPECT_FALSE(groups[r]->hasError()) << groups[r]->firstError();
    EXPECT_EQ(counters[r][2], kChunks) << "rank " << r;
    EXPECT_EQ(dst[r], src[1 - r]) << "rank " << r << " received other bytes than its peer sent";
  }
  // Selective signalling: chains carried one signaled request each (plus the ones the backend signals itself
  // when a chain fills the send queue), far fewer than the requests posted.
  size_t wrs = 0, signaled = 0;
  for (auto* qp : fake.qps()) {
    for (const auto& chain : qp->chains) {
      wrs += chain.size();
      for (const auto& w : chain) signaled += (w.flags & IBV_SEND_SIGNALED) ? 1 : 0;
      EXPECT_TRUE(chain.back().flags & IBV_SEND_SIGNALED) << "a chain whose last request is unsignaled";
    }
  }
  EXPECT_GE(wrs, static_cast<size_t>(kWorld * kChunks));
  EXPECT_LT(signaled, wrs) << "every request was signaled";
}

INSTANTIATE_TEST_SUITE_P(SignalPaths, ProxyOverVerbs, ::testing::Values(SignalPath::kAtomic, SignalPath::kImmediate),
                         [](const auto& info) { return info.param == SignalPath::kAtomic ? "atomic" : "immediate"; });

}  // namespace
}  // namespace uccl::ep::proxy
