// The first failure a kernel saw, shared by every kernel file and by the runtime that turns it into an exception
// naming the peer and the step. Plain C++ too: the runtime's .cpp files (g++) include it for the layout and the
// names; recordError / errorRecorded compile there to host atomics, which is how the CPU tests exercise them.
//
// The record lives in host-mapped memory, one per Buffer, zeroed by the runtime. Publication order:
//   1. claim:   a failing thread compare-exchanges `op` from 0 to its op; only the winner goes on, so the first
//               failure is the one reported and no two writers mix their fields.
//   2. fields:  the winner writes peer, expert, detail, token and topk_col with plain stores.
//   3. commit:  the winner stores `code` last, with a release store at system scope: whoever reads `code` != 0
//               with acquire (the host, or a GPU thread polling errorRecorded) sees the fields of step 2.
// The host reads `code` with acquire and only then the rest: the fields of step 2 with plain loads (nobody
// writes them after the commit), `op` with an atomic load (threads that lost the claim may still be
// compare-exchanging it; a failed exchange writes nothing, but C++ and ThreadSanitizer count it as an access). A
// record with op != 0 and code == 0 is a claim in progress: the host treats it as no error yet.
#pragma once

#include <cstddef>
#include <cstdint>

#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::kernels {

struct ErrorRecord {
  int32_t code;      // ErrorCode; kNoError until step 3 above
  int32_t peer;      // the rank waited on or written to, -1 when not about one peer
  int32_t expert;    // global expert id, -1 when not about one expert
  int32_t op;        // Op; the claim (step 1)
  uint64_t detail;   // per code: ring id << 32 | ring status, target epoch << 8 | last value seen, a row count,
                     // the rejected top-k entry (kBadExpertId: the int64 id as written), handleDetail (kBadHandle)
  int32_t token;     // the row of topk_idx (kBadHandle: of the handle tensor) the failure is about, -1 when none
  int32_t topk_col;  // the column of that row, -1 as above
};
static_assert(sizeof(ErrorRecord) == 32 && alignof(ErrorRecord) == 8, "ErrorRecord is shared with the host");
static_assert(offsetof(ErrorRecord, code) == 0 && offsetof(ErrorRecord, peer) == 4 &&
                  offsetof(ErrorRecord, expert) == 8 && offsetof(ErrorRecord, op) == 12 &&
                  offsetof(ErrorRecord, detail) == 16 && offsetof(ErrorRecord, token) == 24 &&
                  offsetof(ErrorRecord, topk_col) == 28,
              "ErrorRecord field offsets are read by the host");

// kBadExpertId and kBadHandle are the caller's mistakes, not the buffer's: the kernels skipped the bad entry (or the
// call's rows) without reading or writing out of bounds and finished the call, so the host raises ArgumentError,
// clears the record and the Buffer stays usable. Every other code is fatal.
//   kBadHandle: an entry of a normal-mode handle (uccl.ep.Buffer.dispatch's) out of range. peer: the rank whose
//   handle it is (this rank, or a peer that rejected its own and so sent no rows to this one); detail: handleDetail;
//   token, topk_col: the entry's row and column.
enum ErrorCode : int32_t {
  kNoError = 0,
  kTimeout = 1,
  kRingError = 2,
  kSlotOverflow = 3,
  kBadExpertId = 4,
  kBadHandle = 5,
  kBadRecord = 6,  // a record that came over the network names a row outside its source's rows (peer: the source,
                   // expert: the rank of the node it names, detail: the position)
};

// The handle field of a kBadHandle record (the handle's tuple position is the Python layer's, see
// kernel_error_text.cpp). kHandleOfPeer: the peer named by the record rejected an entry of its own handle.
enum HandleField : uint32_t {
  kHandleRankPrefixMatrix = 1,
  kHandleSendPos = 2,
  kHandleOfPeer = 3,
  kHandleForwardMap = 4,  // across nodes: handle[6], the forward map [F, P + 1]
};
// kBadHandle's detail: the field in the high half, the entry as the caller wrote it (int32) in the low half.
UCCL_EP_HOST_DEVICE constexpr uint64_t handleDetail(uint32_t field, int32_t value) {
  return (static_cast<uint64_t>(field) << 32) | static_cast<uint32_t>(value);
}

