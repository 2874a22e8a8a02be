#include "proxy/proxy_thread.hpp"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "proxy/endpoint_info.hpp"
#include "proxy/signal_rules.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/log.hpp"
#include "uccl_ep/util/process.hpp"

namespace uccl::ep::proxy {

using ring::Decoded;
using ring::Descriptor;
using ring::Opcode;
using transport::Completion;
using transport::OpKind;
using transport::WorkRequest;

namespace {
constexpr size_t kQueueCapacity = 256;  // requests waiting to be posted, per peer
constexpr size_t kUnackedCapacity = 4096;  // posted, not yet covered by a completion, per peer
constexpr size_t kPollBatch = 256;
constexpr int kPositionBits = 48;
constexpr uint64_t kPositionMask = (uint64_t{1} << kPositionBits) - 1;
// enable_shrink: how long an operation waits before the proxy asks whether its peer's process still exists, and
// how often it asks again. Far below UCCL_EP_TIMEOUT_SECS, so that a dead same-host peer is dropped before the
// GPU's wait for a live peer (queued behind it in the ring) times out.
constexpr uint64_t kLivenessCheckNs = 100ull * 1000 * 1000;
constexpr uint64_t kGoneGraceNs = 500ull * 1000 * 1000;  // peerOfFailure: how long a killed peer may take to be gone

// The counters have one writer (this thread): a relaxed load and store, not a locked read-modify-write.
void bump(std::atomic<uint64_t>& c, uint64_t n) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

uint64_t wrId(uint32_t ring_index, uint64_t pos) {
  return (uint64_t{ring_index} << kPositionBits) | (pos & kPositionMask);
}
}  // namespace

ProxyThread::ProxyThread(int index, const ProxyConfig& config, ProxyGroup::ErrorSlot* error, StallBoard* board,
                         DeadPeers* dead)
    : index_(index),
      config_(config),
      error_(error),
      board_(board),
      dead_(dead),
      abandoned_(static_cast<size_t>(config.world), 0),
      posting_(board->addPosting(fmt::format("proxy thread {}", index))),
      transport_(config.openTransport(index)) {}

ProxyThread::~ProxyThread() {
  stop();
  for (uint32_t i = 0; i < ring::kMaxRegions; ++i) {
    if (has_region_[i]) transport_->deregisterMemory(regions_[i].id);
  }
  if (signals_ != nullptr) transport_->deregisterMemory(signal_mr_.id);
}

void ProxyThread::addRegion(uint32_t index, void* base, size_t size, transport::MemoryKind kind) {
  // A region registered again replaces the earlier one (a runtime falling back to host memory after some threads
  // registered device memory).
  if (has_region_[index]) {
    has_region_[index] = false;
    transport_->deregisterMemory(regions_[index].id);
  }
  regions_[index] = transport_->registerMemory(base, size, kind);
  has_region_[index] = true;
}

void ProxyThread::setSignalRegion(int64_t* counters, size_t count) {
  signal_mr_ = transport_->registerMemory(counters, count * sizeof(int64_t), transport::MemoryKind::kHost);
  signals_ = counters;
  num_signals_ = count;
}

void ProxyThread::addRing(const ring::RingView& view, RingKind kind) {
  auto r = std::make_unique<RingState>();
  r->consumer = ring::RingConsumer(view);
  r->kind = kind;
  r->index = static_cast<uint32_t>(rings_.size());
  const uint64_t capacity = uint64_t{1} << view.capacity_log2;
  const uint64_t cap = kind == RingKind::kNormal ? config_.max_inflight_normal : config_.max_inflight_low_latency;
  r->max_inflight = (cap == 0 || cap > capacity) ? capacity : cap;
  r->mask = capacity - 1;
  r->pending.assign(capacity, 0);
  r->bytes.assign(capacity, 0);
  r->peer.assign(capacity, 0);
  r->board = board_->addRing(fmt::format("ring {} (proxy thread {})", view.ring_id, index_));
  rings_.push_back(std::move(r));
}

transport::Blob ProxyThread::localInfo() const {
  transport::RemoteMemory regions[ring::kMaxRegions];
  for (uint32_t i = 0; i < ring::kMaxRegions; ++i) {
    if (has_region_[i]) regions[i] = regions_[i].remote;
  }
  return encodeEndpointInfo(transport_->address(), regions, signals_ ? &signal_mr_.remote : nullptr);
}

void ProxyThread::connect(const std::vector<transport::Blob>& infos) {
  std::vector<transport::Blob> addresses(infos.size());
  peers_.assign(infos.size(), PeerTable{});
  peer_pids_.assign(infos.size(), 0);
  const std::string space = processSpace();
  for (size_t rank = 0; rank < infos.size(); ++rank) {
    EndpointInfo info = decodeEndpointInfo(infos[rank]);
    addresses[rank] = std::move(info.address);
    peers_[rank] = info.table;
    if (!space.empty() && info.process_space == space) peer_pids_[rank] = info.pid;
  }
  transport_->connect(addresses);

  const uint32_t caps = transport_->capabilities();
  ordered_ = (caps & transport::kOrderedDelivery) != 0;
  cumulative_ = (caps & transport::kCumulativeCompletions) != 0;
  immediates_ = ImmediateCodec(transport_->immediateBytes());
  signal_path_ = resolveSignalPath(config_.signal_path, *transport_);
  queues_.assign(infos.size(), PeerQueue{});
  for (auto& q : queues_) {
    q.requests.resize(kQueueCapacity);
    q.ring_of.resize(kQueueCapacity);
    if (cumulative_) q.unacked.resize(kUnackedCapacity);
  }
  completions_.resize(kPollBatch);
  active_peers_.assign(infos.size(), 0);
  num_active_ = 0;
}

void ProxyThread::start() {
  stop_.store(false);
  thread_ = std::thread([this] { run(); });
}

void ProxyThread::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void ProxyThread::run() {
  const std::string name = fmt::format("uccl-proxy-{}", index_);
  pthread_setname_np(pthread_self(), name.c_str());
  if (config_.numa_node >= 0 && !pinToNumaNode(config_.numa_node)) {
    log().warn("proxy thread {}: could not pin to NUMA node {}", index_, config_.numa_node);
  }
  uint32_t idle = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    bool progress = false;
    try {
      if (!failed_) {
        for (auto& r : rings_) progress |= drainRing(*r);
        progress |= flushQueues();
      }
      // Polled even after a failure: peers may still need this endpoint's target-side progress.
      progress |= pollCompletions();
      if (!failed_) {
        for (auto& r : rings_) retire(*r);
      }
    } catch (const std::exception& e) {
      fail(e.what());
    }
    if (progress) {
      idle = 0;
    } else if (config_.yield_when_idle) {
      platform::spinRelax(idle);
    }
  }
}

