// The normal-mode masking agreement (kernels/normal_mask.hpp) with host threads standing in for the ranks of one
// memory domain: with every rank present nobody waits for a deadline and nobody is masked; a silent rank, a rank
// late past the others' first deadline and a rank that stops between its two rounds are each masked by every
// survivor alike, the late one learns that it was left out, and a masked rank is not waited for again; and under
// random lateness of one rank per call, every rank that is a member computes the same membership.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "kernels/normal_mask.hpp"

namespace uccl::ep::kernels::intranode {
namespace {

constexpr uint64_t kMs = 1000 * 1000;

// What a rank does in one call (the test's fault model for it).
enum class Act { kJoin, kSilent, kStopAfterReady };

// R ranks' ready words and view blocks, as the ranks' nvl buffer headers would hold them.
struct Domain {
  explicit Domain(int r) : R(r), ready(r, 0), bits(size_t(r) * kMaxMaskWords, 0), view_epoch(r, 0), masks(r) {
    for (auto& m : masks) m.assign(kMaxMaskWords, 0);
  }
  MaskView view(int rank) { return MaskView{&bits[size_t(rank) * kMaxMaskWords], &view_epoch[rank]}; }

  struct Outcome {
    std::vector<uint64_t> agreed;
    bool member = false;
    double ms = 0;
  };

  // Rank `rank`'s call `epoch` as the publish kernel would run it, after `delay_ns`.
  Outcome call(int rank, uint64_t epoch, uint64_t timeout_ns, uint64_t delay_ns, Act act) {
    Outcome o;
    if (delay_ns > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(delay_ns));
    if (act == Act::kSilent) return o;
    const int W = maskWords(R);
    const uint64_t start = platform::nowNs();
    std::vector<uint64_t>& mask = masks[rank];
    platform::storeRelease<platform::Scope::kSystem>(&ready[rank], epoch);
    if (act == Act::kStopAfterReady) return o;
    std::vector<uint64_t> mine(kMaxMaskWords, 0);
    maskSet(mine.data(), rank);
    for (int s = 0; s < R; ++s) {
      if (s != rank && !maskHas(mask.data(), s) && waitEpoch(&ready[s], epoch, start + timeout_ns / 2)) {
        maskSet(mine.data(), s);
      }
    }
    publishView(view(rank), mine.data(), W, epoch);
    o.agreed = mine;
    for (int s = 0; s < R; ++s) {
      if (s == rank || maskHas(mask.data(), s)) continue;
      if (waitEpoch(view(s).epoch, epoch, start + timeout_ns)) {
        intersectView(o.agreed.data(), view(s), W);
      } else {
        dropFromView(o.agreed.data(), s);
      }
    }
    o.member = applyAgreement(mask.data(), o.agreed.data(), R, rank);
    o.ms = (platform::nowNs() - start) / 1e6;
    return o;
  }

  // Every rank's call `epoch` at once, in threads; acts[r] and delays[r] say what rank r does.
  std::vector<Outcome> callAll(uint64_t epoch, uint64_t timeout_ns, const std::vector<Act>& acts,
                               const std::vector<uint64_t>& delays) {
    std::vector<Outcome> out(R);
    std::vector<std::thread> threads;
    for (int r = 0; r < R; ++r) {
      threads.emplace_back([&, r] { out[r] = call(r, epoch, timeout_ns, delays[r], acts[r]); });
    }
    for (auto& t : threads) t.join();
    return out;
  }

