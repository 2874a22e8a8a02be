#include "transport/verbs/cuda_dmabuf.hpp"

#include <dlfcn.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdint>

namespace uccl::ep::transport::verbs {
namespace {

// The few driver API types we need, spelled here so that cuda.h is not required either.
using CuResult = int;
using CuDevicePtr = unsigned long long;
constexpr int kCuMemRangeHandleTypeDmaBufFd = 0x1;  // CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD
using GetHandleFn = CuResult (*)(void* handle, CuDevicePtr dptr, size_t size, int type, unsigned long long flags);
using GetErrorNameFn = CuResult (*)(CuResult error, const char** name);

struct CudaDriver {
  GetHandleFn getHandle = nullptr;
  GetErrorNameFn errorName = nullptr;
  std::string why;  // why getHandle is null
};

// Loaded once; the handle is never closed (the driver stays resident for the process anyway).
const CudaDriver& driver() {
  static const CudaDriver d = [] {
    CudaDriver r;
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* e = dlerror();
      r.why = fmt::format("libcuda.so.1 could not be loaded ({})", e ? e : "no error text");
      return r;
    }
    r.getHandle = reinterpret_cast<GetHandleFn>(dlsym(lib, "cuMemGetHandleForAddressRange"));
    r.errorName = reinterpret_cast<GetErrorNameFn>(dlsym(lib, "cuGetErrorName"));
    if (r.getHandle == nullptr) r.why = "libcuda.so.1 lacks cuMemGetHandleForAddressRange (driver older than 11.7)";
    return r;
  }();
  return d;
}

}  // namespace

int cudaDmabufFdViaDriver(void* base, size_t size, std::string* why) {
  const CudaDriver& d = driver();
  if (d.getHandle == nullptr) {
    *why = d.why;
    return -1;
  }
  int fd = -1;
  const CuResult rc = d.getHandle(&fd, reinterpret_cast<uintptr_t>(base), size, kCuMemRangeHandleTypeDmaBufFd, 0);
  if (rc != 0) {
    const char* name = nullptr;
    if (d.errorName == nullptr || d.errorName(rc, &name) != 0 || name == nullptr) name = "unknown";
    *why = fmt::format("cuMemGetHandleForAddressRange({}, {} bytes) failed: {} ({})", base, size, name, rc);
    return -1;
  }
  return fd;
}

bool cudaDmabufEntryPointPresent() { return driver().getHandle != nullptr; }

bool peermemModuleLoaded() {
  return access("/sys/module/nvidia_peermem", F_OK) == 0 ||
         access("/sys/kernel/mm/memory_peers/nv_mem/version", F_OK) == 0;
}

}  // namespace uccl::ep::transport::verbs