bool ProxyThread::drainRing(RingState& r) {
  bool any = false;
  Descriptor d;
  for (uint32_t n = 0; n < config_.max_batch; ++n) {
    const uint64_t pos = r.consumer.position();
    if (pos - r.completed >= r.max_inflight) break;  // flow control: UCCL_IB_MAX_INFLIGHT_{NORMAL,LOW_LATENCY}
    if (!r.consumer.peek(&d)) break;
    bool blocked = false;
    if (!handleDescriptor(r, pos, d, &blocked)) break;
    if (blocked) break;
    r.consumer.advance();
    any = true;
  }
  if (any) r.consumer.publishTail();
  return any;
}

bool ProxyThread::handleDescriptor(RingState& r, uint64_t pos, const Descriptor& d, bool* blocked) {
  const Decoded x = ring::decode(d);
  auto reject = [&](const std::string& why) {
    fail(fmt::format("ring {} (proxy thread {}) rejected the descriptor at position {} ({:#018x} {:#018x}): {}",
                     r.consumer.view().ring_id, index_, pos, d.hi, d.lo, why));
    return false;
  };
  if (x.version != ring::kDescriptorVersion) {
    return reject(fmt::format("version {} (expected {})", x.version, ring::kDescriptorVersion));
  }
  if (x.opcode != Opcode::kNop && x.dst_rank >= static_cast<uint32_t>(config_.world)) {
    return reject(fmt::format("destination rank {} is not below the world size {}", x.dst_rank, config_.world));
  }
  const uint64_t slot = pos & r.mask;
  r.peer[slot] = static_cast<uint16_t>(x.dst_rank);
  if (x.opcode != Opcode::kNop && config_.enable_shrink && dead_->isDead(x.dst_rank)) {
    if (!abandoned_[x.dst_rank]) abandonPeer(x.dst_rank);
    r.pending[slot] = 0;  // complete without being sent: nobody is there to receive it
    return true;
  }
  switch (x.opcode) {
    case Opcode::kNop:
      if (x.reserved != 0) return reject("reserved bits of a NOP are not zero");
      r.pending[slot] = 0;
      return true;

    case Opcode::kWrite: {
      if (!has_region_[x.src_region]) return reject(fmt::format("source region {} is not registered", x.src_region));
      const transport::LocalMemory& src = regions_[x.src_region];
      const transport::RemoteMemory& dst = peers_[x.dst_rank].regions[x.dst_region];
      if (x.length == 0) return reject("zero-length write");
      if (x.src_offset + x.length > src.size) {
        return reject(fmt::format("source bytes [{}, {}) exceed region {} of {} bytes", x.src_offset,
                                  x.src_offset + x.length, x.src_region, src.size));
      }
      if (dst.size == 0) return reject(fmt::format("rank {} has no region {}", x.dst_rank, x.dst_region));
      if (x.dst_offset + x.length > dst.size) {
        return reject(fmt::format("destination bytes [{}, {}) exceed region {} of rank {} ({} bytes)", x.dst_offset,
                                  x.dst_offset + x.length, x.dst_region, x.dst_rank, dst.size));
      }
      if (config_.max_inflight_bytes != 0 && inflight_bytes_ != 0 &&
          inflight_bytes_ + x.length > config_.max_inflight_bytes) {
        *blocked = true;  // UCCL_IB_MAX_INFLIGHT_BYTES: wait for completions
        return true;
      }
      WorkRequest* w = enqueue(x.dst_rank, OpKind::kWrite, r.index, pos);
      if (w == nullptr) {
        *blocked = true;
        return true;
      }
      w->local_mem = src.id;
      w->local_offset = x.src_offset;
      w->length = x.length;
      w->remote = dst;
      w->remote_offset = x.dst_offset;
      r.pending[slot] = 1;
      r.bytes[slot] = static_cast<uint32_t>(x.length);
      inflight_bytes_ += x.length;
      bump(counters_.writes, 1);
      bump(counters_.bytes, x.length);
      return true;
    }

    case Opcode::kSignal: {
      if (x.reserved != 0) return reject("reserved bits of a SIGNAL are not zero");
      const PeerTable& peer = peers_[x.dst_rank];
      if (x.signal_index >= peer.num_signals) {
        return reject(fmt::format("signal index {} is not below the {} counters of rank {}", x.signal_index,
                                  peer.num_signals, x.dst_rank));
      }
      // A signal may only become visible after every earlier descriptor of this ring is. Ordered transports
      // place it after them by themselves; otherwise (and for the local shortcut) wait until they completed.
      const bool earlier_in_flight = r.completed < pos;
      if (static_cast<int>(x.dst_rank) == config_.rank) {
        if (earlier_in_flight) {
          *blocked = true;
          return true;
        }
        __atomic_fetch_add(&signals_[x.signal_index], int64_t{x.signal_value}, __ATOMIC_RELEASE);
        r.pending[slot] = 0;
        bump(counters_.signals_sent, 1);
        return true;
      }
      if (!ordered_ && earlier_in_flight) {
        *blocked = true;
        return true;
      }
      PeerQueue& q = queues_[x.dst_rank];
      if (signal_path_ == SignalPath::kImmediate) {
        bool fits = false;
        const uint64_t imm = immediates_.encode(x.signal_index, x.signal_value, &fits);
        if (!fits) {
          return reject(fmt::format("signal index {} and value {} do not fit the {}-byte immediate of {}",
                                    x.signal_index, x.signal_value, transport_->immediateBytes(),
                                    transport_->name()));
        }
        if (ordered_ && q.size > 0 && q.ring_of[q.size - 1] == r.index && q.requests[q.size - 1].kind == OpKind::kWrite) {
          // The data write right before it carries the signal: one message instead of two.
          q.requests[q.size - 1].kind = OpKind::kWriteImm;
          q.requests[q.size - 1].imm = imm;
          r.pending[slot] = 0;
          bump(counters_.signals_sent, 1);
          return true;
        }
      }
      // A zero-length write carrying the immediate, or a fetch-add on the counter itself.
      const bool immediate = signal_path_ == SignalPath::kImmediate;
      WorkRequest* w = enqueue(x.dst_rank, immediate ? OpKind::kWriteImm : OpKind::kFetchAdd, r.index, pos);
      if (w == nullptr) {
        *blocked = true;
        return true;
      }
      w->local_mem = signal_mr_.id;
      w->remote = peer.signals;
      if (immediate) {
        w->imm = immediates_.encode(x.signal_index, x.signal_value, nullptr);
      } else {
        w->remote_offset = uint64_t{x.signal_index} * sizeof(int64_t);
        w->imm = static_cast<uint64_t>(int64_t{x.signal_value});
      }
      r.pending[slot] = 1;
      bump(counters_.signals_sent, 1);
      return true;
    }

    default:
      return reject(fmt::format("unknown opcode {}", static_cast<unsigned>(x.opcode)));
  }
}

