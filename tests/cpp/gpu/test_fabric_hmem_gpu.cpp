// GPU memory through libfabric shm (FI_HMEM): two endpoints register cudaMalloc'd memory as CUDA memory of device 0
// and a write with immediate moves the bytes device to device (and host to device, as the proxies mix both). Skipped,
// naming why, where shm grants no FI_HMEM or the CUDA registration fails (the runtime then keeps the RDMA buffer in
// pinned host memory); with UCCL_EP_FABRIC_HMEM=on a failed registration fails the test instead.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "fabric_pair.hpp"
#include "transport/backends.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport {
namespace {

using testing::FabricPair;

struct DeviceBuffer {
  explicit DeviceBuffer(size_t n) : bytes(n) { EXPECT_EQ(cudaMalloc(&ptr, n), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(ptr); }
  std::vector<uint8_t> read() const {
    std::vector<uint8_t> out(bytes);
    EXPECT_EQ(cudaMemcpy(out.data(), ptr, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  void* ptr = nullptr;
  size_t bytes;
};

TEST(FabricHmemGpu, WritesLandInGpuMemoryOverShm) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) GTEST_SKIP() << "no CUDA device";
  if (!fabricProviderAvailable("shm")) GTEST_SKIP() << "libfabric provider shm absent";
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  const char* mode = std::getenv("UCCL_EP_FABRIC_HMEM");
  const bool required = mode != nullptr && std::string(mode) == "on";
  TransportOptions o;
  o.gpu_device = 0;
  o.fabric_hmem = required ? "on" : "auto";
  FabricPair p(o, "shm");
  if (!(p.t[0]->capabilities() & kGpuMemory)) GTEST_SKIP() << "this libfabric's shm grants no FI_HMEM";

  constexpr size_t kBytes = 1 << 20;
  std::vector<uint8_t> pattern(kBytes), host(kBytes);
  for (size_t i = 0; i < kBytes; ++i) pattern[i] = static_cast<uint8_t>(i * 131 + (i >> 11));
  host = pattern;
  DeviceBuffer src(kBytes), dst(kBytes);
  ASSERT_EQ(cudaMemcpy(src.ptr, pattern.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dst.ptr, 0, kBytes), cudaSuccess);
  LocalMemory s, d, h;
  try {
    s = p.t[0]->registerMemory(src.ptr, kBytes, MemoryKind::kDevice);
    d = p.t[1]->registerMemory(dst.ptr, kBytes, MemoryKind::kDevice);
  } catch (const Error& e) {
    if (required) FAIL() << e.what();
    GTEST_SKIP() << "shm grants FI_HMEM, but CUDA registration fails here (the runtime falls back to pinned host "
                    "memory): "
                 << e.what();
  }
  h = p.t[0]->registerMemory(host.data(), kBytes, MemoryKind::kHost);

  ASSERT_EQ(p.writeWithImm(s, d, kBytes, 0x1001), "");
  EXPECT_EQ(dst.read(), pattern) << "device to device";
  ASSERT_EQ(cudaMemset(dst.ptr, 0, kBytes), cudaSuccess);
  ASSERT_EQ(p.writeWithImm(h, d, kBytes / 2, 0x1002), "");
  const std::vector<uint8_t> got = dst.read();
  EXPECT_TRUE(std::equal(pattern.begin(), pattern.begin() + kBytes / 2, got.begin())) << "host to device";
  EXPECT_EQ(got[kBytes / 2], 0) << "the write ran past its end";
}

}  // namespace
}  // namespace uccl::ep::transport
