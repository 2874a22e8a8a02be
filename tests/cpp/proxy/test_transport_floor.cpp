// The transport floor's rules in one process: over the null loopback transport (bytes land, counters complete and
// are reset), and over the held transport, which shows what is posted when (the proxy's signal rules).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "held_transport.hpp"
#include "transport/backends.hpp"
#include "uccl_ep/proxy/transport_floor.hpp"
#include "uccl_ep/util/error.hpp"
#include "wait_until.hpp"

namespace uccl::ep::proxy {
namespace {

using testing::HeldState;
using testing::HeldTransport;
using transport::OpKind;

using testing::kSecond;
using testing::waitUntil;

ProxyConfig loopbackConfig(int lanes, uint64_t timeout_ns, SignalPath path) {
  ProxyConfig c;
  c.num_threads = lanes;
  c.signal_path = path;
  c.timeout_ns = timeout_ns;
  c.transport_factory = [](const transport::TransportOptions& o) { return transport::createNullTransport(o, true); };
  return c;
}

// One rank writing to itself over null/loopback: rank 0 of a world of 1.
struct Loopback {
  explicit Loopback(int lanes, uint64_t timeout_ns = 10 * kSecond, SignalPath path = SignalPath::kAuto)
      : floor(loopbackConfig(lanes, timeout_ns, path), region.data(), region.size(), transport::MemoryKind::kHost, 16) {
    for (size_t i = 0; i < region.size(); ++i) region[i] = static_cast<uint8_t>(i * 7 + 3);
    floor.connect({floor.localInfo()});
  }
  alignas(64) std::vector<uint8_t> region = std::vector<uint8_t>(8192);
  TransportFloor floor;
};

FloorOp op(uint32_t lane, uint64_t src, uint64_t dst, uint64_t bytes, uint32_t index, int32_t value,
           uint32_t peer = 0) {
  FloorOp o;
  o.peer = peer;
  o.lane = lane;
  o.src_offset = src;
  o.dst_offset = dst;
  o.bytes = bytes;
  o.signal_index = index;
  o.signal_value = value;
  return o;
}

class LoopbackFloor : public ::testing::TestWithParam<SignalPath> {};

TEST_P(LoopbackFloor, MovesTheBytesAppliesTheSignalsAndResetsTheCounters) {
  Loopback l(2, 10 * kSecond, GetParam());
  EXPECT_EQ(l.floor.signalPath(), GetParam());
  FloorPlan plan;
  plan.ops = {op(0, 0, 4096, 512, 3, 5), op(1, 1024, 6144, 256, 7, 1), op(1, 0, 0, 0, 7, 2)};
  plan.expect = {{0, 3, 5}, {0, 7, 3}};
  const std::vector<uint8_t> before = l.region;
  for (int run = 0; run < 3; ++run) {
    const FloorResult r = l.floor.run(plan);
    EXPECT_GE(r.seconds, 0.0);
    EXPECT_GE(r.sends_seconds, 0.0);
    EXPECT_EQ(r.writes, 2u);
    EXPECT_EQ(r.bytes, 768u);
    EXPECT_EQ(r.signals, 3u);
    EXPECT_EQ(l.floor.counter(3), 0) << "run() leaves the counters at zero for the next run";
    EXPECT_EQ(l.floor.counter(7), 0);
  }
  EXPECT_TRUE(std::equal(before.begin(), before.begin() + 512, l.region.begin() + 4096));
  EXPECT_TRUE(std::equal(before.begin() + 1024, before.begin() + 1280, l.region.begin() + 6144));
  EXPECT_EQ(l.floor.transportName(), "null/loopback");
}

INSTANTIATE_TEST_SUITE_P(SignalPaths, LoopbackFloor, ::testing::Values(SignalPath::kAtomic, SignalPath::kImmediate),
                         [](const auto& info) { return info.param == SignalPath::kAtomic ? "atomic" : "immediate"; });

TEST(TransportFloor, APlanThatDoesNotFitIsRejectedBeforeAnythingIsPosted) {
  Loopback l(1);
  const std::vector<uint8_t> before = l.region;
  auto rejects = [&](FloorPlan p, const char* what) {
    try {
      l.floor.run(p);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const InvalidArgument& e) {
      SUCCEED() << e.what();
    }
  };
  FloorPlan p;
  p.ops = {op(1, 0, 0, 16, 0, 1)};
  rejects(p, "a lane that does not exist");
  p.ops = {op(0, 0, 8192 - 8, 16, 0, 1)};
  rejects(p, "a write past the end of the peer's region");
  p.ops = {op(0, 8190, 0, 16, 0, 1)};
  rejects(p, "a write from past the end of this region");
  p.ops = {op(0, 0, 0, 16, 16, 1)};
  rejects(p, "a counter the peer does not have");
  p.ops = {op(0, 0, 0, 16, 0, 1, /*peer=*/1)};
  rejects(p, "a rank outside the world");
  p.ops = {};
  p.expect = {{0, 2, 1}, {0, 2, 1}};
  rejects(p, "a counter expected twice");
  p.expect = {{0, 2, 0}};
  rejects(p, "an expectation of zero");
  EXPECT_EQ(l.region, before);
  FloorPlan ok;
  ok.ops = {op(0, 0, 4096, 16, 1, 1)};
  ok.expect = {{0, 1, 1}};
  EXPECT_NO_THROW(l.floor.run(ok)) << "the floor stays usable after rejected plans";
}

TEST(TransportFloor, AMissingSignalTimesOutNamingTheRankAndTheCounter) {
  Loopback l(1, kSecond / 5);
  FloorPlan p;
  p.ops = {op(0, 0, 4096, 64, 2, 1)};
  p.expect = {{0, 2, 2}};  // one more than is sent
  try {
    l.floor.run(p);
    FAIL() << "completed without the second signal";
  } catch (const TimeoutError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("counter 2 from rank 0 is 1 of 2"), std::string::npos) << m;
    EXPECT_NE(m.find("UCCL_EP_TIMEOUT_SECS"), std::string::npos) << m;
  }
  EXPECT_THROW(l.floor.run(FloorPlan{}), Error) << "a floor that timed out stays failed";
}

// Rank 0 of 2 over the held transport: the requests one op turns into, for the transport's capabilities.
class HeldFloor : public ::testing::Test {
 protected:
  std::unique_ptr<TransportFloor> make(uint32_t caps, SignalPath path = SignalPath::kAuto) {
    state_.caps = caps;
    ProxyConfig c;
    c.world = 2;
    c.num_threads = 1;
    c.signal_path = path;
    c.timeout_ns = 10 * kSecond;
    c.transport_factory = [this](const transport::TransportOptions&) {
      return std::make_unique<HeldTransport>(&state_);
    };
    auto f = std::make_unique<TransportFloor>(c, region_.data(), region_.size(), transport::MemoryKind::kHost, 8);
    const transport::Blob info = f->localInfo();
    f->connect({info, info});
    return f;
  }
  // Runs one WRITE + SIGNAL op to rank 1 in the background; the test completes what was posted.
  std::future<FloorResult> runOne(TransportFloor& f) {
    return std::async(std::launch::async, [&f] {
      FloorPlan p;
      p.ops = {op(0, 64, 128, 256, 5, 9, /*peer=*/1)};
      return f.run(p);
    });
  }
  HeldState state_;
  alignas(64) std::vector<uint8_t> region_ = std::vector<uint8_t>(4096);
};

TEST_F(HeldFloor, OrderedWithImmediatesTheWriteCarriesTheSignal) {
  auto f = make(transport::kRemoteCqData | transport::kOrderedDelivery);
  auto done = runOne(*f);
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 1; }));
  const transport::WorkRequest w = state_.posted[0];
  EXPECT_EQ(w.kind, OpKind::kWriteImm);
  EXPECT_EQ(w.length, 256u);
  EXPECT_EQ(w.local_offset, 64u);
  EXPECT_EQ(w.remote_offset, 128u);
  EXPECT_EQ(w.imm, (uint64_t{5} << 32) | 9u);
  state_.complete(0);
  EXPECT_EQ(done.get().signals, 1u);
  EXPECT_EQ(state_.postedCount(), 1u);
}

