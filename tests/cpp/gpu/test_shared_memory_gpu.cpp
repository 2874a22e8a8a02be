// Shared GPU memory between two processes on device 0 (runtime/shared_memory.hpp), for every handle kind the
// device offers: the owner creates a SharedAllocation, the importer maps the blob it got through a pipe, each
// writes a pattern with cudaMemcpy that the other then reads. The gtest process itself never touches CUDA (a
// forked child cannot use a parent's CUDA context), so every CUDA call runs in forked children that print what
// they check; a child exits 77 when the device lacks the kind, and the test is skipped with its reason.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/shared_memory.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::test {
namespace {

using runtime::HandleKind;
using runtime::PeerMapping;
using runtime::SharedAllocation;

constexpr uint64_t kSecond = 1000ull * 1000 * 1000;
constexpr int kSkip = 77;
// Not a multiple of any granularity: the VMM kinds must round up, and peers must still see exactly these bytes.
constexpr size_t kBytes = (3u << 20) + 4096 + 123;

// ---- a length-prefixed message channel over a pipe, every read bounded --------------------------------------

void sendMsg(int fd, const std::string& m) {
  const uint32_t n = static_cast<uint32_t>(m.size());
  if (::write(fd, &n, sizeof(n)) != sizeof(n) || ::write(fd, m.data(), n) != static_cast<ssize_t>(n)) {
    throw Error("pipe write failed");
  }
}

void readExact(int fd, void* out, size_t n, std::chrono::steady_clock::time_point deadline) {
  auto* p = static_cast<char*>(out);
  while (n > 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd pf{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&pf, 1, static_cast<int>(left.count())) != 1) throw Error("timed out on the pipe");
    const ssize_t got = ::read(fd, p, n);
    if (got <= 0) throw Error("the other process closed the pipe (it failed; see its output)");
    p += got;
    n -= static_cast<size_t>(got);
  }
}

std::string recvMsg(int fd, int seconds = 20) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  uint32_t n = 0;
  readExact(fd, &n, sizeof(n), deadline);
  std::string m(n, '\0');
  readExact(fd, m.data(), n, deadline);
  return m;
}

// ---- checks, printed so the device log says what passed ---------------------------------------------------

uint8_t pattern(size_t i, int salt) { return static_cast<uint8_t>((i * 131 + static_cast<size_t>(salt)) >> 1); }

void cudaCheck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorString(e));
}

