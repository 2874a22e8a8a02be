// The descriptor ring: many producers (one lane per warp on a GPU, or host threads), one consumer (a proxy
// thread). Shared by GPU and CPU code; the producer half compiles for host threads too.
//
// Memory:
//   slots[capacity]   pinned host memory, mapped into the GPU. Written by producers, read by the consumer.
//   RingControl       pinned host memory. Written by the consumer (tail, completed, error), read by producers.
//   ProducerState     GPU memory (host memory for host producers). Touched only by producers.
//
// Ordering invariants:
//   1. A producer claims position p with a relaxed fetch-add on ProducerState::head; positions are unique.
//   2. It writes slot p only once p - tail < capacity, reading tail with acquire: the consumer's read of the
//      slot's previous lap happens before it released that tail, so the overwrite cannot race the read.
//      A producer-side cached copy of tail (only grows) spares the PCIe read while the ring has room.
//   3. The slot is committed by one 128-bit release store carrying lap parity (descriptor.hpp). Everything
//      the producer wrote before (e.g. the payload the descriptor points at) is visible once the slot is.
//   4. The consumer takes positions strictly in order and retires them in order: completed = n means
//      positions [0, n) are done, so a position doubles as a completion ticket (waitCompleted).
//   5. Once the consumer records an error it sets RingControl::error; every producer wait then gives up.
#pragma once

#include <cstddef>
#include <cstdint>

#include "uccl_ep/platform/atomics.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/platform/platform.hpp"
#include "uccl_ep/ring/descriptor.hpp"

namespace uccl::ep::ring {

inline constexpr uint32_t kRingMagic = 0x55524e47;  // "URNG"
inline constexpr uint32_t kRingLayoutVersion = 1;

struct alignas(64) RingControl {
  uint32_t magic;
  uint32_t layout_version;
  uint32_t capacity_log2;
  uint32_t ring_id;
  uint8_t pad0_[48];
  alignas(64) uint64_t tail;       // consumer position: slots of positions < tail may be overwritten
  alignas(64) uint64_t completed;  // positions < completed have finished, retired in order
  alignas(64) uint64_t error;      // nonzero: the consumer failed; producers stop waiting
};
static_assert(sizeof(RingControl) == 256, "RingControl is four cache lines");
static_assert(offsetof(RingControl, tail) == 64, "tail has its own cache line");
static_assert(offsetof(RingControl, completed) == 128, "completed has its own cache line");
static_assert(offsetof(RingControl, error) == 192, "error has its own cache line");

struct alignas(64) ProducerState {
  uint64_t head;         // next position to claim
  uint64_t cached_tail;  // a lower bound of RingControl::tail
  uint8_t pad_[48];
};
static_assert(sizeof(ProducerState) == 64, "ProducerState is one cache line");

// Passed by value to kernels and producer threads.
struct RingView {
  Descriptor* slots;
  RingControl* control;
  ProducerState* producer;
  uint32_t capacity_log2;
  uint32_t ring_id;
};

enum class Status : uint32_t { kOk = 0, kTimeout = 1, kConsumerError = 2 };

struct PushResult {
  uint64_t ticket;  // the position claimed: pass to waitCompleted
  Status status;
};

// Waits until the ring has room for `pos`. Returns kOk, or why it gave up.
UCCL_EP_HOST_DEVICE inline Status waitForRoom(const RingView& r, uint64_t pos, uint64_t timeout_ns) {
  const uint64_t capacity = uint64_t{1} << r.capacity_log2;
  if (pos - platform::loadRelaxed<platform::Scope::kDevice>(&r.producer->cached_tail) < capacity) {
    return Status::kOk;
  }
  const uint64_t start = platform::nowNs();
  for (uint32_t spins = 0;; platform::spinRelax(spins)) {
    const uint64_t tail = platform::loadAcquire<platform::Scope::kSystem>(&r.control->tail);
    if (pos - tail < capacity) {
      platform::fetchMaxRelaxed<platform::Scope::kDevice>(&r.producer->cached_tail, tail);
      return Status::kOk;
    }
    if (platform::loadRelaxed<platform::Scope::kSystem>(&r.control->error) != 0) return Status::kConsumerError;
    if (platform::nowNs() - start > timeout_ns) return Status::kTimeout;
  }
}

// Claims one position and commits `d` there. On a GPU, call from one lane per warp, after the warp (or block)
// has synchronised so the payload its other lanes wrote is ordered before the commit (invariant 3). A status
// other than kOk leaves the claimed slot unwritten: the ring is then dead, as its consumer already is.
UCCL_EP_HOST_DEVICE inline PushResult push(const RingView& r, Descriptor d, uint64_t timeout_ns) {
  const uint64_t pos = platform::fetchAddRelaxed<platform::Scope::kDevice>(&r.producer->head, 1);
  const Status s = waitForRoom(r, pos, timeout_ns);
  if (s != Status::kOk) return {pos, s};
  const uint64_t mask = (uint64_t{1} << r.capacity_log2) - 1;
  platform::store128Release(reinterpret_cast<platform::U128*>(&r.slots[pos & mask]), d.lo,
                            (d.hi & ~bits::kParityMask) | parityFor(pos, r.capacity_log2));
  return {pos, Status::kOk};
}

// Waits until every position up to and including `ticket` has completed: the producer's fence.
UCCL_EP_HOST_DEVICE inline Status waitCompleted(const RingView& r, uint64_t ticket, uint64_t timeout_ns) {
  const uint64_t start = platform::nowNs();
  for (uint32_t spins = 0; platform::loadAcquire<platform::Scope::kSystem>(&r.control->completed) <= ticket;
       platform::spinRelax(spins)) {
    if (platform::loadRelaxed<platform::Scope::kSystem>(&r.control->error) != 0) return Status::kConsumerError;
    if (platform::nowNs() - start > timeout_ns) return Status::kTimeout;
  }
  return Status::kOk;
}

#if !UCCL_EP_DEVICE_PASS
// The single consumer of one ring (a proxy thread). Not thread-safe: one owner.
class RingConsumer {
 public:
  RingConsumer() = default;
  explicit RingConsumer(const RingView& r) : view_(r), mask_((uint64_t{1} << r.capacity_log2) - 1) {}