WorkRequest* ProxyThread::enqueue(uint32_t peer, OpKind kind, uint32_t ring_index, uint64_t pos) {
  PeerQueue& q = queues_[peer];
  if (q.size == kQueueCapacity) return nullptr;
  if (q.size == 0) active_peers_[num_active_++] = peer;
  WorkRequest& w = q.requests[q.size];
  w = WorkRequest{};
  w.kind = kind;
  w.peer = peer;
  w.wr_id = wrId(ring_index, pos);
  q.ring_of[q.size++] = ring_index;
  return &w;
}

void ProxyThread::applyImmediate(const Completion& c) {
  uint64_t index;
  int64_t value;
  immediates_.decode(c.imm, &index, &value);
  if (index >= num_signals_) {
    fail(fmt::format("peer {} sent a signal for counter {}, but rank {} has {} counters", c.peer, index, config_.rank,
                     num_signals_));
    return;
  }
  __atomic_fetch_add(&signals_[index], value, __ATOMIC_RELEASE);
  bump(counters_.signals_applied, 1);
}

bool ProxyThread::flushQueues() {
  bool any = false;
  // Only peers with queued requests are visited; a peer whose queue empties leaves the list.
  size_t kept = 0;
  for (size_t a = 0; a < num_active_; ++a) {
    const uint32_t peer = active_peers_[a];
    PeerQueue& q = queues_[peer];
    any |= flushQueue(peer, q);
    if (q.size > 0) active_peers_[kept++] = peer;
  }
  num_active_ = kept;
  return any;
}

