// Registered memory of one verbs endpoint: host memory through ibv_reg_mr, device memory through dma-buf
// (ibv_reg_dmabuf_mr on an fd from the CUDA driver) with ibv_reg_mr (nvidia-peermem) as the fallback.
//
// Region ids are indices that are never reused, so a stale id in a descriptor is caught, not misdirected.
#pragma once

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "transport/verbs/verbs_api.hpp"
#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::transport::verbs {

// Exactly the remote access the protocol uses: RDMA writes and fetch-adds (signals). Nothing reads a peer's region.
constexpr int kMrAccess =
    IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;

class MemoryRegistry {
 public:
  struct Region {
    uint8_t* base = nullptr;
    size_t size = 0;
    ibv_mr* mr = nullptr;  // nullptr: deregistered
    bool dmabuf = false;
  };

  MemoryRegistry(const VerbsApi& api, ibv_pd* pd, std::string device)
      : api_(api), pd_(pd), device_(std::move(device)) {}
  ~MemoryRegistry();
  MemoryRegistry(const MemoryRegistry&) = delete;
  MemoryRegistry& operator=(const MemoryRegistry&) = delete;

  LocalMemory add(void* base, size_t size, MemoryKind kind);
  void remove(uint32_t id);

  // Hot path: the live region `id`, or nullptr.
  const Region* find(uint32_t id) const {
    return id < regions_.size() && regions_[id].mr != nullptr ? &regions_[id] : nullptr;
  }

 private:
  ibv_mr* registerDevice(void* base, size_t size, bool* via_dmabuf);

  const VerbsApi& api_;
  ibv_pd* pd_;
  std::string device_;
  std::vector<Region> regions_;
};

}  // namespace uccl::ep::transport::verbs
