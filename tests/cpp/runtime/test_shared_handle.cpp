// The CPU half of shared GPU memory: UCCL_EP_MEM_HANDLE parsing, the auto rule and its errors, and the blob
// format (round trip; malformed input rejected with a message naming the peer rank).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>

#include "message_of.hpp"
#include "runtime/shared_handle.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {
namespace {

TEST(MemHandleSetting, ValidValues) {
  EXPECT_EQ(parseMemHandleSetting(""), std::nullopt);
  EXPECT_EQ(parseMemHandleSetting("auto"), std::nullopt);
  EXPECT_EQ(parseMemHandleSetting("ipc"), HandleKind::kCudaIpc);
  EXPECT_EQ(parseMemHandleSetting("fd"), HandleKind::kPosixFd);
  EXPECT_EQ(parseMemHandleSetting("fabric"), HandleKind::kFabric);
  for (HandleKind k : {HandleKind::kCudaIpc, HandleKind::kPosixFd, HandleKind::kFabric}) {
    EXPECT_EQ(parseMemHandleSetting(toString(k)), k);
  }
}

TEST(MemHandleSetting, InvalidValuesNameTheVariable) {
  for (const char* bad : {"IPC", "nvls", "ipc ", "posix", "1"}) {
    EXPECT_TRUE(mentions(messageOf([&] { parseMemHandleSetting(bad); }), {"UCCL_EP_MEM_HANDLE", bad, "fabric"}));
  }
}

TEST(MemHandleSetting, ReadsTheEnvironmentEachCall) {
  ::unsetenv(kMemHandleEnv);
  EXPECT_EQ(memHandleSetting(), std::nullopt);
  ::setenv(kMemHandleEnv, "fd", 1);
  EXPECT_EQ(memHandleSetting(), HandleKind::kPosixFd);
  ::setenv(kMemHandleEnv, "shm", 1);
  EXPECT_TRUE(mentions(messageOf([] { memHandleSetting(); }), {"UCCL_EP_MEM_HANDLE='shm'"}));
  ::unsetenv(kMemHandleEnv);
}

HandleSupport support(int vmm, int posix_fd, int fabric) {
  HandleSupport s;
  s.device = 2;
  s.vmm = vmm;
  s.posix_fd = posix_fd;
  s.fabric = fabric;
  return s;
}

TEST(ResolveHandleKind, AutoPicksIpcOnOneHostAndFabricAcrossHosts) {
  EXPECT_EQ(resolveHandleKind(std::nullopt, true, support(0, 0, 0)), HandleKind::kCudaIpc);
  EXPECT_EQ(resolveHandleKind(std::nullopt, false, support(1, 1, 1)), HandleKind::kFabric);
  EXPECT_TRUE(mentions(messageOf([] { resolveHandleKind(std::nullopt, false, support(1, 1, 0)); }),
                       {"auto", "other hosts", "device 2", "CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED=0"}));
}

TEST(ResolveHandleKind, ForcedKindsNeedTheirAttribute) {
  EXPECT_EQ(resolveHandleKind(HandleKind::kPosixFd, true, support(1, 1, 0)), HandleKind::kPosixFd);
  EXPECT_EQ(resolveHandleKind(HandleKind::kFabric, true, support(1, 0, 1)), HandleKind::kFabric);
  EXPECT_TRUE(mentions(messageOf([] { resolveHandleKind(HandleKind::kPosixFd, true, support(1, 0, 1)); }),
                       {"UCCL_EP_MEM_HANDLE=fd", "CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED=0"}));
  EXPECT_TRUE(mentions(messageOf([] { resolveHandleKind(HandleKind::kFabric, true, support(0, 1, 1)); }),
                       {"UCCL_EP_MEM_HANDLE=fabric", "CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED=0"}));
  EXPECT_TRUE(mentions(messageOf([] { resolveHandleKind(HandleKind::kFabric, true, support(1, 1, 0)); }),
                       {"CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED=0", "IMEX"}));
}

TEST(ResolveHandleKind, HostLocalKindsRefusePeersOnOtherHosts) {
  for (HandleKind k : {HandleKind::kCudaIpc, HandleKind::kPosixFd}) {
    EXPECT_TRUE(mentions(messageOf([&] { resolveHandleKind(k, false, support(1, 1, 1)); }),
                         {"other hosts", "reach only this host"}));
  }
}

SharedBlob sample(HandleKind kind) {
  SharedBlob b;
  b.kind = kind;
  b.owner_rank = 5;
  b.bytes = 1000;
  b.mapped_bytes = kind == HandleKind::kCudaIpc ? 1000 : 2 << 20;
  if (kind == HandleKind::kPosixFd) {
    b.handle = "uccl-ep-fd-0000001234-0123456789abcdef";
  } else {
    for (size_t i = 0; i < kOpaqueHandleBytes; ++i) b.handle.push_back(static_cast<char>(i * 13 + 1));
  }
  return b;
}

TEST(SharedBlob, RoundTripEveryKind) {
  for (HandleKind k : {HandleKind::kCudaIpc, HandleKind::kPosixFd, HandleKind::kFabric}) {
    const SharedBlob a = sample(k);
    const SharedBlob b = decodeSharedBlob(encodeSharedBlob(a), 5);
    EXPECT_EQ(b.kind, k);
    EXPECT_EQ(b.owner_rank, 5);
    EXPECT_EQ(b.bytes, a.bytes);
    EXPECT_EQ(b.mapped_bytes, a.mapped_bytes);
    EXPECT_EQ(b.handle, a.handle);
  }
}

TEST(SharedBlob, EveryTruncationNamesThePeer) {
  const std::string full = encodeSharedBlob(sample(HandleKind::kPosixFd));
  for (size_t n = 0; n < full.size(); ++n) {
    EXPECT_TRUE(mentions(messageOf([&] { decodeSharedBlob(full.substr(0, n), 5); }), {"rank 5", "malformed"}));
  }
  EXPECT_TRUE(mentions(messageOf([&] { decodeSharedBlob(full + "x", 5); }), {"rank 5", "trailing"}));
  EXPECT_TRUE(mentions(messageOf([] { decodeSharedBlob("not a blob at all, just text", 9); }), {"rank 9", "tag"}));
}

TEST(SharedBlob, WrongVersionKindSizesOrHandle) {
  std::string b = encodeSharedBlob(sample(HandleKind::kFabric));
  b[8] = 2;  // version
  EXPECT_TRUE(mentions(messageOf([&] { decodeSharedBlob(b, 4); }), {"rank 4", "version 2"}));
  b = encodeSharedBlob(sample(HandleKind::kFabric));
  b[16] = 9;  // kind tag
  EXPECT_TRUE(mentions(messageOf([&] { decodeSharedBlob(b, 4); }), {"rank 4", "kind tag 9"}));

  SharedBlob s = sample(HandleKind::kCudaIpc);
  s.mapped_bytes = s.bytes + 1;
  EXPECT_TRUE(mentions(messageOf([&] { decodeSharedBlob(encodeSharedBlob(s), 4); }), {"rank 4", "inconsistent sizes"}));
  s = sample(HandleKind::kPosixFd);
  s.bytes = 0;
  EXPECT_TRUE(mentions(messageOf([&] { decodeSharedBlob(encodeSharedBlob(s), 4); }), {"rank 4", "inconsistent sizes"}));
  s = sample(HandleKind::kCudaIpc);
  s.handle.pop_back();
  EXPECT_TRUE(mentions(messageOf([&] { decodeSharedBlob(encodeSharedBlob(s), 4); }), {"rank 4", "ipc handle of 63"}));
  s = sample(HandleKind::kPosixFd);
  s.handle.clear();
  EXPECT_TRUE(mentions(messageOf([&] { decodeSharedBlob(encodeSharedBlob(s), 4); }), {"rank 4", "socket name"}));
}

}  // namespace
}  // namespace uccl::ep::runtime
