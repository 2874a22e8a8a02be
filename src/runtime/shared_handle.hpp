// How a GPU allocation shared with peer processes is named: the handle kind (CUDA IPC, POSIX fd, fabric), the
// UCCL_EP_MEM_HANDLE setting that picks it, and the self-describing blob an owner all-gathers. Plain C++ (no
// CUDA): the rule and the wire format are unit-tested on machines without a GPU; shared_memory.hpp does the CUDA.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace uccl::ep::runtime {

// The tag values travel in blobs: never renumber them.
enum class HandleKind : uint32_t { kCudaIpc = 1, kPosixFd = 2, kFabric = 3 };

std::string toString(HandleKind kind);  // "ipc" | "fd" | "fabric", the UCCL_EP_MEM_HANDLE spellings

inline constexpr const char* kMemHandleEnv = "UCCL_EP_MEM_HANDLE";

// A UCCL_EP_MEM_HANDLE value: auto (nullopt) | ipc | fd | fabric. Anything else throws uccl::ep::Error naming the
// variable and the accepted values.
std::optional<HandleKind> parseMemHandleSetting(const std::string& value);
// The variable as set now (read on every call; unset or empty means auto).
std::optional<HandleKind> memHandleSetting();

// What a device reports about the driver's virtual memory management (cuDeviceGetAttribute values).
struct HandleSupport {
  int device = 0;
  int vmm = 0;       // CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
  int posix_fd = 0;  // CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED
  int fabric = 0;    // CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED
};

// The kind a group of NVLink peers uses. `requested` is the setting (nullopt: auto). Auto picks ipc when every
// NVLink peer is on this host (single_host), else fabric: only fabric handles cross hosts (an MNNVL domain).
// Throws uccl::ep::Error when the choice needs an attribute the device reports as 0 (naming it), or when ipc
// or fd is forced for peers on other hosts.
HandleKind resolveHandleKind(std::optional<HandleKind> requested, bool single_host, const HandleSupport& support);

// What PeerMapping::open needs to map an owner's allocation. Encoded as: magic, version, kind, owner rank,
// requested bytes, mapped bytes, handle (64 CUDA IPC bytes | the fd server's abstract socket name | 64
// CUmemFabricHandle bytes), all little-endian through the transport blob helpers.
struct SharedBlob {
  HandleKind kind = HandleKind::kCudaIpc;
  int owner_rank = 0;
  uint64_t bytes = 0;         // what the owner asked for
  uint64_t mapped_bytes = 0;  // the allocation: bytes rounded up to the VMM granularity (== bytes for ipc)
  std::string handle;
};

inline constexpr uint64_t kSharedBlobMagic = 0x4d454d4853504555ull;  // "UEPSHMEM" read little-endian
inline constexpr uint64_t kSharedBlobVersion = 1;
inline constexpr size_t kOpaqueHandleBytes = 64;  // cudaIpcMemHandle_t and CUmemFabricHandle are both 64 bytes

std::string encodeSharedBlob(const SharedBlob& blob);
// `peer_rank` is the rank the blob came from, for the messages. Throws uccl::ep::Error naming it when the blob is
// truncated, has trailing bytes, a wrong magic, another version, an unknown kind or a handle of the wrong size.
SharedBlob decodeSharedBlob(const std::string& blob, int peer_rank);

}  // namespace uccl::ep::runtime
