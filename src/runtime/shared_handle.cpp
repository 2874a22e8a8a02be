#include "runtime/shared_handle.hpp"

#include <climits>

#include "uccl_ep/transport/transport.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::runtime {
namespace {

using transport::Blob;

// The attribute a kind needs, when the device reports it as 0 (nullptr: the kind is usable).
const char* missingAttribute(HandleKind kind, const HandleSupport& s) {
  if (kind == HandleKind::kCudaIpc) return nullptr;
  if (s.vmm == 0) return "CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED";
  if (kind == HandleKind::kPosixFd && s.posix_fd == 0)
    return "CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED";
  if (kind == HandleKind::kFabric && s.fabric == 0) return "CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED";
  return nullptr;
}

}  // namespace

std::string toString(HandleKind kind) {
  switch (kind) {
    case HandleKind::kCudaIpc:
      return "ipc";
    case HandleKind::kPosixFd:
      return "fd";
    case HandleKind::kFabric:
      return "fabric";
  }
  return fmt::format("unknown handle kind {}", static_cast<uint32_t>(kind));
}

std::optional<HandleKind> parseMemHandleSetting(const std::string& value) {
  if (value.empty() || value == "auto") return std::nullopt;
  for (HandleKind k : {HandleKind::kCudaIpc, HandleKind::kPosixFd, HandleKind::kFabric}) {
    if (value == toString(k)) return k;
  }
  UCCL_EP_THROW("environment variable {}='{}' is not a memory handle kind (expected auto, ipc, fd or fabric)",
                kMemHandleEnv, value);
}

std::optional<HandleKind> memHandleSetting() { return parseMemHandleSetting(envString(kMemHandleEnv).value_or("")); }

HandleKind resolveHandleKind(std::optional<HandleKind> requested, bool single_host, const HandleSupport& support) {
  const HandleKind kind = requested.value_or(single_host ? HandleKind::kCudaIpc : HandleKind::kFabric);
  const std::string why = requested ? fmt::format("{}={}", kMemHandleEnv, toString(kind))
                                    : fmt::format("{}=auto with NVLink peers on {}", kMemHandleEnv,
                                                  single_host ? "this host only" : "other hosts");
  if (!single_host && kind != HandleKind::kFabric) {
    UCCL_EP_THROW(
        "{}, but some NVLink peers are on other hosts: {} handles reach only this host; use fabric (or "
        "auto) for a multi-node NVLink domain",
        why, toString(kind));
  }
  if (const char* attr = missingAttribute(kind, support)) {
    UCCL_EP_THROW("{} needs {} handles, but device {} reports {}=0{}", why, toString(kind), support.device, attr,
                  kind == HandleKind::kFabric
                      ? " (fabric handles need an NVLink fabric: IMEX channels and a driver that offers them)"
                      : "");
  }
  return kind;
}

std::string encodeSharedBlob(const SharedBlob& b) {
  Blob out;
  transport::appendU64(out, kSharedBlobMagic);
  transport::appendU64(out, kSharedBlobVersion);
  transport::appendU64(out, static_cast<uint64_t>(b.kind));
  transport::appendU64(out, static_cast<uint64_t>(static_cast<int64_t>(b.owner_rank)));
  transport::appendU64(out, b.bytes);
  transport::appendU64(out, b.mapped_bytes);
  transport::appendBlob(out, Blob(b.handle.begin(), b.handle.end()));
  return std::string(out.begin(), out.end());
}

SharedBlob decodeSharedBlob(const std::string& blob, int peer_rank) {
  const Blob in(blob.begin(), blob.end());
  SharedBlob b;
  size_t off = 0;
  try {
    const uint64_t magic = transport::readU64(in, &off);
    if (magic != kSharedBlobMagic) {
      UCCL_EP_THROW("it does not start with the uccl-ep shared memory tag ({:#x}, expected {:#x})", magic,
                    kSharedBlobMagic);
    }
    const uint64_t version = transport::readU64(in, &off);
    if (version != kSharedBlobVersion) {
      UCCL_EP_THROW("format version {} (this rank speaks version {}): every rank must run the same uccl-ep build",
                    version, kSharedBlobVersion);
    }
    const uint64_t kind = transport::readU64(in, &off);
    if (kind < static_cast<uint64_t>(HandleKind::kCudaIpc) || kind > static_cast<uint64_t>(HandleKind::kFabric)) {
      UCCL_EP_THROW("unknown handle kind tag {} (expected 1 ipc, 2 fd or 3 fabric)", kind);
    }
    b.kind = static_cast<HandleKind>(kind);
    const int64_t owner = static_cast<int64_t>(transport::readU64(in, &off));
    if (owner < 0 || owner > INT_MAX) UCCL_EP_THROW("owner rank {} is out of range", owner);
    b.owner_rank = static_cast<int>(owner);
    b.bytes = transport::readU64(in, &off);
    b.mapped_bytes = transport::readU64(in, &off);
    const Blob handle = transport::readBlob(in, &off);
    b.handle.assign(handle.begin(), handle.end());
    if (off != in.size()) UCCL_EP_THROW("{} trailing bytes after the last field", in.size() - off);
    if (b.bytes == 0 || b.mapped_bytes < b.bytes || (b.kind == HandleKind::kCudaIpc && b.mapped_bytes != b.bytes)) {
      UCCL_EP_THROW("inconsistent sizes: {} bytes asked for, {} mapped", b.bytes, b.mapped_bytes);
    }
    if (b.kind == HandleKind::kPosixFd ? b.handle.empty() : b.handle.size() != kOpaqueHandleBytes) {
      UCCL_EP_THROW("a {} handle of {} bytes (expected {})", toString(b.kind), b.handle.size(),
                    b.kind == HandleKind::kPosixFd ? "a socket name" : std::to_string(kOpaqueHandleBytes));
    }
  } catch (const Error& e) {
    UCCL_EP_THROW("malformed shared memory blob from rank {} ({} bytes): {}", peer_rank, blob.size(), e.what());
  }
  return b;
}

}  // namespace uccl::ep::runtime
