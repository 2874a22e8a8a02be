// The clean barrier's protocol (kernels/ll_clean.hpp) with host threads standing in for ranks, each with its own
// clean epoch words: every rank passes every barrier without waiting for the timeout; a rank that skips a clean is
// the only one the others find absent, and its late clean finds the others' arrivals still counted; a rank that
// skipped one clean stays behind (its count lags) until it is masked.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "kernels/ll_clean.hpp"

namespace uccl::ep::kernels::ll {
namespace {

constexpr uint64_t kMs = 1000 * 1000;

// R ranks' clean epoch words: words[r][s] is source s's word at rank r.
struct Ranks {
  explicit Ranks(int r) : R(r), words(static_cast<size_t>(r) * r, 0) {}
  uint64_t* word(int at, int src) { return &words[static_cast<size_t>(at) * R + src]; }

  // Rank `rank`'s clean numbered `call` as the barrier kernel runs it: arrive at every unmasked peer, then wait for
  // every unmasked source by one deadline. Returns the sources that did not join.
  std::set<int> clean(int rank, uint64_t call, uint64_t timeout_ns, const std::set<int>& masked = {}) {
    const uint64_t deadline = platform::nowNs() + timeout_ns;
    cleanBeforeArrivals();
    for (int p = 0; p < R; ++p) {
      if (p != rank && !masked.count(p)) cleanArrive(word(p, rank));
    }
    std::set<int> absent;
    for (int s = 0; s < R; ++s) {
      if (s != rank && !masked.count(s) && !cleanWaitJoined(word(rank, s), call, deadline)) absent.insert(s);
    }
    return absent;
  }

  int R;
  std::vector<uint64_t> words;
};

// Every rank's clean `call` at once, in threads; every rank must find every other one joined.
void everyRankCleans(Ranks& ranks, uint64_t call) {
  std::vector<std::set<int>> absent(ranks.R);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks.R; ++r) threads.emplace_back([&, r] { absent[r] = ranks.clean(r, call, 10'000 * kMs); });
  for (auto& t : threads) t.join();
  for (int r = 0; r < ranks.R; ++r) EXPECT_TRUE(absent[r].empty()) << "rank " << r << ", clean " << call;
}

TEST(CleanBarrier, EveryRankPassesEveryCleanWithoutWaitingForTheTimeout) {
  constexpr int kRanks = 4, kCleans = 200;
  Ranks ranks(kRanks);
  std::atomic<int> absent{0};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937 rng(r);
      for (uint64_t call = 1; call <= kCleans; ++call) {
        if (rng() % 4 == 0) std::this_thread::yield();  // ranks arrive in every order, some a clean ahead
        absent += static_cast<int>(ranks.clean(r, call, 10'000 * kMs).size());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(absent.load(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
  for (int r = 0; r < kRanks; ++r) {
    for (int s = 0; s < kRanks; ++s) EXPECT_EQ(*ranks.word(r, s), s == r ? 0u : uint64_t{kCleans});
  }
}

TEST(CleanBarrier, ARankThatSkipsACleanIsTheOneNamedAndItsLateCleanFindsTheOthersArrivals) {
  constexpr int kRanks = 3, kLate = 2;
  Ranks ranks(kRanks);
  everyRankCleans(ranks, 1);
  // Clean 2 without rank 2: ranks 0 and 1 in threads, each finds rank 2 absent and only rank 2.
  std::set<int> absent[kRanks];
  {
    std::thread a([&] { absent[0] = ranks.clean(0, 2, 50 * kMs); });
    std::thread b([&] { absent[1] = ranks.clean(1, 2, 50 * kMs); });
    a.join();
    b.join();
  }
  EXPECT_EQ(absent[0], std::set<int>{kLate});
  EXPECT_EQ(absent[1], std::set<int>{kLate});
  // Rank 2's late clean 2: the others' arrivals were not lost; a zero timeout suffices.
  EXPECT_TRUE(ranks.clean(kLate, 2, 0).empty());
}

TEST(CleanBarrier, ARankBehindByOneCleanIsAbsentUntilMaskedAndThenNotWaitedFor) {
  Ranks ranks(2);
  everyRankCleans(ranks, 1);
  EXPECT_EQ(ranks.clean(0, 2, 10 * kMs), std::set<int>{1});  // rank 1 skipped clean 2
  // Rank 1's next clean is its second; rank 0's third: rank 0 finds it one short, a stale count.
  EXPECT_TRUE(ranks.clean(1, 2, 0).empty());
  EXPECT_EQ(ranks.clean(0, 3, 10 * kMs), std::set<int>{1});
  EXPECT_TRUE(ranks.clean(0, 4, 0, /*masked=*/{1}).empty());  // masked: not waited for, no arrival sent
  EXPECT_EQ(*ranks.word(1, 0), 3u);
}

}  // namespace
}  // namespace uccl::ep::kernels::ll