bool ProxyThread::flushQueue(uint32_t peer, PeerQueue& q) {
  size_t n = q.size;
  if (cumulative_) {
    // One completion per post covers the chain: only its last request is signaled. A post the transport takes
    // only part of leaves an unsignaled tail, covered by the signaled last request of a later post.
    n = std::min(n, kUnackedCapacity - q.unacked_size);
    if (n == 0) return false;
    for (size_t i = 0; i < n; ++i) q.requests[i].signaled = i + 1 == n;
  }
  // A post that does not return (a shm peer stopped while it held the lock of its queue) shows on the board.
  StallBoard::set(posting_, peer, platform::nowNs());
  size_t taken = 0;
  try {
    taken = transport_->post(q.requests.data(), n);
  } catch (const Error& e) {
    StallBoard::clear(posting_);
    if (!config_.enable_shrink || static_cast<int>(peer) == config_.rank) throw;
    declareDead(peer, fmt::format("a post to it failed: {}", e.what()));
    return true;
  }
  StallBoard::clear(posting_);
  if (taken == 0) return false;
  bump(counters_.posts, 1);
  if (cumulative_) {
    for (size_t i = 0; i < taken; ++i) {
      q.unacked[(q.unacked_head + q.unacked_size++) % kUnackedCapacity] = q.requests[i].wr_id;
    }
  }
  if (taken < q.size) {
    std::memmove(q.requests.data(), q.requests.data() + taken, (q.size - taken) * sizeof(WorkRequest));
    std::memmove(q.ring_of.data(), q.ring_of.data() + taken, (q.size - taken) * sizeof(uint32_t));
  }
  q.size -= taken;
  return true;
}

