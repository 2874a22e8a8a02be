// GPU memory through libfabric (FI_HMEM), the parts a machine without a GPU can check: when the endpoint asks for
// FI_HMEM (a CUDA device in the options, UCCL_EP_FABRIC_HMEM), what it reports (kGpuMemory), that host memory still
// moves through an FI_HMEM endpoint, and that a device registration it cannot make fails naming FI_HMEM_CUDA and the
// device (the runtime then falls back to pinned host memory). GPU memory moving: tests/cpp/gpu/test_fabric_hmem_gpu.
#include <gtest/gtest.h>

#include <vector>

#include "fabric_pair.hpp"
#include "transport/backends.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport {
namespace {

using testing::FabricPair;

TransportOptions withDevice(int device, const std::string& hmem) {
  TransportOptions o;
  o.gpu_device = device;
  o.fabric_hmem = hmem;
  o.timeout_ns = 10'000'000'000ull;
  return o;
}

TEST(FabricHmem, NoDeviceOrOffAsksForNothingAndRefusesDeviceMemory) {
  if (!fabricProviderAvailable("shm")) GTEST_SKIP() << "libfabric provider shm absent";
  for (const auto& o : {withDevice(-1, "auto"), withDevice(-1, "on"), withDevice(0, "off")}) {
    FabricPair p(o, "shm");
    EXPECT_FALSE(p.t[0]->capabilities() & kGpuMemory) << "device " << o.gpu_device << ", " << o.fabric_hmem;
    std::vector<uint8_t> buf(4096);
    try {
      p.t[0]->registerMemory(buf.data(), buf.size(), MemoryKind::kDevice);
      ADD_FAILURE() << "device memory registered on an endpoint opened without FI_HMEM";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("without FI_HMEM"), std::string::npos) << e.what();
    }
  }
}

TEST(FabricHmem, OnFailsWhereTheProviderGrantsNoneAndAutoOpensWithout) {
  if (!fabricProviderAvailable("tcp")) GTEST_SKIP() << "libfabric provider tcp absent";
  try {
    FabricPair p(withDevice(0, "on"), "tcp");
    if (p.t[0]->capabilities() & kGpuMemory) GTEST_SKIP() << "this libfabric's tcp;ofi_rxm grants FI_HMEM";
    ADD_FAILURE() << "UCCL_EP_FABRIC_HMEM=on opened an endpoint without GPU memory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("UCCL_EP_FABRIC_HMEM=on"), std::string::npos) << e.what();
  }
  FabricPair p(withDevice(0, "auto"), "tcp");
  EXPECT_FALSE(p.t[0]->capabilities() & kGpuMemory);
  std::vector<uint8_t> src(4096, 0x3c), dst(4096, 0);
  const LocalMemory s = p.t[0]->registerMemory(src.data(), src.size(), MemoryKind::kHost);
  const LocalMemory d = p.t[1]->registerMemory(dst.data(), dst.size(), MemoryKind::kHost);
  EXPECT_EQ(p.writeWithImm(s, d, src.size(), 0x42), "");
  EXPECT_EQ(dst, src);
}

// shm grants FI_HMEM where libfabric was built with it (Debian's is): the endpoint reports kGpuMemory, host memory
// moves through it as before, and a CUDA registration is attempted with the device of the options.
TEST(FabricHmem, AnShmEndpointWithHmemStillMovesHostMemory) {
  if (!fabricProviderAvailable("shm")) GTEST_SKIP() << "libfabric provider shm absent";
  FabricPair p(withDevice(0, "auto"), "shm");
  if (!(p.t[0]->capabilities() & kGpuMemory)) GTEST_SKIP() << "this libfabric's shm grants no FI_HMEM";
  EXPECT_TRUE(p.t[0]->capabilities() & kRemoteCqData);
  std::vector<uint8_t> src(1 << 16), dst(1 << 16, 0);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 7 + 1);
  const LocalMemory s = p.t[0]->registerMemory(src.data(), src.size(), MemoryKind::kHost);
  const LocalMemory d = p.t[1]->registerMemory(dst.data(), dst.size(), MemoryKind::kHost);
  EXPECT_EQ(p.writeWithImm(s, d, src.size(), 0x99), "");
  EXPECT_EQ(dst, src);
  // Host memory named as CUDA memory: libfabric without CUDA refuses it (named here); with CUDA it may take it.
  std::vector<uint8_t> host(4096);
  try {
    const LocalMemory m = p.t[0]->registerMemory(host.data(), host.size(), MemoryKind::kDevice);
    p.t[0]->deregisterMemory(m.id);
  } catch (const Error& e) {
    const std::string what = e.what();
    RecordProperty("device_registration", what);
    EXPECT_NE(what.find("FI_HMEM_CUDA"), std::string::npos) << what;
    EXPECT_NE(what.find("CUDA device 0"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace uccl::ep::transport
