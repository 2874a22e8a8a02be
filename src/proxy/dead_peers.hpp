// The peers a proxy group has declared dead (enable_shrink): shared by its threads, so that a peer one thread finds
// dead is dropped by the others too. Each peer is declared once; the declaring thread logs the warning.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace uccl::ep::proxy {

class DeadPeers {
 public:
  explicit DeadPeers(int world) : world_(world), dead_(new std::atomic<bool>[world]) {
    for (int p = 0; p < world; ++p) dead_[p].store(false, std::memory_order_relaxed);
  }
  bool isDead(uint32_t peer) const {
    return peer < static_cast<uint32_t>(world_) && dead_[peer].load(std::memory_order_acquire);
  }
  // True for the caller that declared it first.
  bool declare(uint32_t peer) {
    return peer < static_cast<uint32_t>(world_) && !dead_[peer].exchange(true, std::memory_order_acq_rel);
  }
  std::vector<int> list() const {
    std::vector<int> out;
    for (int p = 0; p < world_; ++p) {
      if (dead_[p].load(std::memory_order_acquire)) out.push_back(p);
    }
    return out;
  }

 private:
  int world_;
  std::unique_ptr<std::atomic<bool>[]> dead_;
};

}  // namespace uccl::ep::proxy
