#include "runtime/shared_memory.hpp"

#include "uccl_ep/platform/gpu_runtime.hpp"
#if !defined(UCCL_EP_HIP)
#include <cuda.h>  // driver types only: the functions come from cudaGetDriverEntryPointByVersion, never from libcuda
#include <cudaTypedefs.h>
#endif
#include <dlfcn.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "runtime/cuda_check.hpp"
#include "runtime/fd_passing.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"

// A HIP build shares memory through hipIpc handles only: the CUDA driver's virtual memory calls (POSIX-fd and fabric
// handles, hence MNNVL) and NVML are compiled out, and asking for those handles raises an error (hipOnlyIpc).

namespace uccl::ep::runtime {
namespace {

#if defined(UCCL_EP_HIP)
[[noreturn]] void hipOnlyIpc(HandleKind kind, const std::string& who) {
  UCCL_EP_THROW(
      "{}: {} handles are not built for HIP (they need the CUDA driver's virtual memory calls); the HIP "
      "build shares GPU memory through IPC handles within one host only ({}=ipc or auto, no MNNVL)",
      who, toString(kind), kMemHandleEnv);
}
#else
// ---- driver entry points ---------------------------------------------------------------------------------------

// The driver ABI the typedefs below name (the _v10020 etc. suffixes are unchanged since CUDA 11); asking by
// version keeps the symbols stable when a newer driver adds variants.
constexpr unsigned int kDriverAbi = 12000;

// Every driver call used here, with the ABI version of its typedef in <cudaTypedefs.h>: the struct member and
// the symbol looked up are generated from this one list, so they cannot disagree.
#define UCCL_EP_DRIVER_CALLS(X)                                                                                    \
  X(cuGetErrorName, 6000)                                                                                          \
  X(cuDeviceGet, 2000) X(cuDeviceGetAttribute, 2000) X(cuMemGetAllocationGranularity, 10020) X(cuMemCreate, 10020) \
      X(cuMemRelease, 10020) X(cuMemAddressReserve, 10020) X(cuMemAddressFree, 10020) X(cuMemMap, 10020)           \
          X(cuMemUnmap, 10020) X(cuMemSetAccess, 10020) X(cuMemExportToShareableHandle, 10020)                     \
              X(cuMemImportFromShareableHandle, 10020)

struct Driver {
#define UCCL_EP_DRIVER_MEMBER(name, abi) PFN_##name##_v##abi name = nullptr;
  UCCL_EP_DRIVER_CALLS(UCCL_EP_DRIVER_MEMBER)
#undef UCCL_EP_DRIVER_MEMBER
};

template <typename Fn>
void entryPoint(const char* symbol, Fn* fn) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
  const cudaError_t e = cudaGetDriverEntryPointByVersion(symbol, &p, kDriverAbi, cudaEnableDefault, &q);
#else
  const cudaError_t e = cudaGetDriverEntryPoint(symbol, &p, cudaEnableDefault, &q);
#endif
  if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || p == nullptr) {
    UCCL_EP_THROW(
        "the CUDA driver offers no {} (ABI {}): {} (query result {}); is the NVIDIA driver installed and "
        "as new as the CUDA runtime?",
        symbol, kDriverAbi, cudaGetErrorString(e), static_cast<int>(q));
  }
  *fn = reinterpret_cast<Fn>(p);
}

// Loaded on first use; a failure throws and the next call tries again.
const Driver& driver() {
  static const Driver d = [] {
    Driver r;
#define UCCL_EP_DRIVER_LOAD(name, abi) entryPoint(#name, &r.name);
    UCCL_EP_DRIVER_CALLS(UCCL_EP_DRIVER_LOAD)
#undef UCCL_EP_DRIVER_LOAD
    return r;
  }();
  return d;
}

std::string cuErrorName(CUresult r) {
  const char* name = nullptr;
  if (driver().cuGetErrorName(r, &name) != CUDA_SUCCESS || name == nullptr) return fmt::format("CUresult {}", int(r));
  return name;
}

