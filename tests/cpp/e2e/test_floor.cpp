// The transport floor across processes: floor_worker ranks post the low-latency dispatch and combine plans over real
// libfabric providers (tcp;ofi_rxm, shm), both signal paths, one rank per emulated node and two; every byte that
// lands and every counter is checked by the workers, and a stopped peer is named within the timeout.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "launcher.hpp"

namespace uccl::ep::e2e {
namespace {

struct FloorJob {
  std::string transport = "tcp", signal = "auto", fault = "none";
  int world = 2, ranks_per_node = 1, experts = 8;
  double timeout_secs = 30;
};

std::vector<Launch> floorLaunches(const FloorJob& j) {
  const int port = freeTcpPort();
  std::vector<Launch> out;
  for (int r = 0; r < j.world; ++r) {
    Launch l;
    l.argv = {UCCL_EP_FLOOR_WORKER,
              "--rank",
              std::to_string(r),
              "--world",
              std::to_string(j.world),
              "--port",
              std::to_string(port),
              "--token",
              "floor-" + std::to_string(port),
              "--transport",
              j.transport,
              "--signal",
              j.signal,
              "--ranks-per-node",
              std::to_string(j.ranks_per_node),
              "--experts",
              std::to_string(j.experts),
              "--fault",
              j.fault};
    l.env = {"UCCL_EP_TIMEOUT_SECS=" + std::to_string(j.timeout_secs), "UCCL_LOG_LEVEL=warn"};
    out.push_back(l);
  }
  return out;
}

using Params = std::tuple<std::string, std::string, int, int>;  // transport, signal path, world, ranks per node
class Floor : public ::testing::TestWithParam<Params> {};

TEST_P(Floor, EveryWriteLandsAndEverySignalIsCounted) {
  FloorJob j;
  std::tie(j.transport, j.signal, j.world, j.ranks_per_node) = GetParam();
  const auto outs = runAll(floorLaunches(j), 120);
  for (size_t r = 0; r < outs.size(); ++r) {
    EXPECT_EQ(outs[r].exit_code, 0) << "rank " << r << " output:\n" << outs[r].output;
    EXPECT_NE(outs[r].output.find("ok:"), std::string::npos) << "rank " << r << ":\n" << outs[r].output;
    EXPECT_NE(outs[r].output.find("fabric/" + std::string(j.transport == "tcp" ? "tcp" : "shm")), std::string::npos)
        << outs[r].output;
    for (const char* call : {" dispatch: ", " combine: "}) {
      EXPECT_NE(outs[r].output.find(call), std::string::npos) << "rank " << r << " printed no " << call << "figure";
    }
  }
  if (j.signal != "auto") {
    const std::string want = j.signal == "atomic" ? "signals atomic" : "signals immediate";
    EXPECT_NE(outs[0].output.find(want), std::string::npos) << outs[0].output;
  }
}

INSTANTIATE_TEST_SUITE_P(Providers, Floor,
                         ::testing::Values(Params{"tcp", "imm", 2, 1}, Params{"tcp", "atomic", 2, 1},
                                           Params{"shm", "imm", 2, 1}, Params{"shm", "atomic", 2, 1},
                                           Params{"tcp", "auto", 4, 2}, Params{"shm", "auto", 4, 2}),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::get<1>(info.param) + "_" +
                                  std::to_string(std::get<2>(info.param)) + "ranks_" +
                                  std::to_string(std::get<3>(info.param)) + "pernode";
                         });

// The last rank starts every run 300 ms after the barrier (--fault late). The plans start together through the
// transport, so no rank's floor holds that lateness: without it the others' floors would read over 300 ms (they wait
// for its signals) and its own near 0 (theirs landed before it started).
TEST(FloorStart, ALateRankNeitherShortensItsOwnFloorNorLengthensItsPeers) {
  FloorJob j;
  j.transport = "shm";
  j.world = 3;
  j.experts = 6;
  j.fault = "late";
  const auto outs = runAll(floorLaunches(j), 120);
  for (size_t r = 0; r < outs.size(); ++r) {
    ASSERT_EQ(outs[r].exit_code, 0) << "rank " << r << ":\n" << outs[r].output;
    for (const char* call : {" dispatch: ", " combine: "}) {
      const size_t at = outs[r].output.find(call);
      ASSERT_NE(at, std::string::npos) << "rank " << r << ":\n" << outs[r].output;
      const size_t m = outs[r].output.find("median ", at);
      ASSERT_NE(m, std::string::npos) << outs[r].output;
      const double us = std::stod(outs[r].output.substr(m + 7));
      EXPECT_LT(us, 150e3) << "rank " << r << call << "the late start shows in the floor:\n" << outs[r].output;
      EXPECT_GT(us, 0.0) << "rank " << r << call;
    }
  }
}

// Ranks 0 and 1 of 3 give up within the timeout, naming rank 2, which stopped after the barrier before its run.
TEST(FloorFaults, StoppedPeerIsNamedWithinTheTimeout) {
  for (const std::string transport : {"tcp", "shm"}) {
    FloorJob j;
    j.transport = transport;
    j.world = 3;
    j.experts = 6;
    j.fault = "stop";
    j.timeout_secs = kFaultTimeoutSecs;
    const auto outs = runAll(floorLaunches(j), 60);
    sweepDeadRanksShm();  // the frozen rank's watchdog killed it: its regions stay behind
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(outs[r].exit_code, 2) << transport << " rank " << r << ":\n" << outs[r].output;
      EXPECT_LT(outs[r].seconds, 3 * j.timeout_secs + 20) << transport << " rank " << r << " did not give up in time";
      EXPECT_NE(outs[r].output.find("from rank 2 is 0 of"), std::string::npos)
          << transport << " rank " << r << " did not name rank 2:\n"
          << outs[r].output;
    }
  }
}

}  // namespace
}  // namespace uccl::ep::e2e
