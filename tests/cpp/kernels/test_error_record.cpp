// The kernel error record through its host form: the same recordError / errorRecorded the kernels run, over the
// platform atomics' host branch. Threads stand in for GPU threads failing at once.
#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "kernels/error_record.hpp"

namespace uccl::ep::kernels {
namespace {

TEST(ErrorRecord, AFreshRecordHoldsNoError) {
  ErrorRecord rec{};
  EXPECT_FALSE(errorRecorded(&rec));
  EXPECT_EQ(rec.code, kNoError);
}

TEST(ErrorRecord, TheFirstFailureWinsAndLaterOnesChangeNothing) {
  ErrorRecord rec{};
  recordError(&rec, kTimeout, kOpReady, 3, -1, 0x1234);
  recordError(&rec, kRingError, kOpDispatchSend, 7, 42, 99);
  ASSERT_TRUE(errorRecorded(&rec));
  EXPECT_EQ(rec.code, kTimeout);
  EXPECT_EQ(rec.op, kOpReady);
  EXPECT_EQ(rec.peer, 3);
  EXPECT_EQ(rec.expert, -1);
  EXPECT_EQ(rec.detail, 0x1234u);
}

TEST(ErrorRecord, ARejectedTopkEntryCarriesItsTokenColumnAndTheIdAsWritten) {
  ErrorRecord rec{};
  recordError(&rec, kBadExpertId, kOpDispatchSend, -1, -1, static_cast<uint64_t>(int64_t{-5}), /*token=*/17,
              /*topk_col=*/3);
  ASSERT_TRUE(errorRecorded(&rec));
  EXPECT_EQ(rec.code, kBadExpertId);
  EXPECT_EQ(static_cast<int64_t>(rec.detail), -5);
  EXPECT_EQ(rec.token, 17);
  EXPECT_EQ(rec.topk_col, 3);
}

TEST(ErrorRecord, OtherFailuresNameNoToken) {
  ErrorRecord rec{};
  recordError(&rec, kTimeout, kOpDispatchRecv, 2, 40, 0);
  EXPECT_EQ(rec.token, -1);
  EXPECT_EQ(rec.topk_col, -1);
}

// Racing failures: the host, polling code with acquire as the runtime does, sees one failure's fields whole,
// never a mix of two.
TEST(ErrorRecord, RacingFailuresPublishOneWholeRecord) {
  constexpr int kThreads = 4;
  for (int round = 0; round < 200; ++round) {
    ErrorRecord rec{};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&rec, t] {
        recordError(&rec, kTimeout + t % 3, kOpDispatchSend + t, /*peer=*/100 + t, /*expert=*/200 + t,
                    /*detail=*/300 + t);
      });
    }
    int32_t code;
    while ((code = __atomic_load_n(&rec.code, __ATOMIC_ACQUIRE)) == kNoError) std::this_thread::yield();
    // op is read atomically: threads that lost the claim may still be compare-exchanging it.
    const int t = __atomic_load_n(&rec.op, __ATOMIC_RELAXED) - kOpDispatchSend;
    ASSERT_GE(t, 0);
    ASSERT_LT(t, kThreads);
    EXPECT_EQ(code, kTimeout + t % 3) << "round " << round;
    EXPECT_EQ(rec.peer, 100 + t);
    EXPECT_EQ(rec.expert, 200 + t);
    EXPECT_EQ(rec.detail, uint64_t(300 + t));
    for (auto& th : threads) th.join();
  }
}

}  // namespace
}  // namespace uccl::ep::kernels
