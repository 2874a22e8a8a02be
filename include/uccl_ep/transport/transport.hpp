// The transport interface: one endpoint that moves bytes and signals to peers' registered memory.
//
// One Transport object belongs to one proxy thread (no locking inside). Peer i's endpoint for the same thread
// index is its counterpart: addresses are exchanged per thread, and a write posted here lands in memory that
// peer registered with its own transport of the same index.
//
// Backends: fabric/ (libfabric FI_EP_RDM: efa, tcp;ofi_rxm, shm), verbs/ (libibverbs RC), null/ (no bytes
// moved; for measuring the ring and proxy alone, and a loopback that delivers to itself).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "uccl_ep/util/blob.hpp"

namespace uccl::ep::transport {

// The byte blob and its little-endian helpers live in util/ (the bootstrap uses them too, and sits beside the
// transport, not above it); these names keep the transport's callers as they were.
using ep::appendBlob;
using ep::appendLe;
using ep::appendU64;
using ep::Blob;
using ep::loadLe;
using ep::readBlob;
using ep::readU64;

enum Capability : uint32_t {
  kNativeAtomics = 1u << 0,    // remote 64-bit fetch-add executed by the target NIC/provider
  kRemoteCqData = 1u << 1,     // write with immediate data, delivered to the target's poll() after the data
  kGpuMemory = 1u << 2,        // registerMemory accepts device memory
  kOrderedDelivery = 1u << 3,  // writes and atomics to one peer are placed in posting order
  kCumulativeCompletions = 1u << 4,  // a local completion also completes every earlier request to that peer
                                     // (RC verbs), so only the last request of a chain needs to be signaled
};

enum class MemoryKind : uint8_t { kHost = 0, kDevice = 1 };

// What a peer needs to write into a registered region. Every backend serialises the same fields.
struct RemoteMemory {
  uint64_t addr = 0;  // the address to name in the backend's RMA calls (virtual address or offset)
  uint64_t key = 0;   // rkey / fi_mr_key
  uint64_t size = 0;
};

struct LocalMemory {
  uint32_t id = 0;  // names the region in WorkRequest::local_mem
  void* base = nullptr;
  size_t size = 0;
  RemoteMemory remote;  // what the peers get (encode with encodeRemote)
};

enum class OpKind : uint8_t {
  kWrite = 0,     // local -> remote
  kWriteImm = 1,  // local -> remote, then `imm` appears in the target's poll() as kRemoteData
  kFetchAdd = 2,  // *(int64*)(remote + remote_offset) += (int64)imm, executed at the target
};

struct WorkRequest {
  OpKind kind = OpKind::kWrite;
  bool signaled = true;  // false: no local completion (verbs selective signalling); never for the last one
  uint32_t peer = 0;
  uint32_t local_mem = 0;
  uint64_t local_offset = 0;
  uint64_t length = 0;
  RemoteMemory remote;
  uint64_t remote_offset = 0;
  uint64_t imm = 0;
  uint64_t wr_id = 0;
};

struct Completion {
  enum class Kind : uint8_t { kLocal = 0, kRemoteData = 1 };
  Kind kind = Kind::kLocal;
  bool ok = true;
  uint32_t peer = UINT32_MAX;  // the peer the op went to (kLocal) or came from (kRemoteData), when known
  int error = 0;               // backend error code when !ok
  uint64_t wr_id = 0;          // kLocal: the request's wr_id (a completion covers every unsignaled one before)
  uint64_t imm = 0;            // kRemoteData
};

class Transport {
 public:
  virtual ~Transport() = default;

  virtual std::string name() const = 0;  // e.g. "fabric/tcp;ofi_rxm", "verbs/mlx5_0:1", "null"
  virtual uint32_t capabilities() const = 0;
  virtual uint32_t immediateBytes() const = 0;  // bytes of immediate data per write (0 without kRemoteCqData)

  // This endpoint's address, for the peers; then the table of all ranks' addresses (index = rank, own
  // included). connect() may block until the peers answer, bounded by the timeout given at creation.
  virtual Blob address() const = 0;
  virtual void connect(const std::vector<Blob>& addresses) = 0;

  virtual LocalMemory registerMemory(void* base, size_t size, MemoryKind kind) = 0;
  virtual void deregisterMemory(uint32_t id) = 0;

  // Posts requests in order. Returns how many were taken (fewer when the send queue is full: post the rest
  // later). Never blocks. Failures to post throw uccl::ep::Error naming the peer.
  virtual size_t post(const WorkRequest* requests, size_t count) = 0;

  // Drives progress (target-side too: some providers move data only while polled) and returns up to `max`
  // completions. Never blocks.
  virtual size_t poll(Completion* out, size_t max) = 0;

  // A readable account of a failed completion (cold path).
  virtual std::string describe(const Completion& c) const = 0;

  // True only when the transport knows that `peer` is gone for good; false when alive or unknown. Cheap: asked by a
  // proxy waiting on that peer (which also judges same-host peers by their pid itself). No backend knows more than
  // the proxy today; test transports say it.
  virtual bool peerGone(uint32_t peer) const {
    (void)peer;
    return false;
  }
};

struct TransportOptions {
  std::string kind = "auto";  // verbs | efa | tcp | shm | null | auto  (UCCL_EP_TRANSPORT)
  int rank = 0;
  int world = 1;
  int thread_index = 0;
  std::string ifname;       // UCCL_SOCKET_IFNAME, for tcp
  int gpu_device = -1;      // CUDA device whose memory may be registered (-1: none)
  // libfabric: whether to ask the provider for FI_HMEM so that gpu_device's memory can be registered (kGpuMemory):
  // "auto" where granted, "on" required (open fails otherwise), "off" never. Only with gpu_device >= 0.
  std::string fabric_hmem = "auto";
  uint64_t timeout_ns = 0;  // bound on connect()
  bool all_peers_local = false;  // every rank runs on this host (lets "auto" pick shm)
};

// Picks and opens a backend; "auto" tries efa, then shm when every rank is on this host, else tcp.
// Throws uccl::ep::Error naming what was asked and what is available.
std::unique_ptr<Transport> createTransport(const TransportOptions& options);

Blob encodeRemote(const RemoteMemory& m);
RemoteMemory decodeRemote(const Blob& b);  // throws on a malformed blob

}  // namespace uccl::ep::transport