  // The descriptor at the next position, if committed; parity bit cleared.
  bool peek(Descriptor* out) const {
    const platform::U128 v = platform::load128Acquire(reinterpret_cast<const platform::U128*>(&view_.slots[pos_ & mask_]));
    if ((v.hi & bits::kParityMask) != parityFor(pos_, view_.capacity_log2)) return false;
    out->lo = v.lo;
    out->hi = v.hi & ~bits::kParityMask;
    return true;
  }
  // Consumes the peeked position. The slot stays owned by the consumer until publishTail.
  void advance() { ++pos_; }
  // Hands consumed slots back to producers.
  void publishTail() { platform::storeRelease(&view_.control->tail, pos_); }
  void publishCompleted(uint64_t n) { platform::storeRelease(&view_.control->completed, n); }
  void publishError(uint64_t code) { platform::storeRelease(&view_.control->error, code); }

  uint64_t position() const { return pos_; }
  const RingView& view() const { return view_; }

 private:
  RingView view_{};
  uint64_t mask_ = 0;
  uint64_t pos_ = 0;
};

// Prepares zeroed ring memory allocated elsewhere (pinned host memory for a GPU ring).
inline void initRing(RingView r) {
  const uint64_t capacity = uint64_t{1} << r.capacity_log2;
  for (uint64_t i = 0; i < capacity; ++i) r.slots[i] = Descriptor{0, 0};
  *r.control = RingControl{};
  r.control->magic = kRingMagic;
  r.control->layout_version = kRingLayoutVersion;
  r.control->capacity_log2 = r.capacity_log2;
  r.control->ring_id = r.ring_id;
  *r.producer = ProducerState{};
}
#endif

}  // namespace uccl::ep::ring
