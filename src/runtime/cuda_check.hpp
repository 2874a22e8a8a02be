// CUDA runtime failures in the runtime layer: UCCL_EP_CUDA_OR_THROW turns one into uccl::ep::Error naming the call
// and what it was for (the message is formatted only on failure); logCuda logs one on tear-down paths, which must
// not throw.
#pragma once

#include <fmt/format.h>

#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"

#define UCCL_EP_CUDA_OR_THROW(expr, ...)                                                                       \
  do {                                                                                                         \
    const cudaError_t uccl_ep_e_ = (expr);                                                                     \
    if (uccl_ep_e_ != cudaSuccess) {                                                                           \
      UCCL_EP_THROW("{}: {} failed: {} ({})", ::fmt::format(__VA_ARGS__), #expr, cudaGetErrorName(uccl_ep_e_), \
                    cudaGetErrorString(uccl_ep_e_));                                                           \
    }                                                                                                          \
  } while (0)

namespace uccl::ep::runtime {

// `where`: what was being torn down ("Buffer destroy", "shared memory release").
inline void logCuda(cudaError_t e, const char* what, const char* where) {
  if (e != cudaSuccess) log().error("uccl-ep {}: {} failed: {}", where, what, cudaGetErrorString(e));
}

}  // namespace uccl::ep::runtime