#define UCCL_EP_CU_OR_THROW(expr, ...)                                                              \
  do {                                                                                              \
    const CUresult uccl_ep_r_ = (expr);                                                             \
    if (uccl_ep_r_ != CUDA_SUCCESS) {                                                               \
      UCCL_EP_THROW("{}: {} failed: {}", fmt::format(__VA_ARGS__), #expr, cuErrorName(uccl_ep_r_)); \
    }                                                                                               \
  } while (0)

void logCu(CUresult r, const char* what) {
  if (r != CUDA_SUCCESS) log().error("uccl-ep shared memory release: {} failed: {}", what, cuErrorName(r));
}
#endif  // !UCCL_EP_HIP

// Tear-down paths log instead of throwing.
void logCuda(cudaError_t e, const char* what) { runtime::logCuda(e, what, "shared memory release"); }

// Makes `device` current (with its primary context, which the driver calls need) for one scope, then restores
// the caller's device. Never throws by itself: create/open call require(), destructors log().
class DeviceScope {
 public:
  explicit DeviceScope(int device) noexcept : device_(device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    error_ = cudaSetDevice(device);
    if (error_ == cudaSuccess) {
      error_ = cudaFree(nullptr);
      call_ = "cudaFree(nullptr) (creating the primary context)";
    }
  }
  ~DeviceScope() {
    if (previous_ >= 0 && previous_ != device_) static_cast<void>(cudaSetDevice(previous_));
  }
  void require(const std::string& who) const {
    UCCL_EP_CUDA_OR_THROW(error_, "{}: {} on device {}", who, call_, device_);
  }
  void logFailure() const { logCuda(error_, call_); }

 private:
  int device_ = 0;
  int previous_ = -1;
  cudaError_t error_ = cudaSuccess;
  const char* call_ = "cudaSetDevice";
};

#if !defined(UCCL_EP_HIP)
CUmemAllocationHandleType vmmHandleType(HandleKind kind) {
  return kind == HandleKind::kFabric ? CU_MEM_HANDLE_TYPE_FABRIC : CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
}

CUmemAllocationProp vmmProp(CUdevice dev, HandleKind kind) {
  CUmemAllocationProp prop;
  std::memset(&prop, 0, sizeof(prop));
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = dev;
  prop.requestedHandleTypes = vmmHandleType(kind);
  return prop;
}

CUdevice cuDevice(int device, const std::string& who) {
  CUdevice dev = 0;
  UCCL_EP_CU_OR_THROW(driver().cuDeviceGet(&dev, device), "{}: device {}", who, device);
  return dev;
}

// Reserves an address range for r.vmm_handle (r.mapped_bytes, a multiple of the granularity), maps it and grants
// this device read/write. r records each step as it succeeds, so that release() undoes exactly what was done.
void mapVmm(MappedRange& r, size_t alignment, CUdevice dev, const std::string& who) {
  const Driver& d = driver();
  CUdeviceptr base = 0;
  UCCL_EP_CU_OR_THROW(d.cuMemAddressReserve(&base, r.mapped_bytes, alignment, 0, 0), "{}: reserving {} bytes", who,
                      r.mapped_bytes);
  r.ptr = reinterpret_cast<void*>(base);
  UCCL_EP_CU_OR_THROW(d.cuMemMap(base, r.mapped_bytes, 0, r.vmm_handle, 0), "{}: mapping", who);
  r.vmm_mapped = true;
  CUmemAccessDesc access;
  std::memset(&access, 0, sizeof(access));
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = dev;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  UCCL_EP_CU_OR_THROW(d.cuMemSetAccess(base, r.mapped_bytes, &access, 1), "{}: granting device {} access", who, dev);
}
#endif  // !UCCL_EP_HIP

// Undoes whatever part of a create() (owner) or open() happened. Waits for the device first: kernels may still
// use the memory (cudaFree waits too, cuMemUnmap does not). Never throws.
void release(const MappedRange& r, bool owner) noexcept {
  if (r.ptr == nullptr && r.vmm_handle == 0) return;
  try {
    DeviceScope scope(r.device);
    scope.logFailure();
    logCuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    if (r.kind == HandleKind::kCudaIpc) {
      logCuda(owner ? cudaFree(r.ptr) : cudaIpcCloseMemHandle(r.ptr), owner ? "cudaFree" : "cudaIpcCloseMemHandle");
      return;
    }
#if !defined(UCCL_EP_HIP)
    const Driver& d = driver();
    const CUdeviceptr base = reinterpret_cast<CUdeviceptr>(r.ptr);
    if (r.vmm_mapped) logCu(d.cuMemUnmap(base, r.mapped_bytes), "cuMemUnmap");
    if (r.ptr != nullptr) logCu(d.cuMemAddressFree(base, r.mapped_bytes), "cuMemAddressFree");
    if (r.vmm_handle != 0) logCu(d.cuMemRelease(r.vmm_handle), "cuMemRelease");
#endif
  } catch (const std::exception& e) {
    log().error("uccl-ep shared memory release: {}", e.what());
  }
}

#if !defined(UCCL_EP_HIP)
size_t granularity(const CUmemAllocationProp& prop, CUmemAllocationGranularity_flags option, const std::string& who) {
  size_t g = 0;
  UCCL_EP_CU_OR_THROW(driver().cuMemGetAllocationGranularity(&g, &prop, option), "{}: allocation granularity", who);
  UCCL_EP_CHECK(g > 0, "{}: the driver reports an allocation granularity of 0", who);
  return g;
}

// ---- NVML, loaded with dlopen (no link dependency; absent on CPU machines) -------------------------------------

// The NVML types we read, spelled here because nvml.h is not part of the CUDA toolkit headers we build with.
// Layouts follow NVML's nvmlGpuFabricInfo_t (v1, no version field) and nvmlGpuFabricInfo_v2_t.
using NvmlReturn = int;  // nvmlReturn_t; 0 is NVML_SUCCESS
using NvmlDevice = void*;
constexpr unsigned char kNvmlFabricStateCompleted = 3;  // NVML_GPU_FABRIC_STATE_COMPLETED

struct NvmlFabricInfoV1 {
  unsigned char cluster_uuid[16];
  NvmlReturn status;
  unsigned int clique_id;
  unsigned char state;
};
struct NvmlFabricInfoV2 {
  unsigned int version;  // sizeof | 2 << 24, as NVML_STRUCT_VERSION builds it
  unsigned char cluster_uuid[16];
  NvmlReturn status;
  unsigned int clique_id;
  unsigned char state;
  unsigned int health_mask;
};
static_assert(sizeof(NvmlFabricInfoV1) == 28 && offsetof(NvmlFabricInfoV1, state) == 24, "nvmlGpuFabricInfo_t");
static_assert(sizeof(NvmlFabricInfoV2) == 36 && offsetof(NvmlFabricInfoV2, clique_id) == 24 &&
                  offsetof(NvmlFabricInfoV2, health_mask) == 32,
              "nvmlGpuFabricInfo_v2_t");

std::string formatDomain(const unsigned char (&uuid)[16], unsigned int clique_id) {
  std::string hex;
  bool all_zero = true;
  for (unsigned char b : uuid) {
    hex += fmt::format("{:02x}", b);
    all_zero = all_zero && b == 0;
  }
  return all_zero ? "" : fmt::format("{}:{}", hex, clique_id);
}

#endif  // !UCCL_EP_HIP

}  // namespace

