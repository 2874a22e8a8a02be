// GPU memory that peer processes map directly (NVLink / same-GPU loads and stores), through one of three handle
// kinds: CUDA IPC (cudaMalloc + cudaIpc*, this host only), POSIX fd (driver VMM, the fd passed over a Unix
// socket, this host only) and fabric (driver VMM with CUmemFabricHandle, across the hosts of an MNNVL domain).
// Links the CUDA runtime only: driver calls come through cudaGetDriverEntryPointByVersion, NVML through dlopen. A HIP
// build has CUDA IPC's counterpart only (hipIpc*): asking it for fd or fabric handles raises an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/shared_handle.hpp"  // HandleKind, toString, UCCL_EP_MEM_HANDLE parsing, the blob format

namespace uccl::ep::runtime {

class FdServer;

// The kind for a group of NVLink peers: UCCL_EP_MEM_HANDLE, or auto (ipc when every NVLink peer is on this host,
// else fabric). Throws uccl::ep::Error naming the variable for a bad value, and naming the device attribute that
// is 0 when the chosen kind is unsupported (resolveHandleKind has the rule).
HandleKind chooseHandleKind(bool single_host, int device);
// The device attributes the choice looks at; throws when the driver cannot be queried.
HandleSupport queryHandleSupport(int device);
// CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED (and VMM) are non-zero; false when they cannot be read.
bool fabricHandlesSupported(int device);
// The NVLink fabric domain of the device from NVML: "<clusterUuid hex>:<cliqueId>", only when the fabric probe has
// completed successfully; "" when NVML, the device or the information is unavailable. Never throws.
std::string fabricDomainId(int device);

// The range one process has mapped and what undoing it takes; SharedAllocation and PeerMapping each hold one.
struct MappedRange {
  HandleKind kind = HandleKind::kCudaIpc;
  int device = 0;
  void* ptr = nullptr;
  size_t bytes = 0;                   // what the owner asked for
  size_t mapped_bytes = 0;            // bytes rounded up to the VMM granularity (== bytes for ipc)
  unsigned long long vmm_handle = 0;  // CUmemGenericAllocationHandle (kPosixFd, kFabric)
  bool vmm_mapped = false;            // vmm_handle is mapped at ptr (ptr alone: only the reservation)
};

// One GPU allocation that peers can map, zeroed before create() returns (peers may read flags in it at once).
// Owner side: create(), then all-gather exportBlob(). For kPosixFd it runs an FdServer thread that hands the fd
// to every peer that asks, until the allocation is destroyed.
class SharedAllocation {
 public:
  // `rank` names this process in blobs and messages. kPosixFd and kFabric round `bytes` up to the allocation
  // granularity (size() still reports `bytes`). Throws uccl::ep::Error naming the rank, kind and CUDA call.
  static std::unique_ptr<SharedAllocation> create(size_t bytes, int device, HandleKind kind, int rank);
  // Stops the fd server, waits for the device (kernels may still use the memory, as cudaFree would), frees.
  // Peers' mappings of VMM memory keep it alive until they unmap; peers should close CUDA IPC mappings first.
  ~SharedAllocation();
  SharedAllocation(const SharedAllocation&) = delete;
  SharedAllocation& operator=(const SharedAllocation&) = delete;

  void* ptr() const { return range_.ptr; }
  size_t size() const { return range_.bytes; }
  size_t mappedSize() const { return range_.mapped_bytes; }  // size() rounded up to the granularity (ipc: size())
  HandleKind kind() const { return range_.kind; }
  int device() const { return range_.device; }
  // What the owner all-gathers: a SharedBlob (kind tag, version, sizes, handle). Cheap; call any number of times.
  std::string exportBlob() const;

 private:
  SharedAllocation() = default;

  MappedRange range_;
  int rank_ = 0;
  std::string handle_;  // the blob's handle bytes
  std::unique_ptr<FdServer> fd_server_;
};

// A peer's SharedAllocation mapped into this process, on `device`.
class PeerMapping {
 public:
  // Throws uccl::ep::Error naming peer_rank when the blob is malformed or the handle cannot be opened; for
  // kPosixFd waits at most timeout_ns for the peer's fd server, then throws uccl::ep::TimeoutError naming the
  // peer rank and the socket. A CUDA IPC blob cannot be opened by the process that exported it (CUDA refuses).
  static std::unique_ptr<PeerMapping> open(const std::string& blob, int device, int peer_rank, uint64_t timeout_ns);
  // Unmaps; waits for the device first, like ~SharedAllocation.
  ~PeerMapping();
  PeerMapping(const PeerMapping&) = delete;
  PeerMapping& operator=(const PeerMapping&) = delete;

  void* ptr() const { return range_.ptr; }
  size_t size() const { return range_.bytes; }
  HandleKind kind() const { return range_.kind; }
  int peerRank() const { return peer_rank_; }

 private:
  PeerMapping() = default;

  MappedRange range_;
  int peer_rank_ = 0;
};

}  // namespace uccl::ep::runtime
