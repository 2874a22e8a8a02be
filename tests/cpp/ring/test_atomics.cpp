// The platform atomics in their host form (the __atomic builtins the ring's host producers and the CPU side of
// every GPU/CPU contract use). Races run under ThreadSanitizer with the ring label; a missing or too weak order
// shows up there as a report, here as a lost update or a torn publication.
#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "uccl_ep/platform/atomics.hpp"

namespace uccl::ep::platform {
namespace {

constexpr int kThreads = 4;
constexpr int kPerThread = 20000;

template <typename F>
void runThreads(int n, F&& body) {
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) threads.emplace_back(body, t);
  for (auto& th : threads) th.join();
}

TEST(Atomics, ThirtyTwoBitLoadsReturnWhatStoresWrote) {
  int32_t s = 0;
  uint32_t u = 0;
  storeRelaxed(&s, int32_t{-7});
  storeRelease<Scope::kDevice>(&u, 0xfffffffeu);
  EXPECT_EQ(loadRelaxed(&s), -7);
  EXPECT_EQ(loadAcquire<Scope::kDevice>(&u), 0xfffffffeu);
  storeRelease(&s, int32_t{42});
  EXPECT_EQ(loadAcquire(&s), 42);
}

TEST(Atomics, SixtyFourBitRelaxedStoreIsSeenByLoads) {
  uint64_t w = 0;
  storeRelaxed(&w, uint64_t{1} << 40);
  EXPECT_EQ(loadRelaxed(&w), uint64_t{1} << 40);
  EXPECT_EQ(loadAcquire(&w), uint64_t{1} << 40);
}

TEST(Atomics, ThirtyTwoBitFetchAddLosesNoUpdateAndWrapsSigned) {
  int32_t counter = 0;
  runThreads(kThreads, [&](int) {
    for (int i = 0; i < kPerThread; ++i) fetchAddRelaxed(&counter, int32_t{1});
  });
  EXPECT_EQ(loadRelaxed(&counter), kThreads * kPerThread);
  EXPECT_EQ(fetchAddRelaxed(&counter, int32_t{-kThreads * kPerThread - 1}), kThreads * kPerThread);
  EXPECT_EQ(loadRelaxed(&counter), -1);
  uint32_t u = 0xffffffffu;
  EXPECT_EQ(fetchAddRelaxed<Scope::kSystem>(&u, 1u), 0xffffffffu);
  EXPECT_EQ(loadRelaxed(&u), 0u);
}

TEST(Atomics, CompareExchangeReturnsTheOldValueAndWritesOnlyOnMatch) {
  int32_t w32 = 5;
  EXPECT_EQ(compareExchangeRelaxed(&w32, int32_t{4}, int32_t{9}), 5);  // no match: unchanged
  EXPECT_EQ(loadRelaxed(&w32), 5);
  EXPECT_EQ(compareExchangeRelaxed(&w32, int32_t{5}, int32_t{9}), 5);  // match: written
  EXPECT_EQ(loadRelaxed(&w32), 9);

  uint64_t w64 = uint64_t{1} << 33;
  EXPECT_EQ(compareExchangeRelaxed<Scope::kSystem>(&w64, uint64_t{1}, uint64_t{2}), uint64_t{1} << 33);
  EXPECT_EQ(loadRelaxed(&w64), uint64_t{1} << 33);
  EXPECT_EQ(compareExchangeRelaxed<Scope::kSystem>(&w64, uint64_t{1} << 33, uint64_t{2}), uint64_t{1} << 33);
  EXPECT_EQ(loadRelaxed(&w64), 2u);
}

// Many threads claim one word from 0: exactly one sees 0 come back, as recordError's first-wins claim needs.
TEST(Atomics, CompareExchangeFromZeroHasExactlyOneWinner) {
  for (int round = 0; round < 200; ++round) {
    int32_t claim = 0;
    int32_t winners = 0;
    runThreads(kThreads, [&](int t) {
      if (compareExchangeRelaxed(&claim, int32_t{0}, int32_t{t + 1}) == 0) fetchAddRelaxed(&winners, int32_t{1});
    });
    ASSERT_EQ(winners, 1) << "round " << round;
    ASSERT_NE(claim, 0);
  }
}

// CAS as a lock-free increment: every thread retries with the value it found, so no increment is lost.
TEST(Atomics, SixtyFourBitCompareExchangeLoopLosesNoUpdate) {
  uint64_t w = 0;
  runThreads(kThreads, [&](int) {
    for (int i = 0; i < kPerThread; ++i) {
      uint64_t cur = loadRelaxed(&w);
      for (uint64_t seen; (seen = compareExchangeRelaxed(&w, cur, cur + 1)) != cur;) cur = seen;
    }
  });
  EXPECT_EQ(loadRelaxed(&w), uint64_t{kThreads} * kPerThread);
}

// Message passing through a 32-bit flag: plain payload writes, a release store of the flag, an acquire poll.
// The reader must never see the flag without the payload (ThreadSanitizer checks the pairing too).
TEST(Atomics, ThirtyTwoBitReleaseAcquirePublishesEarlierWrites) {
  for (int round = 0; round < 200; ++round) {
    uint64_t payload[4] = {0, 0, 0, 0};
    int32_t flag = 0;
    std::thread writer([&] {
      for (int i = 0; i < 4; ++i) payload[i] = uint64_t(round) * 10 + i + 1;
      storeRelease(&flag, int32_t{1});
    });
    while (loadAcquire(&flag) == 0) std::this_thread::yield();
    for (int i = 0; i < 4; ++i) ASSERT_EQ(payload[i], uint64_t(round) * 10 + i + 1) << "round " << round;
    writer.join();
  }
}

}  // namespace
}  // namespace uccl::ep::platform