// ---- handle kind -----------------------------------------------------------------------------------------------

HandleSupport queryHandleSupport(int device) {
  const std::string who = fmt::format("device {} handle support", device);
  DeviceScope scope(device);
  scope.require(who);
  HandleSupport s;
  s.device = device;
#if defined(UCCL_EP_HIP)
  return s;  // IPC handles only: no VMM, no POSIX-fd or fabric handles
#else
  const Driver& d = driver();
  const CUdevice dev = cuDevice(device, who);
  UCCL_EP_CU_OR_THROW(d.cuDeviceGetAttribute(&s.vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev),
                      "{}", who);
  UCCL_EP_CU_OR_THROW(
      d.cuDeviceGetAttribute(&s.posix_fd, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, dev), "{}",
      who);
  UCCL_EP_CU_OR_THROW(d.cuDeviceGetAttribute(&s.fabric, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED, dev), "{}",
                      who);
  return s;
#endif
}

HandleKind chooseHandleKind(bool single_host, int device) {
  const std::optional<HandleKind> requested = memHandleSetting();  // a bad value throws before CUDA is touched
#if defined(UCCL_EP_HIP)
  if (requested && *requested != HandleKind::kCudaIpc) hipOnlyIpc(*requested, fmt::format("device {}", device));
  if (!single_host) hipOnlyIpc(HandleKind::kFabric, fmt::format("device {}, NVLink peers on other hosts", device));
#endif
  const HandleKind kind = resolveHandleKind(requested, single_host, queryHandleSupport(device));
  log().debug("device {}: NVLink peers share memory through {} handles ({}={}, {})", device, toString(kind),
              kMemHandleEnv, requested ? toString(*requested) : "auto", single_host ? "one host" : "several hosts");
  return kind;
}

