// Memory registration (host; device through dma-buf with the ibv_reg_mr fallback), capabilities, teardown.
#include "transport/verbs/cuda_dmabuf.hpp"
#include "verbs_test_util.hpp"

namespace uccl::ep::transport::verbs::testing {
namespace {

// A device "pointer": never dereferenced by the backend or the fake unless bytes move.
void* const kDevPtr = reinterpret_cast<void*>(uintptr_t{0x7f0000000123});
constexpr size_t kDevSize = 3 * 4096;

TEST(VerbsMemory, HostMemoryUsesRegMrAndPublishesAddressAndRkey) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  auto t = make(f, 0, 1);
  alignas(64) static uint8_t buf[256];
  const LocalMemory m = t->registerMemory(buf, sizeof(buf), MemoryKind::kHost);
  EXPECT_EQ(m.base, buf);
  EXPECT_EQ(m.size, sizeof(buf));
  EXPECT_EQ(m.remote.addr, reinterpret_cast<uint64_t>(buf));
  EXPECT_EQ(m.remote.size, sizeof(buf));
  EXPECT_NE(m.remote.key, 0u);
  EXPECT_EQ(f.reg_mr_addrs.back(), static_cast<void*>(buf));
  // Exactly the remote access the protocol uses: writes and fetch-adds, never remote reads.
  EXPECT_EQ(f.reg_mr_access.back(), IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC);
  EXPECT_TRUE(f.dmabuf_calls.empty());
  const RemoteMemory back = decodeRemote(encodeRemote(m.remote));
  EXPECT_EQ(back.key, m.remote.key);
  t->deregisterMemory(m.id);
  EXPECT_NE(errorOf([&] { t->deregisterMemory(m.id); }).find("no such registered region"), std::string::npos);
  const LocalMemory again = t->registerMemory(buf, sizeof(buf), MemoryKind::kHost);
  EXPECT_NE(again.id, m.id);  // ids are not reused
}

TEST(VerbsMemory, DeviceMemoryPrefersDmabufOnAPageAlignedRange) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  auto t = make(f, 0, 1);
  const size_t regs_before = f.reg_mr_addrs.size();
  const LocalMemory m = t->registerMemory(kDevPtr, kDevSize, MemoryKind::kDevice);
  ASSERT_EQ(f.dmabuf_calls.size(), 1u);
  const auto& c = f.dmabuf_calls[0];
  EXPECT_EQ(c.fd, 77);
  EXPECT_EQ(c.aligned_base, reinterpret_cast<void*>(uintptr_t{0x7f0000000000}));
  EXPECT_EQ(c.aligned_size, 4u * 4096);
  EXPECT_EQ(c.offset, 0x123u);
  EXPECT_EQ(c.length, kDevSize);
  EXPECT_EQ(c.iova, reinterpret_cast<uint64_t>(kDevPtr));
  EXPECT_EQ(f.closed_fds, std::vector<int>{77});  // the MR keeps the dma-buf; our fd is closed
  EXPECT_EQ(f.reg_mr_addrs.size(), regs_before);
  EXPECT_EQ(m.remote.addr, reinterpret_cast<uint64_t>(kDevPtr));
}

TEST(VerbsMemory, DeviceMemoryFallsBackToRegMrWithoutLibcuda) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  f.dmabuf_fd = -1;  // the injected libcuda lookup fails
  auto t = make(f, 0, 1);
  const LocalMemory m = t->registerMemory(kDevPtr, kDevSize, MemoryKind::kDevice);
  EXPECT_TRUE(f.dmabuf_calls.empty());
  EXPECT_EQ(f.reg_mr_addrs.back(), kDevPtr);
  EXPECT_NE(m.remote.key, 0u);
}

TEST(VerbsMemory, DeviceMemoryFallsBackToRegMrWhenDmabufRegistrationFails) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  f.dmabuf_reg_fails = true;
  auto t = make(f, 0, 1);
  t->registerMemory(kDevPtr, kDevSize, MemoryKind::kDevice);
  EXPECT_EQ(f.dmabuf_calls.size(), 1u);
  EXPECT_EQ(f.closed_fds, std::vector<int>{77});
  EXPECT_EQ(f.reg_mr_addrs.back(), kDevPtr);
}

TEST(VerbsMemory, DeviceMemoryErrorExplainsBothPaths) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  auto t = make(f, 0, 1);
  f.dmabuf_fd = -1;
  f.reg_mr_fails = true;
  const std::string err = errorOf([&] { t->registerMemory(kDevPtr, kDevSize, MemoryKind::kDevice); });
  EXPECT_NE(err.find("cannot register device memory"), std::string::npos) << err;
  EXPECT_NE(err.find("libcuda.so.1 could not be loaded (injected)"), std::string::npos) << err;
  EXPECT_NE(err.find("nvidia-peermem"), std::string::npos) << err;
}

TEST(VerbsMemory, CapabilitiesReflectTheDeviceAndGpuPaths) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  auto t = make(f, 0, 1);
  EXPECT_EQ(t->capabilities(), kOrderedDelivery | kRemoteCqData | kCumulativeCompletions | kNativeAtomics | kGpuMemory);
  f.cuda_present = false;
  EXPECT_EQ(make(f, 0, 1)->capabilities() & kGpuMemory, 0u);
  f.peermem = true;
  EXPECT_NE(make(f, 0, 1)->capabilities() & kGpuMemory, 0u);
}

TEST(VerbsMemory, TeardownReleasesEverything) {
  FakeVerbs f;
  f.addDevice("mlx5_0");
  {
    auto a = make(f, 0, 2);
    auto b = make(f, 1, 2);
    connectAll({a.get(), b.get()});
    static uint8_t buf[64];
    a->registerMemory(buf, sizeof(buf), MemoryKind::kHost);
    a->registerMemory(kDevPtr, kDevSize, MemoryKind::kDevice);
  }
  EXPECT_EQ(f.openContexts(), 0);
  EXPECT_EQ(f.liveQps(), 0);
  EXPECT_EQ(f.liveMrs(), 0);
  EXPECT_EQ(f.liveCqs(), 0);
}

TEST(VerbsMemory, RealDriverLookupFailsWithReasonOrReturnsAnFd) {
  // On a machine without a GPU driver this reports why; it must never crash or link libcuda.
  std::string why;
  const int fd = cudaDmabufFdViaDriver(kDevPtr, 4096, &why);
  if (fd < 0) {
    EXPECT_FALSE(why.empty());
  }
}

}  // namespace
}  // namespace uccl::ep::transport::verbs::testing
