#include "transport/verbs/memory_registry.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::transport::verbs {

MemoryRegistry::~MemoryRegistry() {
  for (Region& r : regions_) {
    if (r.mr != nullptr) api_.deregMr(r.mr);
  }
}

LocalMemory MemoryRegistry::add(void* base, size_t size, MemoryKind kind) {
  UCCL_EP_CHECK(base != nullptr && size > 0, "verbs: {}: cannot register region at {} of {} bytes", device_, base,
                size);
  Region r;
  r.base = static_cast<uint8_t*>(base);
  r.size = size;
  if (kind == MemoryKind::kDevice) {
    r.mr = registerDevice(base, size, &r.dmabuf);
  } else {
    r.mr = api_.regMr(pd_, base, size, kMrAccess);
    if (r.mr == nullptr) {
      UCCL_EP_THROW("verbs: {}: ibv_reg_mr of host memory at {} ({} bytes) failed: {}", device_, base, size,
                    std::strerror(errno));
    }
  }
  LocalMemory m;
  m.id = static_cast<uint32_t>(regions_.size());
  m.base = base;
  m.size = size;
  // Peers name the region by our virtual address (the MR's iova is the address) and the rkey.
  m.remote = RemoteMemory{reinterpret_cast<uint64_t>(base), r.mr->rkey, size};
  regions_.push_back(r);
  return m;
}

void MemoryRegistry::remove(uint32_t id) {
  if (id >= regions_.size() || regions_[id].mr == nullptr) {
    UCCL_EP_THROW("verbs: {}: deregisterMemory({}): no such registered region ({} ids issued)", device_, id,
                  regions_.size());
  }
  const int rc = api_.deregMr(regions_[id].mr);
  regions_[id].mr = nullptr;
  if (rc != 0) UCCL_EP_THROW("verbs: {}: ibv_dereg_mr of region {} failed: {}", device_, id, std::strerror(rc));
}

ibv_mr* MemoryRegistry::registerDevice(void* base, size_t size, bool* via_dmabuf) {
  // cuMemGetHandleForAddressRange wants a host-page-aligned range; the MR then starts `offset` into it.
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(base);
  const uintptr_t lo = b & ~(page - 1);
  const uintptr_t hi = (b + size + page - 1) & ~(page - 1);
  std::string why;
  const int fd = api_.cudaDmabufFd(reinterpret_cast<void*>(lo), hi - lo, &why);
  if (fd >= 0) {
    ibv_mr* mr = api_.regDmabufMr(pd_, b - lo, size, b, fd, kMrAccess);
    const int err = errno;
    api_.closeFd(fd);  // the MR holds its own reference to the dma-buf
    if (mr != nullptr) {
      *via_dmabuf = true;
      return mr;
    }
    why = fmt::format("ibv_reg_dmabuf_mr failed: {}", std::strerror(err));
  }
  log().info(
      "verbs: {}: dma-buf registration of device memory at {} unavailable ({}); trying ibv_reg_mr "
      "(nvidia-peermem)",
      device_, base, why);
  ibv_mr* mr = api_.regMr(pd_, base, size, kMrAccess);
  if (mr == nullptr) {
    UCCL_EP_THROW(
        "verbs: {}: cannot register device memory at {} ({} bytes): dma-buf path: {}; ibv_reg_mr: {} "
        "(expected nvidia-peermem loaded, or a driver and NIC with dma-buf support)",
        device_, base, size, why, std::strerror(errno));
  }
  *via_dmabuf = false;
  return mr;
}

}  // namespace uccl::ep::transport::verbs
