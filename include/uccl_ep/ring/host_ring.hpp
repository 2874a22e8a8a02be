// A ring whose every part lives in ordinary host memory: for host producers (tests, benchmarks, C++ tools).
// GPU rings put the same three parts in pinned host memory and device memory (runtime layer).
#pragma once

#include <cstdlib>
#include <memory>
#include <new>

#include "uccl_ep/ring/ring.hpp"

namespace uccl::ep::ring {

class HostRing {
 public:
  HostRing(uint32_t capacity_log2, uint32_t ring_id) {
    const size_t slot_bytes = sizeof(Descriptor) << capacity_log2;
    slots_.reset(static_cast<Descriptor*>(std::aligned_alloc(64, slot_bytes < 64 ? 64 : slot_bytes)));
    control_.reset(static_cast<RingControl*>(std::aligned_alloc(alignof(RingControl), sizeof(RingControl))));
    producer_.reset(static_cast<ProducerState*>(std::aligned_alloc(alignof(ProducerState), sizeof(ProducerState))));
    if (!slots_ || !control_ || !producer_) throw std::bad_alloc();
    view_ = RingView{slots_.get(), control_.get(), producer_.get(), capacity_log2, ring_id};
    initRing(view_);
  }
  const RingView& view() const { return view_; }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<Descriptor, Free> slots_;
  std::unique_ptr<RingControl, Free> control_;
  std::unique_ptr<ProducerState, Free> producer_;
  RingView view_{};
};

}  // namespace uccl::ep::ring