bool ProxyThread::pollCompletions() {
  const size_t n = transport_->poll(completions_.data(), completions_.size());
  bump(counters_.polls, 1);
  for (size_t i = 0; i < n; ++i) {
    const Completion& c = completions_[i];
    // An abandoned peer's operation, completed already: known by its peer, or (a transport that names none) by its
    // wr_id, so that the set is looked up only then.
    if (any_abandoned_ && c.kind == Completion::Kind::kLocal &&
        (c.peer < abandoned_.size() ? abandoned_[c.peer] != 0 : forgotten_.erase(c.wr_id) > 0)) {
      continue;
    }
    if (!c.ok) {
      const uint32_t peer = peerOfFailure(c);
      const bool known = peer < abandoned_.size() && static_cast<int>(peer) != config_.rank;
      if (known && config_.enable_shrink) {
        declareDead(peer, fmt::format("an operation {} it failed: {}",
                                      c.kind == Completion::Kind::kLocal ? "to" : "from", transport_->describe(c)));
        continue;
      }
      // An incoming failure put on a gone peer by peerOfFailure: say so, the transport named nobody.
      const bool gone = known && c.kind == Completion::Kind::kRemoteData && c.peer >= abandoned_.size();
      fail(fmt::format("proxy thread {}: transport {} reported a failed operation: {}{}", index_, transport_->name(),
                       transport_->describe(c),
                       gone ? fmt::format(" (rank {}'s process is gone: the operation is likely its write)", peer)
                            : std::string()));
      continue;
    }
    if (c.kind == Completion::Kind::kRemoteData) {
      applyImmediate(c);
      continue;
    }
    if (!cumulative_) {
      completeOne(c.wr_id);
      continue;
    }
    PeerQueue& q = queues_.at(c.peer);
    bool found = false;
    while (q.unacked_size > 0 && !found) {
      const uint64_t wr = q.unacked[q.unacked_head];
      q.unacked_head = (q.unacked_head + 1) % kUnackedCapacity;
      --q.unacked_size;
      found = wr == c.wr_id;
      completeOne(wr);
    }
    if (!found) {
      fail(fmt::format("proxy thread {}: completion {:#x} from peer {} matches nothing posted to it", index_, c.wr_id,
                       c.peer));
    }
  }
  return n > 0;
}

void ProxyThread::completeOne(uint64_t wr_id) {
  const uint32_t ring_index = static_cast<uint32_t>(wr_id >> kPositionBits);
  if (ring_index >= rings_.size()) {
    fail(fmt::format("proxy thread {}: completion for unknown ring {} (wr_id {:#x})", index_, ring_index, wr_id));
    return;
  }
  RingState& r = *rings_[ring_index];
  const uint64_t slot = wr_id & r.mask;
  if (r.pending[slot] == 0) {
    fail(fmt::format("proxy thread {}: duplicate completion for ring {} slot {}", index_, ring_index, slot));
    return;
  }
  --r.pending[slot];
  inflight_bytes_ -= r.bytes[slot];
  r.bytes[slot] = 0;
}