// The attribute says the driver knows the handle type; whether this process may create one depends on the IMEX
// channels (/dev/nvidia-caps-imex-channels), which an H100 without a fabric lacks although it reports 1. So a
// one-granule fabric allocation is tried once per device.
bool fabricHandlesSupported(int device) {
  static std::mutex mu;
  static std::map<int, bool> known;
#if defined(UCCL_EP_HIP)
  (void)device;
  return false;
#endif
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = known.find(device); it != known.end()) return it->second;
  bool ok = false;
  try {
    const HandleSupport s = queryHandleSupport(device);
    if (s.vmm != 0 && s.fabric != 0) {
      SharedAllocation::create(1, device, HandleKind::kFabric, -1);
      ok = true;
    }
  } catch (const std::exception& e) {
    log().debug("fabric handles unusable on device {}: {}", device, e.what());
  }
  known[device] = ok;
  return ok;
}

std::string fabricDomainId(int device) {
#if defined(UCCL_EP_HIP)
  (void)device;
  return "";  // no NVLink fabric, no NVML
#else
  using InitFn = NvmlReturn (*)();
  using HandleFn = NvmlReturn (*)(const char*, NvmlDevice*);
  using InfoFn = NvmlReturn (*)(NvmlDevice, void*);
  try {
    char bus_id[32] = {};
    if (cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device) != cudaSuccess) return "";
    // Kept open for the life of the process, like the driver itself.
    static void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return "";
    auto init = reinterpret_cast<InitFn>(dlsym(lib, "nvmlInit_v2"));
    auto shutdown = reinterpret_cast<InitFn>(dlsym(lib, "nvmlShutdown"));
    auto by_bus = reinterpret_cast<HandleFn>(dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2"));
    auto info_v = reinterpret_cast<InfoFn>(dlsym(lib, "nvmlDeviceGetGpuFabricInfoV"));
    auto info_v1 = reinterpret_cast<InfoFn>(dlsym(lib, "nvmlDeviceGetGpuFabricInfo"));
    if (init == nullptr || shutdown == nullptr || by_bus == nullptr || (info_v == nullptr && info_v1 == nullptr)) {
      return "";
    }
    if (init() != 0) return "";
    std::string id;
    NvmlDevice dev = nullptr;
    if (by_bus(bus_id, &dev) == 0) {
      NvmlFabricInfoV2 v2;
      std::memset(&v2, 0, sizeof(v2));
      v2.version = static_cast<unsigned int>(sizeof(v2) | (2u << 24));
      NvmlFabricInfoV1 v1;
      std::memset(&v1, 0, sizeof(v1));
      // Versioned query first; older drivers (or a version they do not know) fall back to the original one.
      if (info_v != nullptr && info_v(dev, &v2) == 0) {
        if (v2.state == kNvmlFabricStateCompleted && v2.status == 0) id = formatDomain(v2.cluster_uuid, v2.clique_id);
      } else if (info_v1 != nullptr && info_v1(dev, &v1) == 0) {
        if (v1.state == kNvmlFabricStateCompleted && v1.status == 0) id = formatDomain(v1.cluster_uuid, v1.clique_id);
      }
    }
    shutdown();
    return id;
  } catch (...) {
    return "";
  }
#endif
}

