// One proxy thread: owns some rings and one transport endpoint; drains, validates, batches per destination,
// posts, polls, retires in order, and applies the signals peers send it as immediate data.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "proxy/dead_peers.hpp"
#include "proxy/endpoint_info.hpp"
#include "proxy/signal_rules.hpp"
#include "proxy/stall_board.hpp"
#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/ring/ring.hpp"
#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::proxy {

class ProxyThread {
 public:
  ProxyThread(int index, const ProxyConfig& config, ProxyGroup::ErrorSlot* error, StallBoard* board,
              DeadPeers* dead);
  ~ProxyThread();

  void addRegion(uint32_t index, void* base, size_t size, transport::MemoryKind kind);
  void setSignalRegion(int64_t* counters, size_t count);
  void addRing(const ring::RingView& view, RingKind kind);

  transport::Blob localInfo() const;
  void connect(const std::vector<transport::Blob>& infos);  // this thread's blob of every rank

  void start();
  void stop();

  transport::Transport& transport() { return *transport_; }
  SignalPath signalPath() const { return signal_path_; }
  ThreadStats stats() const;
  std::string dumpState() const;
  void publishErrorToRings(uint64_t code);

 private:
  struct RingState {
    ring::RingConsumer consumer;
    RingKind kind = RingKind::kNormal;
    uint32_t index = 0;         // within this thread (wr_id high bits)
    uint64_t max_inflight = 0;  // descriptors between completed and the consumer position
    uint64_t completed = 0;     // retired and published
    std::vector<uint32_t> pending;  // per slot: transport ops not yet complete (position & mask)
    std::vector<uint32_t> bytes;    // per slot: bytes in flight (for the byte cap)
    std::vector<uint16_t> peer;     // per slot: destination, to name it when it stalls
    uint64_t mask = 0;
    uint64_t stalled_since_ns = 0;  // when the oldest position stopped retiring (0: not stalled)
    uint64_t liveness_checked_ns = 0;  // enable_shrink: when the stalled peer's process was last looked for
    StallBoard::Entry* board = nullptr;  // the same, for the group's other threads to read
  };
  // Requests waiting to be posted to one peer, in ring order.
  struct PeerQueue {
    std::vector<transport::WorkRequest> requests;
    std::vector<uint32_t> ring_of;  // ring index of each request (fusion only joins the same ring)
    size_t size = 0;
    // Selective signalling (cumulative completions only): wr_ids posted to this peer and not yet covered by a
    // completion, oldest first. A completion for X retires everything up to and including X.
    std::vector<uint64_t> unacked;
    size_t unacked_head = 0;
    size_t unacked_size = 0;
  };

  void run();
  bool drainRing(RingState& r);
  bool handleDescriptor(RingState& r, uint64_t pos, const ring::Descriptor& d, bool* blocked);
  bool flushQueues();
  bool flushQueue(uint32_t peer, PeerQueue& q);
  bool pollCompletions();
  void retire(RingState& r);
  void completeOne(uint64_t wr_id);
  void applyImmediate(const transport::Completion& c);
  void fail(const std::string& message);
  // enable_shrink: declares `peer` dead for the group (the first declaration logs `why`) and abandons it here.
  void declareDead(uint32_t peer, const std::string& why);
  // Completes this thread's operations to a dead peer without it: the queued ones unposted, the posted ones by
  // forgetting them (their completions, should any come, are dropped).
  void abandonPeer(uint32_t peer);
  // enable_shrink, the oldest position of `r` stalled on `peer` since `stalled_ns` ago: declares the peer dead when
  // another thread did, when its process is gone, or past half the timeout. True when it did.
  bool resolveStall(RingState& r, uint32_t peer, uint64_t now, uint64_t stalled_ns);
  // The destination of a posted request, from its ring slot; UINT32_MAX when the slot holds nothing in flight.
  uint32_t peerOfRequest(uint64_t wr_id) const;
  // The peer a failed completion is about: the transport's, else a local one's destination; for an incoming
  // operation the transport could not attribute, a peer (not this rank) whose process is gone, as one killed
  // while this rank was taking its write. UINT32_MAX when none is known.
  uint32_t peerOfFailure(const transport::Completion& c) const;
  // The next free request in `peer`'s queue, filled with kind, peer and wr_id; nullptr when the queue is full.
  transport::WorkRequest* enqueue(uint32_t peer, transport::OpKind kind, uint32_t ring_index, uint64_t pos);

  int index_;
  ProxyConfig config_;
  ProxyGroup::ErrorSlot* error_;
  StallBoard* board_;
  DeadPeers* dead_;
  std::vector<uint8_t> abandoned_;             // per peer: abandoned by this thread (enable_shrink)
  bool any_abandoned_ = false;                 // any entry of abandoned_ set: the completion loop looks only then
  std::unordered_set<uint64_t> forgotten_;     // wr_ids posted to abandoned peers, completed here already
  StallBoard::Entry* posting_;  // a transport post() in progress and its peer
  std::unique_ptr<transport::Transport> transport_;
  SignalPath signal_path_ = SignalPath::kImmediate;
  bool ordered_ = false;
  bool cumulative_ = false;  // selective signalling: one signaled request per post
  ImmediateCodec immediates_;

  transport::LocalMemory regions_[ring::kMaxRegions];
  bool has_region_[ring::kMaxRegions] = {};
  int64_t* signals_ = nullptr;
  size_t num_signals_ = 0;
  transport::LocalMemory signal_mr_;

  std::vector<PeerTable> peers_;
  std::vector<int> peer_pids_;  // per peer: its pid where this process can judge it (same processSpace), else 0
  std::vector<std::unique_ptr<RingState>> rings_;
  std::vector<PeerQueue> queues_;
  std::vector<uint32_t> active_peers_;  // peers whose queue is not empty, each once
  size_t num_active_ = 0;
  std::vector<transport::Completion> completions_;
  uint64_t inflight_bytes_ = 0;

  std::thread thread_;
  std::atomic<bool> stop_{false};
  bool failed_ = false;

  // Written by this thread only, read by stats() from others.
  struct Counters {
    std::atomic<uint64_t> descriptors{0}, writes{0}, bytes{0}, signals_sent{0}, signals_applied{0}, posts{0},
        polls{0};
  };
  Counters counters_;
};

}  // namespace uccl::ep::proxy
