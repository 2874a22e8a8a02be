// A transport for proxy tests: records every posted request and completes them only when the test says so,
// in any order, so in-order retirement, flow control and signal ordering can be observed.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::proxy::testing {

struct HeldState {
  std::mutex mu;
  std::vector<transport::WorkRequest> posted;       // every request, in posting order
  std::vector<size_t> post_sizes;                   // requests per post() call
  std::deque<transport::Completion> ready;          // what the next poll() returns
  std::vector<transport::LocalMemory> regions;
  std::vector<uint32_t> deregistered;  // ids, in order
  uint32_t caps = transport::kRemoteCqData | transport::kNativeAtomics | transport::kOrderedDelivery;
  uint32_t imm_bytes = 8;
  size_t accept_per_post = SIZE_MAX;  // emulate a full send queue
  // A post to this peer does not return until `unblocked` (a shm peer stopped while it held its queue's lock).
  int block_posts_to = -1;
  bool unblocked = false;
  int blocked_posts = 0;
  int gone_peer = -1;  // peerGone() is true for this peer (its process ended)
  std::condition_variable cv;

  void unblock() {
    std::lock_guard<std::mutex> g(mu);
    unblocked = true;
    cv.notify_all();
  }

  size_t postedCount() {
    std::lock_guard<std::mutex> g(mu);
    return posted.size();
  }
  // Completes posted request i (copying the bytes when `deliver`, as a loopback would).
  void complete(size_t i, bool ok = true) {
    std::lock_guard<std::mutex> g(mu);
    transport::Completion c;
    c.kind = transport::Completion::Kind::kLocal;
    c.ok = ok;
    c.error = ok ? 0 : 5;
    c.peer = posted.at(i).peer;
    c.wr_id = posted.at(i).wr_id;
    ready.push_back(c);
  }
  // An incoming operation that failed at this rank, its source unknown (shm reading a write out of a process
  // that was killed meanwhile).
  void remoteFailure() {
    std::lock_guard<std::mutex> g(mu);
    transport::Completion c;
    c.kind = transport::Completion::Kind::kRemoteData;
    c.ok = false;
    c.error = 5;
    c.peer = UINT32_MAX;
    ready.push_back(c);
  }
  void remoteData(uint64_t imm, uint32_t peer) {
    std::lock_guard<std::mutex> g(mu);
    transport::Completion c;
    c.kind = transport::Completion::Kind::kRemoteData;
    c.peer = peer;
    c.imm = imm;
    ready.push_back(c);
  }
};

class HeldTransport final : public transport::Transport {
 public:
  explicit HeldTransport(HeldState* s) : s_(s) {}
  std::string name() const override { return "held"; }
  uint32_t capabilities() const override { return s_->caps; }
  uint32_t immediateBytes() const override { return s_->imm_bytes; }
  transport::Blob address() const override { return {1}; }
  void connect(const std::vector<transport::Blob>&) override {}
  transport::LocalMemory registerMemory(void* base, size_t size, transport::MemoryKind) override {
    std::lock_guard<std::mutex> g(s_->mu);
    transport::LocalMemory m;
    m.id = static_cast<uint32_t>(s_->regions.size());
    m.base = base;
    m.size = size;
    m.remote = transport::RemoteMemory{reinterpret_cast<uint64_t>(base), 100 + m.id, size};
    s_->regions.push_back(m);
    return m;
  }
  void deregisterMemory(uint32_t id) override {
    std::lock_guard<std::mutex> g(s_->mu);
    s_->deregistered.push_back(id);
  }
  size_t post(const transport::WorkRequest* r, size_t n) override {
    std::unique_lock<std::mutex> g(s_->mu);
    if (n > 0 && static_cast<int>(r[0].peer) == s_->block_posts_to) {  // a post holds requests to one peer
      ++s_->blocked_posts;
      s_->cv.wait(g, [&] { return s_->unblocked; });
    }
    const size_t take = std::min(n, s_->accept_per_post);
    s_->posted.insert(s_->posted.end(), r, r + take);
    if (take) s_->post_sizes.push_back(take);
    return take;
  }
  size_t poll(transport::Completion* out, size_t max) override {
    std::lock_guard<std::mutex> g(s_->mu);
    size_t n = 0;
    while (n < max && !s_->ready.empty()) {
      out[n++] = s_->ready.front();
      s_->ready.pop_front();
    }
    return n;
  }
  bool peerGone(uint32_t peer) const override {
    std::lock_guard<std::mutex> g(s_->mu);
    return static_cast<int>(peer) == s_->gone_peer;
  }
  std::string describe(const transport::Completion& c) const override {
    return "held transport: operation to peer " + std::to_string(c.peer) + " failed";
  }

 private:
  HeldState* s_;
};

}  // namespace uccl::ep::proxy::testing
