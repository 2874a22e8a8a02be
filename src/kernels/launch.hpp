// Host-side launch helpers shared by the kernel files: launch errors as exceptions, and one shared-memory
// carveout for every kernel.
#pragma once

#include <atomic>
#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "uccl_ep/platform/gpu_runtime.hpp"

namespace uccl::ep::kernels {

inline void checkLaunch(gpuError_t err, const char* what) {
  if (err != gpuSuccess) throw std::runtime_error(std::string("launching ") + what + ": " + gpuGetErrorString(err));
}

// Every kernel asks for the same shared-memory carveout. An SM holding a block that spins (waiting for its peers)
// keeps its carveout; a kernel of another rank on the same GPU (MPS) that wanted a different one could then find
// no SM to run on, and the peers would wait for it forever. Callers run this once per kernel set.
inline void preferMaxShared(std::initializer_list<const void*> kernels) {
#if defined(UCCL_EP_CUDA)
  for (const void* f : kernels) {
    checkLaunch(cudaFuncSetAttribute(f, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared),
                "setting the shared-memory carveout");
  }
#else
  (void)kernels;
#endif
}

// Lets `kernel` take `bytes` of dynamic shared memory (above the default 48 KiB a launch may ask for).
inline void allowDynamicShared(const void* kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return;
#if defined(UCCL_EP_CUDA)
  checkLaunch(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
              "raising the dynamic shared memory limit");
#else
  checkLaunch(hipFuncSetAttribute(kernel, hipFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
              "raising the dynamic shared memory limit");
#endif
}

// One kernel's shared memory: the carveout set once (preferMaxShared), and the dynamic limit raised when a launch
// needs more than any earlier one (allowDynamicShared). Callers keep one per kernel in a function-local static.
class SharedMemoryLimit {
 public:
  explicit SharedMemoryLimit(const void* kernel) : kernel_(kernel) { preferMaxShared({kernel}); }
  void allow(size_t bytes) {
    size_t now = allowed_.load(std::memory_order_relaxed);
    if (bytes <= now) return;
    allowDynamicShared(kernel_, bytes);
    while (now < bytes && !allowed_.compare_exchange_weak(now, bytes, std::memory_order_relaxed)) {
    }
  }

 private:
  const void* kernel_;
  std::atomic<size_t> allowed_{0};
};

}  // namespace uccl::ep::kernels