// ---- SharedAllocation ------------------------------------------------------------------------------------------

std::unique_ptr<SharedAllocation> SharedAllocation::create(size_t bytes, int device, HandleKind kind, int rank) {
  const std::string who =
      fmt::format("rank {}: shared allocation ({} handle, {} bytes, device {})", rank, toString(kind), bytes, device);
  UCCL_EP_CHECK(bytes > 0, "{}: nothing to allocate", who);
  std::unique_ptr<SharedAllocation> a(new SharedAllocation());
  MappedRange& r = a->range_;
  r.kind = kind;
  r.device = device;
  r.bytes = bytes;
  a->rank_ = rank;
  DeviceScope scope(device);
  scope.require(who);

  if (kind == HandleKind::kCudaIpc) {
    r.mapped_bytes = bytes;
    UCCL_EP_CUDA_OR_THROW(cudaMalloc(&r.ptr, bytes), "{}", who);
    cudaIpcMemHandle_t h;
    static_assert(sizeof(h) == kOpaqueHandleBytes, "cudaIpcMemHandle_t size");
    UCCL_EP_CUDA_OR_THROW(cudaIpcGetMemHandle(&h, r.ptr), "{}", who);
    a->handle_.assign(reinterpret_cast<const char*>(&h), sizeof(h));
  } else {
#if defined(UCCL_EP_HIP)
    hipOnlyIpc(kind, who);
#else
    const Driver& d = driver();
    const CUdevice dev = cuDevice(device, who);
    CUmemAllocationProp prop = vmmProp(dev, kind);
    // RDMA NICs may later register this memory (dma-buf); only ask where the device allows it.
    int rdma = 0;
    if (d.cuDeviceGetAttribute(&rdma, CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED, dev) ==
            CUDA_SUCCESS &&
        rdma != 0) {
      prop.allocFlags.gpuDirectRDMACapable = 1;
    }
    const size_t gran = granularity(prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED, who);
    r.mapped_bytes = (bytes + gran - 1) / gran * gran;
    UCCL_EP_CU_OR_THROW(
        d.cuMemCreate(&r.vmm_handle, r.mapped_bytes, &prop, 0), "{}: creating {} bytes{}", who, r.mapped_bytes,
        kind == HandleKind::kFabric ? " (fabric handles need IMEX channels: /dev/nvidia-caps-imex-channels)" : "");
    mapVmm(r, gran, dev, who);
    if (kind == HandleKind::kFabric) {
      CUmemFabricHandle fh;
      static_assert(sizeof(fh) == kOpaqueHandleBytes, "CUmemFabricHandle size");
      UCCL_EP_CU_OR_THROW(d.cuMemExportToShareableHandle(&fh, r.vmm_handle, CU_MEM_HANDLE_TYPE_FABRIC, 0),
                          "{}: exporting the fabric handle", who);
      a->handle_.assign(reinterpret_cast<const char*>(&fh), sizeof(fh));
    } else {
      int fd = -1;
      UCCL_EP_CU_OR_THROW(
          d.cuMemExportToShareableHandle(&fd, r.vmm_handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
          "{}: exporting the fd", who);
      a->fd_server_ = std::make_unique<FdServer>(fd, fmt::format("rank {}'s shared allocation", rank));
      a->handle_ = a->fd_server_->name();
    }
#endif
  }
  // Peers read flags in this memory as soon as they map it: zero it, and finish before the blob goes out.
  UCCL_EP_CUDA_OR_THROW(cudaMemset(r.ptr, 0, r.mapped_bytes), "{}: zeroing", who);
  UCCL_EP_CUDA_OR_THROW(cudaDeviceSynchronize(), "{}: zeroing", who);
  log().debug("{}: {} bytes mapped at {}", who, r.mapped_bytes, r.ptr);
  return a;
}

SharedAllocation::~SharedAllocation() {
  fd_server_.reset();  // no peer may receive the fd of memory being freed
  release(range_, /*owner=*/true);
}

std::string SharedAllocation::exportBlob() const {
  SharedBlob b;
  b.kind = range_.kind;
  b.owner_rank = rank_;
  b.bytes = range_.bytes;
  b.mapped_bytes = range_.mapped_bytes;
  b.handle = handle_;
  return encodeSharedBlob(b);
}

// ---- PeerMapping -----------------------------------------------------------------------------------------------

std::unique_ptr<PeerMapping> PeerMapping::open(const std::string& blob, int device, int peer_rank,
                                               uint64_t timeout_ns) {
  const SharedBlob b = decodeSharedBlob(blob, peer_rank);
  const std::string who = fmt::format("mapping rank {}'s shared allocation ({} handle, {} bytes) on device {}",
                                      peer_rank, toString(b.kind), b.bytes, device);
  UCCL_EP_CHECK(b.owner_rank == peer_rank, "{}: the blob was exported by rank {}", who, b.owner_rank);
  std::unique_ptr<PeerMapping> m(new PeerMapping());
  MappedRange& r = m->range_;
  r.kind = b.kind;
  r.device = device;
  r.bytes = b.bytes;
  r.mapped_bytes = b.mapped_bytes;
  m->peer_rank_ = peer_rank;
  DeviceScope scope(device);
  scope.require(who);

  if (b.kind == HandleKind::kCudaIpc) {
    cudaIpcMemHandle_t h;
    std::memcpy(&h, b.handle.data(), sizeof(h));
    UCCL_EP_CUDA_OR_THROW(cudaIpcOpenMemHandle(&r.ptr, h, cudaIpcMemLazyEnablePeerAccess), "{}", who);
    return m;
  }
#if defined(UCCL_EP_HIP)
  (void)timeout_ns;  // only fd handles wait for a peer's socket
  hipOnlyIpc(b.kind, who);
#else
  const Driver& d = driver();
  const CUdevice dev = cuDevice(device, who);
  const size_t gran = granularity(vmmProp(dev, b.kind), CU_MEM_ALLOC_GRANULARITY_MINIMUM, who);
  UCCL_EP_CHECK(b.mapped_bytes % gran == 0, "{}: {} mapped bytes are not a multiple of this device's granularity {}",
                who, b.mapped_bytes, gran);
  if (b.kind == HandleKind::kFabric) {
    CUmemFabricHandle fh;
    std::memcpy(&fh, b.handle.data(), sizeof(fh));
    UCCL_EP_CU_OR_THROW(d.cuMemImportFromShareableHandle(&r.vmm_handle, &fh, CU_MEM_HANDLE_TYPE_FABRIC),
                        "{}: importing the fabric handle (both ranks need the same IMEX channel)", who);
  } else {
    struct FdCloser {  // the imported handle holds its own reference to the memory
      int fd;
      ~FdCloser() { ::close(fd); }
    } fd{receiveFd(b.handle, peer_rank, timeout_ns)};
    UCCL_EP_CU_OR_THROW(
        d.cuMemImportFromShareableHandle(&r.vmm_handle, reinterpret_cast<void*>(static_cast<intptr_t>(fd.fd)),
                                         CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
        "{}: importing the fd received from socket @{}", who, b.handle);
  }
  mapVmm(r, gran, dev, who);
  log().debug("{}: mapped at {}", who, r.ptr);
  return m;
#endif
}

PeerMapping::~PeerMapping() { release(range_, /*owner=*/false); }

}  // namespace uccl::ep::runtime
