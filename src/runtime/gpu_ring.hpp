// A descriptor ring laid out for a GPU producer: slots and RingControl in pinned host memory mapped into the
// device, ProducerState in device memory. Used by the GPU ring tests and benchmarks, and by the runtime.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "uccl_ep/platform/gpu_runtime.hpp"
#include "uccl_ep/ring/ring.hpp"

// Every CUDA call is checked; a failure throws, and GoogleTest reports the exception as the test's failure.
#define UCCL_EP_CUDA_CHECK(expr)                                                                                       \
  do {                                                                                                                 \
    const cudaError_t uccl_ep_err_ = (expr);                                                                           \
    if (uccl_ep_err_ != cudaSuccess) {                                                                                 \
      throw std::runtime_error(std::string(#expr) + " failed at " + __FILE__ + ":" + std::to_string(__LINE__) + ": " + \
                               cudaGetErrorString(uccl_ep_err_));                                                      \
    }                                                                                                                  \
  } while (0)

namespace uccl::ep::runtime {

// Host-mapped pinned allocation of n objects of T, zeroed; host() for the CPU, device() for kernels.
template <typename T>
class Mapped {
 public:
  explicit Mapped(size_t n) : n_(n) {
    UCCL_EP_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_), sizeof(T) * n, cudaHostAllocMapped));
    UCCL_EP_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&device_), host_, 0));
    std::memset(static_cast<void*>(host_), 0, sizeof(T) * n);
  }
  ~Mapped() { static_cast<void>(cudaFreeHost(host_)); }  // destructors do not throw
  Mapped(const Mapped&) = delete;
  Mapped& operator=(const Mapped&) = delete;
  T* host() const { return host_; }
  T* device() const { return device_; }
  size_t size() const { return n_; }

 private:
  size_t n_;
  T* host_ = nullptr;
  T* device_ = nullptr;
};

// Device memory for n objects of T (uninitialised).
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) { UCCL_EP_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), sizeof(T) * n)); }
  ~DeviceArray() { static_cast<void>(cudaFree(ptr_)); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
};

class GpuRing {
 public:
  GpuRing(uint32_t capacity_log2, uint32_t ring_id)
      : slots_(size_t{1} << capacity_log2), control_(1), producer_(1) {
    // initRing writes the producer state too; the host cannot, so it writes a scratch copy and the device
    // copy is zeroed, which is the same initial state.
    ring::ProducerState scratch;
    initRing(ring::RingView{slots_.host(), control_.host(), &scratch, capacity_log2, ring_id});
    UCCL_EP_CUDA_CHECK(cudaMemset(producer_.get(), 0, sizeof(ring::ProducerState)));
    host_view_ = ring::RingView{slots_.host(), control_.host(), nullptr, capacity_log2, ring_id};
    device_view_ = ring::RingView{slots_.device(), control_.device(), producer_.get(), capacity_log2, ring_id};
  }
  GpuRing(const GpuRing&) = delete;
  GpuRing& operator=(const GpuRing&) = delete;

  // For the consumer: producer is null, as a consumer never touches it.
  const ring::RingView& hostView() const { return host_view_; }
  // For kernels.
  const ring::RingView& deviceView() const { return device_view_; }
  ring::RingControl* control() const { return control_.host(); }

 private:
  Mapped<ring::Descriptor> slots_;
  Mapped<ring::RingControl> control_;
  DeviceArray<ring::ProducerState> producer_;
  ring::RingView host_view_{};
  ring::RingView device_view_{};
};

}  // namespace uccl::ep::runtime
