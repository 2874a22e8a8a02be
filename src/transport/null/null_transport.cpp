// The null transport: every request completes at the next poll without touching a network.
//
// Without loopback it moves no bytes at all, which measures what the ring and the proxy cost by themselves.
// With loopback, requests addressed to this rank are carried out in memory, so a single process exercises
// the proxy end to end (writes land, immediates come back as kRemoteData, fetch-adds add).
#include <atomic>
#include <cstring>
#include <vector>

#include "transport/backends.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport {
namespace {

class NullTransport final : public Transport {
 public:
  NullTransport(const TransportOptions& o, bool loopback)
      : rank_(o.rank), world_(o.world), loopback_(loopback) {
    // Fixed capacity: the hot path never allocates.
    pending_.resize(kQueueDepth);
  }

  std::string name() const override { return loopback_ ? "null/loopback" : "null"; }
  uint32_t capabilities() const override { return kNativeAtomics | kRemoteCqData | kOrderedDelivery; }
  uint32_t immediateBytes() const override { return 8; }

  Blob address() const override { return Blob{static_cast<uint8_t>(rank_)}; }
  void connect(const std::vector<Blob>& addresses) override {
    if (addresses.size() != static_cast<size_t>(world_)) {
      UCCL_EP_THROW("null transport: connect got {} addresses, expected world size {}", addresses.size(), world_);
    }
  }

  LocalMemory registerMemory(void* base, size_t size, MemoryKind kind) override {
    if (kind == MemoryKind::kDevice && loopback_) {
      UCCL_EP_THROW("null/loopback transport cannot touch device memory (region at {} of {} bytes)", base, size);
    }
    LocalMemory m;
    m.id = static_cast<uint32_t>(regions_.size());
    m.base = base;
    m.size = size;
    m.remote = RemoteMemory{reinterpret_cast<uint64_t>(base), m.id, size};
    regions_.push_back(m);
    return m;
  }
  void deregisterMemory(uint32_t id) override {
    if (id >= regions_.size()) UCCL_EP_THROW("null transport: no registered region {}", id);
    regions_[id].base = nullptr;
  }

  size_t post(const WorkRequest* reqs, size_t count) override {
    size_t taken = 0;
    for (; taken < count && size_ < kQueueDepth; ++taken) {
      const WorkRequest& r = reqs[taken];
      if (loopback_ && static_cast<int>(r.peer) == rank_) execute(r);
      Completion& c = pending_[(head_ + size_++) % kQueueDepth];
      c = Completion{};
      c.peer = r.peer;
      c.wr_id = r.wr_id;
      c.kind = r.signaled ? Completion::Kind::kLocal : kSkip;
      if (loopback_ && r.kind == OpKind::kWriteImm && static_cast<int>(r.peer) == rank_) {
        remote_imm_[remote_count_++ % kQueueDepth] = r.imm;
      }
    }
    return taken;
  }

  size_t poll(Completion* out, size_t max) override {
    size_t n = 0;
    while (n < max && remote_done_ < remote_count_) {
      Completion c;
      c.kind = Completion::Kind::kRemoteData;
      c.peer = static_cast<uint32_t>(rank_);
      c.imm = remote_imm_[remote_done_++ % kQueueDepth];
      out[n++] = c;
    }
    while (n < max && size_ > 0) {
      const Completion& c = pending_[head_];
      head_ = (head_ + 1) % kQueueDepth;
      --size_;
      if (c.kind != kSkip) out[n++] = c;
    }
    return n;
  }

  std::string describe(const Completion& c) const override {
    return fmt::format("null transport completion wr_id={} ok={}", c.wr_id, c.ok);
  }

 private:
  static constexpr size_t kQueueDepth = 4096;
  static constexpr Completion::Kind kSkip = static_cast<Completion::Kind>(0xff);

  void execute(const WorkRequest& r) {
    auto* dst = reinterpret_cast<uint8_t*>(r.remote.addr) + r.remote_offset;
    if (r.kind == OpKind::kFetchAdd) {
      __atomic_fetch_add(reinterpret_cast<int64_t*>(dst), static_cast<int64_t>(r.imm), __ATOMIC_RELEASE);
      return;
    }
    const LocalMemory& src = regions_.at(r.local_mem);
    if (r.length) std::memcpy(dst, static_cast<const uint8_t*>(src.base) + r.local_offset, r.length);
  }

  int rank_;
  int world_;
  bool loopback_;
  std::vector<LocalMemory> regions_;
  std::vector<Completion> pending_;
  size_t head_ = 0;
  size_t size_ = 0;
  uint64_t remote_imm_[kQueueDepth] = {};
  uint64_t remote_count_ = 0;
  uint64_t remote_done_ = 0;
};

}  // namespace

std::unique_ptr<Transport> createNullTransport(const TransportOptions& options, bool loopback) {
  return std::make_unique<NullTransport>(options, loopback);
}

}  // namespace uccl::ep::transport