// Copies `bytes` from device memory at `ptr` and compares with the pattern (salt < 0: zeros).
bool verify(const char* who, const char* what, const void* ptr, size_t bytes, int salt) {
  std::vector<uint8_t> host(bytes, 0xee);
  cudaCheck(cudaMemcpy(host.data(), ptr, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy device to host");
  for (size_t i = 0; i < bytes; ++i) {
    const uint8_t want = salt < 0 ? 0 : pattern(i, salt);
    if (host[i] != want) {
      std::printf("[%s] FAIL %s: byte %zu of %zu is %u, expected %u\n", who, what, i, bytes, host[i], want);
      return false;
    }
  }
  std::printf("[%s] ok   %s (%zu bytes)\n", who, what, bytes);
  return true;
}

void fill(void* ptr, size_t bytes, int salt) {
  std::vector<uint8_t> host(bytes);
  for (size_t i = 0; i < bytes; ++i) host[i] = pattern(i, salt);
  cudaCheck(cudaMemcpy(ptr, host.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy host to device");
  cudaCheck(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

// The reason the device cannot use `kind`, or "" when it can.
std::string unsupported(HandleKind kind) {
  if (kind == HandleKind::kCudaIpc) return "";
  const runtime::HandleSupport s = runtime::queryHandleSupport(0);
  if (s.vmm == 0) return "CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED=0";
  if (kind == HandleKind::kPosixFd && s.posix_fd == 0)
    return "CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED=0";
  if (kind == HandleKind::kFabric && !runtime::fabricHandlesSupported(0)) {
    return "CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED=0 (no NVLink fabric / IMEX here)";
  }
  return "";
}

// ---- the two roles ---------------------------------------------------------------------------------------

int owner(HandleKind kind, int to_importer, int from_importer) {
  const std::string who = "owner rank 0, " + runtime::toString(kind);
  cudaCheck(cudaSetDevice(0), "cudaSetDevice(0)");
  const std::string why = unsupported(kind);
  if (!why.empty()) {
    std::printf("[%s] SKIP: device 0 reports %s\n", who.c_str(), why.c_str());
    sendMsg(to_importer, "SKIP");
    return kSkip;
  }
  auto alloc = SharedAllocation::create(kBytes, 0, kind, 0);
  std::printf("[%s] created: %zu bytes asked, %zu mapped at %p\n", who.c_str(), alloc->size(), alloc->mappedSize(),
              alloc->ptr());
  bool ok = alloc->kind() == kind && alloc->size() == kBytes && alloc->mappedSize() >= kBytes;
  ok = verify(who.c_str(), "create() zeroed the whole mapping", alloc->ptr(), alloc->mappedSize(), -1) && ok;
  const std::string blob = alloc->exportBlob();
  std::printf("[%s] blob of %zu bytes sent to the importer\n", who.c_str(), blob.size());
  sendMsg(to_importer, blob);
  if (recvMsg(from_importer) != "WROTE") throw Error("unexpected message from the importer");
  ok = verify(who.c_str(), "the importer's writes through its mapping are in the owner's memory", alloc->ptr(), kBytes,
              1) &&
       ok;
  fill(alloc->ptr(), kBytes, 2);
  sendMsg(to_importer, "OWNER_WROTE");
  const std::string done = recvMsg(from_importer);
  std::printf("[%s] importer finished: %s\n", who.c_str(), done.c_str());
  alloc.reset();
  std::printf("[%s] released\n", who.c_str());
  return ok && done == "DONE ok" ? 0 : 1;
}

int importer(HandleKind kind, int from_owner, int to_owner) {
  const std::string who = "importer rank 1, " + runtime::toString(kind);
  cudaCheck(cudaSetDevice(0), "cudaSetDevice(0)");
  const std::string blob = recvMsg(from_owner);
  if (blob == "SKIP") return kSkip;
  auto map = PeerMapping::open(blob, 0, 0, 10 * kSecond);
  std::printf("[%s] mapped rank 0's allocation: %zu bytes at %p\n", who.c_str(), map->size(), map->ptr());
  bool ok = map->size() == kBytes && map->kind() == kind && map->peerRank() == 0;
  ok = verify(who.c_str(), "the peer mapping reads as zero", map->ptr(), kBytes, -1) && ok;
  fill(map->ptr(), kBytes, 1);
  std::printf("[%s] wrote pattern 1 through the mapping\n", who.c_str());
  sendMsg(to_owner, "WROTE");
  if (recvMsg(from_owner) != "OWNER_WROTE") throw Error("unexpected message from the owner");
  ok = verify(who.c_str(), "the owner's writes are visible through the mapping", map->ptr(), kBytes, 2) && ok;
  map.reset();
  std::printf("[%s] unmapped\n", who.c_str());
  sendMsg(to_owner, ok ? "DONE ok" : "DONE failed");
  return ok ? 0 : 1;
}

// Runs body in a forked child; exceptions become exit 1 with the message printed.
pid_t spawn(const char* who, const std::function<int()>& body) {
  std::fflush(stdout);
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  int rc = 1;
  try {
    rc = body();
  } catch (const std::exception& e) {
    std::printf("[%s] FAIL: %s\n", who, e.what());
  }
  std::fflush(stdout);
  _exit(rc);
}

// Waits for the children (killing them after `seconds`); returns their exit codes (128 + signal when killed).
std::vector<int> reap(const std::vector<pid_t>& pids, int seconds = 40) {
  std::vector<int> codes(pids.size(), -1);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  for (size_t left = pids.size(); left > 0;) {
    for (size_t i = 0; i < pids.size(); ++i) {
      int status = 0;
      if (codes[i] != -1 || ::waitpid(pids[i], &status, WNOHANG) != pids[i]) continue;
      codes[i] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      --left;
    }
    if (left > 0 && std::chrono::steady_clock::now() > deadline) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (codes[i] == -1) ::kill(pids[i], SIGKILL);
      }
      ADD_FAILURE() << "children still running after " << seconds << " s: killed";
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return codes;
}

void runPair(HandleKind kind) {
  int to_importer[2];
  int to_owner[2];
  ASSERT_EQ(::pipe(to_importer), 0);
  ASSERT_EQ(::pipe(to_owner), 0);
  const pid_t a = spawn("owner", [&] { return owner(kind, to_importer[1], to_owner[0]); });
  const pid_t b = spawn("importer", [&] { return importer(kind, to_importer[0], to_owner[1]); });
  for (int fd : {to_importer[0], to_importer[1], to_owner[0], to_owner[1]}) ::close(fd);  // EOF if a child dies
  const std::vector<int> codes = reap({a, b});
  if (codes[0] == kSkip) GTEST_SKIP() << runtime::toString(kind) << " handles are not offered by device 0";
  EXPECT_EQ(codes[0], 0) << "owner";
  EXPECT_EQ(codes[1], 0) << "importer";
}

TEST(SharedMemoryGpu, CudaIpcBetweenTwoProcesses) { runPair(HandleKind::kCudaIpc); }
TEST(SharedMemoryGpu, PosixFdBetweenTwoProcesses) { runPair(HandleKind::kPosixFd); }
TEST(SharedMemoryGpu, FabricBetweenTwoProcesses) { runPair(HandleKind::kFabric); }

// What the device offers and what auto picks; fabricDomainId is printed for the record (empty off MNNVL).
TEST(SharedMemoryGpu, ReportsHandleSupportAndAutoChoice) {
  const pid_t pid = spawn("support", [] {
    ::unsetenv(runtime::kMemHandleEnv);
    const runtime::HandleSupport s = runtime::queryHandleSupport(0);
    std::printf("[support] device 0: vmm=%d posix_fd=%d fabric=%d; fabricHandlesSupported=%d; fabricDomainId='%s'\n",
                s.vmm, s.posix_fd, s.fabric, runtime::fabricHandlesSupported(0) ? 1 : 0,
                runtime::fabricDomainId(0).c_str());
    const HandleKind one_host = runtime::chooseHandleKind(true, 0);
    std::printf("[support] auto, one host -> %s\n", runtime::toString(one_host).c_str());
    try {
      std::printf("[support] auto, several hosts -> %s\n",
                  runtime::toString(runtime::chooseHandleKind(false, 0)).c_str());
    } catch (const Error& e) {
      std::printf("[support] auto, several hosts -> error (expected without fabric): %s\n", e.what());
    }
    return one_host == HandleKind::kCudaIpc ? 0 : 1;
  });
  EXPECT_EQ(reap({pid})[0], 0);
}

// The fd kind's handshake: once the owner is gone, opening its blob ends in TimeoutError naming the rank.
TEST(SharedMemoryGpu, FdBlobOfAGoneOwnerTimesOut) {
  const pid_t pid = spawn("fd timeout", [] {
    cudaCheck(cudaSetDevice(0), "cudaSetDevice(0)");
    if (!unsupported(HandleKind::kPosixFd).empty()) return kSkip;
    std::string blob = SharedAllocation::create(1 << 20, 0, HandleKind::kPosixFd, 3)->exportBlob();  // freed at once
    try {
      PeerMapping::open(blob, 0, 3, kSecond / 5);
      std::printf("[fd timeout] FAIL: the blob of a destroyed allocation opened\n");
      return 1;
    } catch (const TimeoutError& e) {
      const bool named = std::string(e.what()).find("rank 3") != std::string::npos;
      std::printf("[fd timeout] %s TimeoutError: %s\n", named ? "ok  " : "FAIL", e.what());
      return named ? 0 : 1;
    }
  });
  const int code = reap({pid})[0];
  if (code == kSkip) GTEST_SKIP() << "fd handles are not offered by device 0";
  EXPECT_EQ(code, 0);
}

// Needs no GPU: the blob is decoded before CUDA is touched.
TEST(SharedMemoryGpu, MalformedBlobNamesThePeer) {
  try {
    PeerMapping::open("definitely not a blob", 0, 6, kSecond);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 6"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace uccl::ep::test
