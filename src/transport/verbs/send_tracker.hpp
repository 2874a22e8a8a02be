// Per-QP send-queue accounting under selective signalling.
//
// Every send WR gets a 32-bit sequence number (carried in its wr_id) and a slot holding the caller's wr_id.
// On RC, a completion for sequence s means every WR posted before s on that QP has completed too (the send
// queue completes in order), so one CQE retires s and all unsignaled WRs before it. Unsignaled WRs still
// occupy the queue until then, so they count as outstanding. A failed WR produces an error CQE even when
// unsignaled (and the rest are flushed), which is why every WR's wr_id is decodable.
//
// Invariant kept by the caller: when a WR fills the queue it is signaled (internally if the caller did not
// ask, with report=false), so a full queue always drains.
#pragma once

#include <cstdint>
#include <vector>

namespace uccl::ep::transport::verbs {

class SendTracker {
 public:
  struct Slot {
    uint64_t wr_id = 0;
    bool report = false;  // the caller asked for a completion
  };

  // depth must be a power of two so that seq % depth stays consistent across 32-bit wrap-around.
  void init(uint32_t depth) {
    depth_ = depth;
    slots_.assign(depth, Slot{});
  }
  uint32_t outstanding() const { return posted_ - retired_; }
  uint32_t space() const { return depth_ - outstanding(); }

  uint32_t push(uint64_t wr_id, bool report) {
    const uint32_t seq = posted_++;
    slots_[seq & (depth_ - 1)] = Slot{wr_id, report};
    return seq;
  }
  // Forgets the last n pushes (WRs that ibv_post_send refused).
  void unpush(uint32_t n) { posted_ -= n; }

  // Retires seq and everything before it; returns its slot. A seq outside the window (duplicate) retires nothing.
  const Slot& complete(uint32_t seq) {
    if (static_cast<uint32_t>(seq - retired_) < outstanding()) retired_ = seq + 1;
    return slots_[seq & (depth_ - 1)];
  }

 private:
  uint32_t depth_ = 0;
  uint32_t posted_ = 0;
  uint32_t retired_ = 0;
  std::vector<Slot> slots_;
};

}  // namespace uccl::ep::transport::verbs