void ProxyThread::retire(RingState& r) {
  uint64_t c = r.completed;
  const uint64_t end = r.consumer.position();
  while (c < end && r.pending[c & r.mask] == 0) ++c;
  if (c != r.completed) {
    bump(counters_.descriptors, c - r.completed);
    r.completed = c;
    r.consumer.publishCompleted(c);
    if (r.stalled_since_ns != 0) StallBoard::clear(r.board);
    r.stalled_since_ns = 0;
    return;
  }
  if (c == end) {
    if (r.stalled_since_ns != 0) StallBoard::clear(r.board);
    r.stalled_since_ns = 0;
    return;
  }
  // Something is in flight and nothing retired this round: a peer that died or a link that broke shows up
  // here, as a transport may retry for a long time before it reports anything.
  const uint64_t now = platform::nowNs();
  if (r.stalled_since_ns == 0) {
    r.stalled_since_ns = now;
    StallBoard::set(r.board, r.peer[c & r.mask], now);
  } else if (config_.enable_shrink && resolveStall(r, r.peer[c & r.mask], now, now - r.stalled_since_ns)) {
    StallBoard::clear(r.board);  // the peer was dropped: its positions retire in the next round
    r.stalled_since_ns = 0;
  } else if (now - r.stalled_since_ns > config_.timeout_ns) {
    fail(fmt::format("ring {} (proxy thread {}): the operation at position {} to rank {} did not complete within "
                     "{:.1f} s (UCCL_EP_TIMEOUT_SECS); is rank {} alive?{}",
                     r.consumer.view().ring_id, index_, c, r.peer[c & r.mask], config_.timeout_ns / 1e9,
                     r.peer[c & r.mask], board_->describeOthers(r.board, now, config_.timeout_ns / 2)));
  }
}

bool ProxyThread::resolveStall(RingState& r, uint32_t peer, uint64_t now, uint64_t stalled_ns) {
  if (static_cast<int>(peer) == config_.rank) return false;  // this rank's own endpoint is not dropped
  if (dead_->isDead(peer)) {
    abandonPeer(peer);
    return true;
  }
  if (stalled_ns > kLivenessCheckNs && now - r.liveness_checked_ns > kLivenessCheckNs) {
    r.liveness_checked_ns = now;
    if (transport_->peerGone(peer) || processGone(peer_pids_[peer])) {
      declareDead(peer, "its process is gone");
      return true;
    }
  }
  if (stalled_ns > config_.timeout_ns / 2) {
    declareDead(peer, fmt::format("ring {} (proxy thread {}): its operation did not complete within {:.1f} s (half of "
                                  "UCCL_EP_TIMEOUT_SECS)",
                                  r.consumer.view().ring_id, index_, stalled_ns / 1e9));
    return true;
  }
  return false;
}

void ProxyThread::declareDead(uint32_t peer, const std::string& why) {
  if (dead_->declare(peer)) {
    log().warn("rank {}: proxy thread {} declared rank {} dead ({}); its operations complete without being sent "
               "(enable_shrink)",
               config_.rank, index_, peer, why);
  }
  abandonPeer(peer);
}

