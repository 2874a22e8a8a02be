// The clean barrier's protocol on the clean epoch words (ll_layout.hpp), one step per function: the barrier kernel
// (ll_clean.cu) runs it, and the CPU test runs it with host threads standing in for ranks (the platform atomics
// compile to host atomics there).
//
// Ordering: a rank's arrival is a relaxed system-scope add, after a release fence that orders the rank's zeroed call
// words before it; a waiter reads the word with acquire, so once it sees the arrival it sees the zeroed words too and
// its next call's adds land on zero.
#pragma once

#include <cstdint>

#include "kernels/ll_layout.hpp"
#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/platform/platform.hpp"

namespace uccl::ep::kernels::ll {

// Orders this rank's earlier writes before its arrivals, for every observer. Once per barrier, before cleanArrive.
UCCL_EP_HOST_DEVICE inline void cleanBeforeArrivals() { platform::fenceAcqRel<platform::Scope::kSystem>(); }

// This rank's arrival at one peer: one add to the peer's clean epoch word for this rank.
UCCL_EP_HOST_DEVICE inline void cleanArrive(uint64_t* peer_word) {
  platform::addRelaxed<platform::Scope::kSystem>(peer_word, 1);
}

// Waits until a source's clean epoch word here reaches `call` (cleanJoined), until `deadline_ns` (platform::nowNs
// time; one deadline serves every source a thread waits for). True when the source joined.
UCCL_EP_HOST_DEVICE inline bool cleanWaitJoined(const uint64_t* word, uint64_t call, uint64_t deadline_ns) {
  using platform::Scope;
  while (!cleanJoined(platform::loadAcquire<Scope::kSystem>(word), call)) {
    if (platform::nowNs() > deadline_ns) return cleanJoined(platform::loadAcquire<Scope::kSystem>(word), call);
  }
  return true;
}

}  // namespace uccl::ep::kernels::ll