TEST_F(HeldFloor, OrderedWithAtomicsAFetchAddFollowsTheWriteAtOnce) {
  auto f = make(transport::kNativeAtomics | transport::kOrderedDelivery);
  auto done = runOne(*f);
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 2; }));
  EXPECT_EQ(state_.posted[0].kind, OpKind::kWrite);
  EXPECT_EQ(state_.posted[1].kind, OpKind::kFetchAdd);
  EXPECT_EQ(state_.posted[1].remote_offset, 5 * sizeof(int64_t));
  EXPECT_EQ(state_.posted[1].imm, 9u);
  state_.complete(1);
  state_.complete(0);
  done.get();
}

TEST_F(HeldFloor, UnorderedTheSignalWaitsForTheWritesCompletion) {
  auto f = make(transport::kRemoteCqData);
  auto done = runOne(*f);
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(state_.postedCount(), 1u) << "the signal went out before its write completed";
  EXPECT_EQ(state_.posted[0].kind, OpKind::kWrite);
  state_.complete(0);
  ASSERT_TRUE(waitUntil([&] { return state_.postedCount() == 2; }));
  EXPECT_EQ(state_.posted[1].kind, OpKind::kWriteImm);
  EXPECT_EQ(state_.posted[1].length, 0u);
  state_.complete(1);
  done.get();
}

TEST_F(HeldFloor, ImmediatesFromPeersAddToTheExpectedCounters) {
  auto f = make(transport::kRemoteCqData | transport::kOrderedDelivery);
  state_.remoteData((uint64_t{4} << 32) | 1u, 1);  // a peer that started first: counted toward this run
  ASSERT_TRUE(waitUntil([&] { return f->counter(4) == 1; }));
  auto done = std::async(std::launch::async, [&] {
    FloorPlan p;
    p.expect = {{1, 4, 7}};
    return f->run(p);
  });
  state_.remoteData((uint64_t{4} << 32) | 2u, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(done.wait_for(std::chrono::seconds(0)), std::future_status::timeout) << "complete at 3 of 7";
  state_.remoteData((uint64_t{4} << 32) | 4u, 1);
  EXPECT_GT(done.get().seconds, 0.0);
  EXPECT_EQ(f->counter(4), 0);
}

}  // namespace
}  // namespace uccl::ep::proxy