// The step that failed. 1..4 and 13: low-latency kernels; 5..10, 12, 14 and 15: normal-mode kernels (11 is retired).
enum Op : int32_t {
  kOpDispatchSend = 1,
  kOpDispatchRecv = 2,
  kOpCombineSend = 3,
  kOpCombineRecv = 4,
  kOpReuse = 5,          // waiting for every reader to be done with this rank's nvl buffer
  kOpReady = 6,          // waiting for every source to publish its data
  kOpWorstOverflow = 7,  // more rows received than num_worst_tokens
  kOpNvlOverflow = 8,    // the rows a rank receives do not fit its nvl buffer (peer: that rank, detail: bytes needed)
  kOpArrive = 9,         // waiting for every source to push its rows into this rank's nvl buffer
  kOpChunk = 10,         // waiting for one chunk of rows a source pushes (pipelined path; detail: the chunk)
  kOpLayout = 12,        // get_dispatch_layout (kBadExpertId: an entry of topk_idx out of range)
  kOpClean = 13,         // clean_low_latency_buffer's barrier (kTimeout: peer = the lowest rank that did not join,
                         // detail = the clean's call number << 32 | how many ranks did not join; the launch's
                         // CleanArgs::absent names them all)
  kOpCachedDispatch = 14,  // dispatch with a handle (kBadHandle)
  kOpCombine = 15,         // combine (kBadHandle)
  // Internode dispatch (kernels/internode.hpp). peer: the rank waited for or written to.
  kOpRdmaCounts = 16,  // the counts exchange (kTimeout: that rank's row did not arrive; detail: the call number)
  kOpRdmaRoom = 17,    // a sender waiting for room in its stream at the peer (detail: the channel)
  kOpRdmaRows = 18,    // a forwarder waiting for the records of the source's stream (detail: the channel)
  // Internode combine.
  kOpRdmaPartialRoom = 19,  // a peer waiting for room to send partial sums to their source (detail: the channel)
  kOpRdmaPartials = 20,     // a source waiting for the partial sums of its peer on a node (detail: the channel)
  kOpRdmaEntered = 21,      // kTimeout: the rank never began this combine (its entered word is behind); detail:
                            // the peer whose partial sums the waiting rank expected, which waits for that rank
};

// Records a failure unless one is already recorded (first wins). Returns at once: the caller stops its own work
// and lets the other threads notice through errorRecorded.
UCCL_EP_HOST_DEVICE inline void recordError(ErrorRecord* rec, int32_t code, int32_t op, int32_t peer, int32_t expert,
                                            uint64_t detail, int32_t token = -1, int32_t topk_col = -1) {
  using platform::Scope;
  // System scope: the host zeroes the record between calls, and threads of any kernel of this GPU may race.
  if (platform::compareExchangeRelaxed<Scope::kSystem>(&rec->op, int32_t{0}, op) != 0) return;
  rec->peer = peer;
  rec->expert = expert;
  rec->detail = detail;
  rec->token = token;
  rec->topk_col = topk_col;
  platform::storeRelease<Scope::kSystem>(&rec->code, code);
}

// Whether any thread has committed a failure. Relaxed: a poll that only decides to stop waiting; it reads no
// field behind the code. System scope: the host writes the record too (it zeroes it).
UCCL_EP_HOST_DEVICE inline bool errorRecorded(const ErrorRecord* rec) {
  return platform::loadRelaxed<platform::Scope::kSystem>(&rec->code) != kNoError;
}

}  // namespace uccl::ep::kernels
