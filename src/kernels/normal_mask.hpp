// Normal-mode masking under enable_shrink (issue 14, item 6): the step by which the ranks of one memory domain agree,
// in each dispatch, on who takes part, so that a rank that died or stopped joining is left out by every survivor
// alike. One step per function: the publish kernel will run them (a block's threads sharing out the ranks), and the
// CPU test runs them with host threads standing in for ranks (the platform atomics compile to host atomics there).
//
// Why an agreement, and not each rank masking on its own as low-latency mode does: a normal-mode dispatch places
// rows by the prefix matrix, so a source and a destination that disagree on whether a third rank sends rows put
// them at different offsets. Every survivor must zero the same ranks' counts before the matrix is built.
//
// The protocol, for call `epoch` (the call's sequence number, which only grows) and the mask M the ranks agreed on in
// earlier calls (masked ranks stay masked until the caller cleans the mask):
//   1. ready: the rank publishes its counts and its ready word (as without shrink), then waits for the ready words
//      of the ranks outside M until the first deadline (start + timeout / 2). Its view V is the set it saw ready,
//      itself included.
//   2. view: it publishes V in its view block (the bits, then the block's epoch word with release), and waits for the
//      view blocks of every rank outside M until the second deadline (start + timeout). Every view that arrived is
//      intersected: A = the ranks every published view holds. A rank whose view did not arrive is out of A.
//   3. A is the call's membership; M grows by everything outside A. A rank not in its own A learns that the others
//      left it out (it was late for them): its call raises instead of moving rows.
// Why two rounds: the ready round alone lets two ranks see a late third one differently (one just before its
// deadline, one just after). Publishing the views and intersecting every view makes the late rank's absence from
// any view its absence from every A: all views reach every waiter before its second deadline unless a rank fails
// between its own two rounds. That second failure in one call can still leave survivors disagreeing; the ones that
// then wait for rows not sent fail the call with a TimeoutError naming the rank, and the next call masks it
// everywhere (the mask only grows, and every survivor saw it silent).
//
// Cost without a failure: one more NVLink round per dispatch (a view store and a wait that finds every view
// published), and only with enable_shrink.
#pragma once

#include <cstdint>

#include "kernels/limits.hpp"
#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::kernels::intranode {

constexpr int kMaskWordBits = 64;
constexpr int kMaxMaskWords = (kMaxNvlRanks + kMaskWordBits - 1) / kMaskWordBits;

UCCL_EP_HOST_DEVICE inline constexpr int maskWords(int num_ranks) {
  return (num_ranks + kMaskWordBits - 1) / kMaskWordBits;
}
UCCL_EP_HOST_DEVICE inline bool maskHas(const uint64_t* bits, int rank) {
  return (bits[rank / kMaskWordBits] >> (rank % kMaskWordBits)) & 1;
}
UCCL_EP_HOST_DEVICE inline void maskSet(uint64_t* bits, int rank) {
  bits[rank / kMaskWordBits] |= uint64_t{1} << (rank % kMaskWordBits);
}

// A rank's view block, in its own memory where the peers read it: maskWords(R) words of bits, then the epoch word.
struct MaskView {
  uint64_t* bits = nullptr;
  uint64_t* epoch = nullptr;
};

// Step 2, the writer: the bits first, then the epoch with release, so a reader that acquires the epoch reads these
// bits (the view of that call, not a stale one).
UCCL_EP_HOST_DEVICE inline void publishView(const MaskView& v, const uint64_t* view, int words, uint64_t epoch) {
  using platform::Scope;
  for (int w = 0; w < words; ++w) platform::storeRelaxed<Scope::kSystem>(v.bits + w, view[w]);
  platform::storeRelease<Scope::kSystem>(v.epoch, epoch);
}

// Waits until `word` reaches `epoch`, until `deadline_ns` (platform::nowNs time). True when it did: the ready word of
// step 1 and the view epoch of step 2 alike.
UCCL_EP_HOST_DEVICE inline bool waitEpoch(const uint64_t* word, uint64_t epoch, uint64_t deadline_ns) {
  using platform::Scope;
  uint32_t spins = 0;
  while (platform::loadAcquire<Scope::kSystem>(word) < epoch) {
    if (platform::nowNs() > deadline_ns) return platform::loadAcquire<Scope::kSystem>(word) >= epoch;
    platform::spinRelax(spins);  // host threads standing in for ranks yield their core; nothing on the GPU
  }
  return true;
}

// Step 2, the reader: intersects a published view (its epoch acquired by waitEpoch) into `agreed`.
UCCL_EP_HOST_DEVICE inline void intersectView(uint64_t* agreed, const MaskView& v, int words) {
  using platform::Scope;
  for (int w = 0; w < words; ++w) agreed[w] &= platform::loadRelaxed<Scope::kSystem>(v.bits + w);
}

// Step 2, a rank whose view did not arrive by the second deadline: out of the call, whatever the views hold.
UCCL_EP_HOST_DEVICE inline void dropFromView(uint64_t* agreed, int rank) {
  agreed[rank / kMaskWordBits] &= ~(uint64_t{1} << (rank % kMaskWordBits));
}

// Step 3: the ranks below num_ranks the call leaves out (outside `agreed`) join the mask. Returns whether `rank` is
// in `agreed` (false: the others left it out; its call raises).
UCCL_EP_HOST_DEVICE inline bool applyAgreement(uint64_t* mask, const uint64_t* agreed, int num_ranks, int rank) {
  for (int r = 0; r < num_ranks; ++r) {
    if (!maskHas(agreed, r)) maskSet(mask, r);
  }
  return maskHas(agreed, rank);
}

}  // namespace uccl::ep::kernels::intranode
