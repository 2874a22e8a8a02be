// The words of a kernel's error record (runtime/kernel_error_text.hpp), from hand-made records: which exception each
// code becomes, and that each message names the step, the rank and what went wrong.
#include <gtest/gtest.h>

#include <string>

#include "message_of.hpp"
#include "runtime/kernel_error_text.hpp"

namespace uccl::ep::runtime {
namespace {

namespace k = kernels;

KernelErrorSite site(int rank = 3) {
  KernelErrorSite s;
  s.rank = rank;
  s.num_ranks = 8;
  s.timeout_secs = 100;
  s.num_nvl_bytes = 1 << 20;
  s.path_to = [](int peer) {
    return peer < 4 ? std::string(" over NVLink") : std::string(" through the proxies (shm)");
  };
  return s;
}

k::ErrorRecord recorded(int32_t code, int32_t op, int32_t peer, int32_t expert, uint64_t detail, int32_t token = -1,
                        int32_t topk_col = -1) {
  k::ErrorRecord rec{};
  k::recordError(&rec, code, op, peer, expert, detail, token, topk_col);
  return rec;
}

TEST(KernelErrorText, ABadExpertIdIsTheCallersArgumentNamingTheIdTheEntryAndTheRank) {
  const KernelErrorText t =
      describeKernelError(recorded(k::kBadExpertId, k::kOpDispatchSend, -1, -1, 291, /*token=*/5, /*col=*/2), site());
  EXPECT_EQ(t.kind, KernelErrorKind::kArgument);
  EXPECT_TRUE(mentions(t.message, {"low-latency dispatch (send)", "on rank 3:", "topk_idx[5][2]", "expert id 291;",
                                   "[0, num_experts)", "skipped"}));
  EXPECT_EQ(t.message.find("unusable"), std::string::npos);
}

TEST(KernelErrorText, ANegativeOrHugeBadIdIsPrintedAsTheInt64TheCallerWrote) {
  const KernelErrorText neg = describeKernelError(
      recorded(k::kBadExpertId, k::kOpCombineSend, -1, -1, static_cast<uint64_t>(int64_t{-7}), 0, 0), site(1));
  EXPECT_TRUE(mentions(neg.message, {"low-latency combine (send)", "on rank 1:", "topk_idx[0][0]", "expert id -7;"}));
  const KernelErrorText huge =
      describeKernelError(recorded(k::kBadExpertId, k::kOpDispatchSend, -1, -1, uint64_t{1} << 40, 127, 7), site());
  EXPECT_TRUE(mentions(huge.message, {"topk_idx[127][7]", "expert id 1099511627776;"}));
}

TEST(KernelErrorText, ABadRankPrefixEntryIsTheCallersArgumentNamingTheFieldTheEntryTheValueAndTheRank) {
  const KernelErrorText t = describeKernelError(
      recorded(k::kBadHandle, k::kOpCombine, 3, -1, k::handleDetail(k::kHandleRankPrefixMatrix, 5000), 7, 3), site());
  EXPECT_EQ(t.kind, KernelErrorKind::kArgument);
  EXPECT_TRUE(mentions(t.message, {"combine on rank 3:", "handle[0] (rank_prefix_matrix)[7][3] holds 5000,",
                                   "non-decreasing", "moved no rows"}));
  EXPECT_EQ(t.message.find("unusable"), std::string::npos);
  const KernelErrorText cached = describeKernelError(
      recorded(k::kBadHandle, k::kOpCachedDispatch, 3, -1, k::handleDetail(k::kHandleRankPrefixMatrix, -2), 0, 1),
      site());
  EXPECT_EQ(cached.kind, KernelErrorKind::kArgument);
  EXPECT_TRUE(mentions(cached.message, {"dispatch (handle given) on rank 3:", "rank_prefix_matrix)[0][1] holds -2,",
                                        "is_token_in_rank"}));
}

TEST(KernelErrorText, ABadSendPosEntryNamesTheTokenTheRankAndTheValue) {
  const KernelErrorText t = describeKernelError(
      recorded(k::kBadHandle, k::kOpCombine, 1, -1, k::handleDetail(k::kHandleSendPos, -5), 42, 0), site(1));
  EXPECT_EQ(t.kind, KernelErrorKind::kArgument);
  EXPECT_TRUE(mentions(t.message, {"combine on rank 1:", "handle[1] (send_pos)[42][0] holds -5;", "expected -1",
                                   "combined_x row 42"}));
  const KernelErrorText huge = describeKernelError(
      recorded(k::kBadHandle, k::kOpCombine, 1, -1, k::handleDetail(k::kHandleSendPos, 2147483647), 0, 2), site(1));
  EXPECT_TRUE(mentions(huge.message, {"(send_pos)[0][2] holds 2147483647;"}));
}

// Across nodes: an entry of the forward map (handle[6]) past the rows its rank received is named as that field.
TEST(KernelErrorText, ABadForwardMapEntryNamesTheRecordTheLocalRankAndTheValue) {
  const KernelErrorText t = describeKernelError(
      recorded(k::kBadHandle, k::kOpCombine, 1, -1, k::handleDetail(k::kHandleForwardMap, 900), 17, 1), site(1));
  EXPECT_EQ(t.kind, KernelErrorKind::kArgument);
  EXPECT_TRUE(mentions(t.message, {"combine on rank 1:", "handle[6] (forward map)[17][1] holds 900;",
                                   "skipped local rank 1", "lacks that rank's row"}));
}

TEST(KernelErrorText, APeerThatRejectedItsHandleIsNamedAsTheCauseOfAnArgumentError) {
  const KernelErrorText t = describeKernelError(
      recorded(k::kBadHandle, k::kOpCombine, 5, -1, k::handleDetail(k::kHandleOfPeer, 0)), site(2));
  EXPECT_EQ(t.kind, KernelErrorKind::kArgument);
  EXPECT_TRUE(mentions(t.message, {"combine on rank 2:", "rank 5 rejected an entry of its handle", "not valid"}));
}

TEST(KernelErrorText, StallsAreTimeoutsNamingThePeerAndThePath) {
  const KernelErrorText t = describeKernelError(recorded(k::kTimeout, k::kOpDispatchRecv, 5, 40, 0), site());
  EXPECT_EQ(t.kind, KernelErrorKind::kTimeout);
  EXPECT_TRUE(mentions(t.message, {"low-latency dispatch (receive) on rank 3", "rank 5 did not deliver", "(expert 40)",
                                   "through the proxies (shm)", "UCCL_EP_TIMEOUT_SECS=100s"}));
}

TEST(KernelErrorText, AMissingChunkOfTheNormalPipelineNamesThePeerAndTheChunk) {
  const KernelErrorText t = describeKernelError(recorded(k::kTimeout, k::kOpChunk, 1, -1, 17), site());
  EXPECT_EQ(t.kind, KernelErrorKind::kTimeout);
  EXPECT_TRUE(mentions(t.message, {"waiting for a chunk", "on rank 3:", "rank 1 did not push chunk 17",
                                   "UCCL_EP_TIMEOUT_SECS=100s"}));
}

TEST(KernelErrorText, ARankMissingTheCleanBarrierIsATimeoutNamingItAndTheCallNumber) {
  const KernelErrorText one = describeKernelError(recorded(k::kTimeout, k::kOpClean, 5, -1, (uint64_t{3} << 32) | 1u),
                                                  site());
  EXPECT_EQ(one.kind, KernelErrorKind::kTimeout);
  EXPECT_TRUE(mentions(one.message, {"clean_low_latency_buffer on rank 3:", "rank 5 through the proxies (shm) did",
                                     "clean call 3 ", "UCCL_EP_TIMEOUT_SECS=100s", "enable_shrink=True"}));
  EXPECT_EQ(one.message.find("in all"), std::string::npos);
  const k::ErrorRecord three = recorded(k::kTimeout, k::kOpClean, 1, -1, (uint64_t{1} << 32) | 3u);
  EXPECT_TRUE(mentions(describeKernelError(three, site(0)).message,
                       {"on rank 0:", "rank 1 over NVLink (and 2 more ranks) did not join", "clean call 1 "}));
  KernelErrorSite named = site(0);
  named.clean_absent = {1, 4, 6};  // what the runtime reads back from the barrier's absent flags
  const KernelErrorText all = describeKernelError(three, named);
  EXPECT_EQ(all.kind, KernelErrorKind::kTimeout);
  EXPECT_TRUE(mentions(all.message, {"on rank 0: ranks 1, 4, 6 did not join this barrier (clean call 1 "}));
}

TEST(KernelErrorText, ARingFailureIsFatalUnlessItTimedOut) {
  const uint64_t consumer_error = (uint64_t{2} << 32) | 2u;  // ring 2, ring::Status::kConsumerError
  const KernelErrorText t =
      describeKernelError(recorded(k::kRingError, k::kOpCombineSend, 6, 9, consumer_error), site());
  EXPECT_EQ(t.kind, KernelErrorKind::kFatal);
  EXPECT_TRUE(mentions(t.message, {"descriptor ring 2", "carrying rows for rank 6 (expert 9)", "proxy consuming"}));
  const uint64_t timed_out = (uint64_t{2} << 32) | 1u;  // ring::Status::kTimeout
  EXPECT_EQ(describeKernelError(recorded(k::kRingError, k::kOpCombineSend, 6, 9, timed_out), site()).kind,
            KernelErrorKind::kTimeout);
}

TEST(KernelErrorText, NormalModeOverflowsAreFatalAndSayWhatToResize) {
  const KernelErrorText t = describeKernelError(recorded(k::kSlotOverflow, k::kOpNvlOverflow, 2, -1, 4096), site());
  EXPECT_EQ(t.kind, KernelErrorKind::kFatal);
  EXPECT_TRUE(mentions(t.message, {"rank 2 receives need 4096 bytes", "num_nvl_bytes is 1048576"}));
}

// Normal mode across nodes: each wait names the rank waited for, the path to it and what it did not do; a record
// from the wire that is out of range is a failure naming its source.
TEST(KernelErrorText, InternodeWaitsNameTheRankThePathAndWhatItDidNotDo) {
  const KernelErrorText counts = describeKernelError(recorded(k::kTimeout, k::kOpRdmaCounts, 5, -1, 2), site());
  EXPECT_EQ(counts.kind, KernelErrorKind::kTimeout);
  EXPECT_TRUE(mentions(counts.message, {"the counts exchange", "on rank 3:", "the counts of rank 5 through the "
                                        "proxies (shm) (call 2)", "UCCL_EP_TIMEOUT_SECS=100s"}));
  const KernelErrorText room = describeKernelError(recorded(k::kTimeout, k::kOpRdmaRoom, 6, -1, 4), site());
  EXPECT_TRUE(mentions(room.message, {"sending records to another node", "rank 6 through the proxies (shm)",
                                      "channel 4", "no room"}));
  const KernelErrorText rows = describeKernelError(recorded(k::kTimeout, k::kOpRdmaRows, 7, -1, 1), site());
  EXPECT_TRUE(mentions(rows.message, {"forwarding another node's records", "rank 7 through the proxies (shm)",
                                      "did not send the records of channel 1"}));
}

// Combine across nodes: a source waiting for partial sums names a rank of that node that never began the combine
// (the peer that sums for it waits for that rank), else the peer.
TEST(KernelErrorText, InternodeCombineNamesTheRankThatNeverBeganItNotTheBystander) {
  const KernelErrorText absent = describeKernelError(recorded(k::kTimeout, k::kOpRdmaEntered, 7, -1, 6), site());
  EXPECT_EQ(absent.kind, KernelErrorKind::kTimeout);
  EXPECT_TRUE(mentions(absent.message, {"receiving another node's partial sums", "on rank 3:",
                                        "rank 7 through the proxies (shm) did not begin this combine",
                                        "so rank 6, which sums"}));
  const KernelErrorText own_peer = describeKernelError(recorded(k::kTimeout, k::kOpRdmaEntered, 7, -1, 7), site());
  EXPECT_TRUE(mentions(own_peer.message, {"rank 7 through the proxies (shm) did not begin this combine"}));
  EXPECT_EQ(own_peer.message.find("which sums"), std::string::npos) << "the absent rank is the peer itself";
  const KernelErrorText partials = describeKernelError(recorded(k::kTimeout, k::kOpRdmaPartials, 6, -1, 2), site());
  EXPECT_TRUE(mentions(partials.message, {"rank 6 through the proxies (shm) did not send the partial sums of "
                                          "channel 2", "every rank of its node began this combine"}));
  const KernelErrorText room = describeKernelError(recorded(k::kTimeout, k::kOpRdmaPartialRoom, 5, -1, 1), site());
  EXPECT_TRUE(mentions(room.message, {"sending partial sums to another node", "rank 5 through the proxies (shm) "
                                      "did not take the partial sums of channel 1", "no room"}));
}

TEST(KernelErrorText, AnOutOfRangeRecordFromTheWireIsAFailureNamingItsSource) {
  const KernelErrorText pos = describeKernelError(recorded(k::kBadRecord, k::kOpRdmaRows, 6, 1, 123456), site());
  EXPECT_EQ(pos.kind, KernelErrorKind::kFatal);
  EXPECT_TRUE(mentions(pos.message, {"a record from rank 6 through the proxies (shm)", "position 123456",
                                     "local index 1", "forged"}));
  const KernelErrorText cnt = describeKernelError(
      recorded(k::kBadRecord, k::kOpRdmaCounts, 5, 2, static_cast<uint32_t>(int32_t{-9})), site());
  EXPECT_EQ(cnt.kind, KernelErrorKind::kFatal);
  EXPECT_TRUE(mentions(cnt.message, {"the counts row from rank 5", "-9 tokens to rank 2", "counted as 0"}));
  const KernelErrorText tok = describeKernelError(
      recorded(k::kBadRecord, k::kOpRdmaPartials, 6, -1, static_cast<uint32_t>(int32_t{-3})), site());
  EXPECT_EQ(tok.kind, KernelErrorKind::kFatal);
  EXPECT_TRUE(mentions(tok.message, {"a partial sum from rank 6 through the proxies (shm)", "names token -3",
                                     "dropped"}));
}

}  // namespace
}  // namespace uccl::ep::runtime