  int R;
  std::vector<uint64_t> ready, bits, view_epoch;
  std::vector<std::vector<uint64_t>> masks;  // each rank's mask as it carries it from call to call
};

std::vector<int> members(const std::vector<uint64_t>& agreed, int R) {
  std::vector<int> out;
  for (int r = 0; r < R; ++r) {
    if (maskHas(agreed.data(), r)) out.push_back(r);
  }
  return out;
}

TEST(NormalMask, EveryRankPresentNobodyWaitsForADeadlineAndNobodyIsMasked) {
  constexpr int kRanks = 6;
  constexpr uint64_t kTimeout = 10'000 * kMs;  // a call that waited for a deadline would take 5 s
  Domain d(kRanks);
  for (uint64_t e = 1; e <= 50; ++e) {
    const auto out = d.callAll(e, kTimeout, std::vector<Act>(kRanks, Act::kJoin), std::vector<uint64_t>(kRanks, 0));
    for (int r = 0; r < kRanks; ++r) {
      ASSERT_TRUE(out[r].member) << "rank " << r << ", call " << e;
      ASSERT_EQ(members(out[r].agreed, kRanks).size(), size_t{kRanks}) << "rank " << r << ", call " << e;
      ASSERT_LT(out[r].ms, 2000) << "rank " << r << " waited for a deadline in call " << e;
      ASSERT_FALSE(maskHas(d.masks[r].data(), (r + 1) % kRanks));
    }
  }
}

// The ranks other than `odd` agree that it is out, and the next call neither waits for it nor takes it back.
void expectSurvivorsAgreeWithout(Domain& d, const std::vector<Domain::Outcome>& out, int odd, uint64_t timeout_ns,
                                 uint64_t next_epoch) {
  std::vector<int> want;
  for (int r = 0; r < d.R; ++r) {
    if (r != odd) want.push_back(r);
  }
  for (int r = 0; r < d.R; ++r) {
    if (r == odd) continue;
    EXPECT_TRUE(out[r].member) << "rank " << r;
    EXPECT_EQ(members(out[r].agreed, d.R), want) << "rank " << r;
    EXPECT_TRUE(maskHas(d.masks[r].data(), odd)) << "rank " << r << " did not mask rank " << odd;
  }
  std::vector<Act> acts(d.R, Act::kJoin);
  acts[odd] = Act::kSilent;
  const auto next = d.callAll(next_epoch, timeout_ns, acts, std::vector<uint64_t>(d.R, 0));
  for (int r = 0; r < d.R; ++r) {
    if (r == odd) continue;
    EXPECT_TRUE(next[r].member) << "rank " << r << ", next call";
    EXPECT_EQ(members(next[r].agreed, d.R), want) << "rank " << r << ", next call";
    EXPECT_LT(next[r].ms, timeout_ns / 4 / 1e6) << "rank " << r << " waited for masked rank " << odd;
  }
}

TEST(NormalMask, ASilentRankIsMaskedByEverySurvivorAlike) {
  constexpr int kRanks = 5;
  constexpr uint64_t kTimeout = 400 * kMs;
  Domain d(kRanks);
  std::vector<Act> acts(kRanks, Act::kJoin);
  acts[3] = Act::kSilent;
  const auto out = d.callAll(1, kTimeout, acts, std::vector<uint64_t>(kRanks, 0));
  for (int r = 0; r < kRanks; ++r) {
    if (r != 3) {
      EXPECT_GE(out[r].ms, 0.9 * kTimeout / 1e6) << "rank " << r << " gave up before its deadlines";
    }
  }
  expectSurvivorsAgreeWithout(d, out, 3, kTimeout, 2);
}

TEST(NormalMask, ARankThatStopsBetweenItsRoundsIsMaskedByEverySurvivorAlike) {
  constexpr int kRanks = 4;
  constexpr uint64_t kTimeout = 400 * kMs;
  Domain d(kRanks);
  std::vector<Act> acts(kRanks, Act::kJoin);
  acts[1] = Act::kStopAfterReady;  // the others see it ready, but its view never comes
  const auto out = d.callAll(1, kTimeout, acts, std::vector<uint64_t>(kRanks, 0));
  expectSurvivorsAgreeWithout(d, out, 1, kTimeout, 2);
}

TEST(NormalMask, ARankLatePastTheOthersFirstDeadlineIsLeftOutAndLearnsIt) {
  constexpr int kRanks = 4;
  constexpr uint64_t kTimeout = 400 * kMs;
  Domain d(kRanks);
  std::vector<uint64_t> delays(kRanks, 0);
  delays[2] = kTimeout * 7 / 10;  // after the others' first deadline (0.5), before their second (1.0)
  const auto out = d.callAll(1, kTimeout, std::vector<Act>(kRanks, Act::kJoin), delays);
  EXPECT_FALSE(out[2].member) << "the late rank did not learn that the others left it out";
  EXPECT_FALSE(maskHas(out[2].agreed.data(), 2));
  expectSurvivorsAgreeWithout(d, out, 2, kTimeout, 2);
}

// Random lateness (or silence, or a stop between rounds) of one rank per call, the masks cleaned between calls: every
// rank that is a member of its own membership computes the same one, and a rank left out is in no member's.
TEST(NormalMask, UnderRandomLatenessOfOneRankEveryMemberComputesTheSameMembership) {
  constexpr int kRanks = 5;
  constexpr uint64_t kTimeout = 250 * kMs;
  std::mt19937 gen(7);
  Domain d(kRanks);
  for (uint64_t e = 1; e <= 24; ++e) {
    for (auto& m : d.masks) m.assign(kMaxMaskWords, 0);
    std::vector<Act> acts(kRanks, Act::kJoin);
    std::vector<uint64_t> delays(kRanks, 0);
    const int odd = static_cast<int>(gen() % kRanks);
    switch (gen() % 4) {
      case 0: break;  // everyone on time
      case 1: acts[odd] = Act::kSilent; break;
      case 2: acts[odd] = Act::kStopAfterReady; break;
      default: delays[odd] = gen() % (kTimeout * 13 / 10); break;
    }
    const auto out = d.callAll(e, kTimeout, acts, delays);
    std::vector<int> agreed;
    for (int r = 0; r < kRanks; ++r) {
      if (acts[r] != Act::kJoin || !out[r].member) continue;
      const std::vector<int> m = members(out[r].agreed, kRanks);
      if (agreed.empty()) agreed = m;
      EXPECT_EQ(m, agreed) << "rank " << r << " disagrees in call " << e;
    }
    for (int r = 0; r < kRanks; ++r) {
      const bool in = std::find(agreed.begin(), agreed.end(), r) != agreed.end();
      if (acts[r] == Act::kJoin && !out[r].member) {
        EXPECT_FALSE(in) << "left-out rank " << r << ", call " << e;
      }
      if (acts[r] != Act::kJoin) {
        EXPECT_FALSE(in) << "rank " << r << " did not finish but is a member, call " << e;
      }
    }
    EXPECT_GE(agreed.size(), size_t{kRanks - 1}) << "call " << e << " lost more than the odd rank";
  }
}

}  // namespace
}  // namespace uccl::ep::kernels::intranode