void ProxyThread::abandonPeer(uint32_t peer) {
  if (abandoned_[peer]) return;
  abandoned_[peer] = 1;
  any_abandoned_ = true;
  if (!queues_.empty()) {
    PeerQueue& q = queues_[peer];
    for (size_t i = 0; i < q.size; ++i) {
      RingState& r = *rings_[q.ring_of[i]];
      const uint64_t slot = q.requests[i].wr_id & r.mask;
      if (r.pending[slot] > 0) --r.pending[slot];
      inflight_bytes_ -= r.bytes[slot];
      r.bytes[slot] = 0;
    }
    q.size = 0;  // flushQueues drops the peer from its active list
    q.unacked_head = q.unacked_size = 0;  // their completions are dropped by peer
  }
  // What is left in flight to the peer was posted: complete it here and forget its completions.
  for (auto& rp : rings_) {
    RingState& r = *rp;
    const uint64_t end = r.consumer.position();
    for (uint64_t pos = r.completed; pos < end; ++pos) {
      const uint64_t slot = pos & r.mask;
      if (r.peer[slot] != peer || r.pending[slot] == 0) continue;
      r.pending[slot] = 0;
      inflight_bytes_ -= r.bytes[slot];
      r.bytes[slot] = 0;
      forgotten_.insert(wrId(r.index, pos));
    }
  }
}

uint32_t ProxyThread::peerOfRequest(uint64_t wr_id) const {
  const uint32_t ring_index = static_cast<uint32_t>(wr_id >> kPositionBits);
  if (ring_index >= rings_.size()) return UINT32_MAX;
  const RingState& r = *rings_[ring_index];
  const uint64_t slot = wr_id & r.mask;
  return r.pending[slot] > 0 ? r.peer[slot] : UINT32_MAX;
}

uint32_t ProxyThread::peerOfFailure(const Completion& c) const {
  if (c.peer < abandoned_.size()) return c.peer;
  if (c.kind == Completion::Kind::kLocal) return peerOfRequest(c.wr_id);
  // An incoming operation that names no source: put on a peer whose process is gone. The failure can come a little
  // before the process is seen gone (shm copying a write out of a rank as it is killed fails while the kernel still
  // tears that process down, before it is a zombie), so the look goes on for up to kGoneGraceNs. Only a failed
  // incoming operation with no source waits here.
  const uint64_t deadline = platform::nowNs() + kGoneGraceNs;
  for (;;) {
    for (uint32_t p = 0; p < peer_pids_.size(); ++p) {
      if (static_cast<int>(p) != config_.rank && (transport_->peerGone(p) || processGone(peer_pids_[p]))) return p;
    }
    if (platform::nowNs() > deadline) return UINT32_MAX;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void ProxyThread::fail(const std::string& message) {
  failed_ = true;
  bool expected = false;
  if (error_->publishing.compare_exchange_strong(expected, true)) {
    error_->message = fmt::format("rank {}: {}", config_.rank, message);
    error_->set.store(true, std::memory_order_release);
    log().error("{}", error_->message);
  }
  publishErrorToRings(1);
}

void ProxyThread::publishErrorToRings(uint64_t code) {
  for (auto& r : rings_) r->consumer.publishError(code);
}

ThreadStats ProxyThread::stats() const {
  ThreadStats s;
  s.descriptors = counters_.descriptors.load(std::memory_order_relaxed);
  s.writes = counters_.writes.load(std::memory_order_relaxed);
  s.bytes = counters_.bytes.load(std::memory_order_relaxed);
  s.signals_sent = counters_.signals_sent.load(std::memory_order_relaxed);
  s.signals_applied = counters_.signals_applied.load(std::memory_order_relaxed);
  s.posts = counters_.posts.load(std::memory_order_relaxed);
  s.polls = counters_.polls.load(std::memory_order_relaxed);
  return s;
}

std::string ProxyThread::dumpState() const {
  std::string out;
  for (const auto& r : rings_) {
    const ring::RingView& v = r->consumer.view();
    // The producer head lives in GPU memory for GPU rings: only the host-side words are shown.
    out += fmt::format("thread {} ring {}: tail {} completed {} error {}\n", index_, v.ring_id,
                       __atomic_load_n(&v.control->tail, __ATOMIC_ACQUIRE),
                       __atomic_load_n(&v.control->completed, __ATOMIC_ACQUIRE),
                       __atomic_load_n(&v.control->error, __ATOMIC_ACQUIRE));
  }
  return out;
}

}  // namespace uccl::ep::proxy
