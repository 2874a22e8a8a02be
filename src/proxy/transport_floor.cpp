// The transport floor (uccl_ep/proxy/transport_floor.hpp): lanes that post a plan's writes and signals straight
// through their endpoints, and run(), which times a plan until this rank's expected counters are complete.
#include "uccl_ep/proxy/transport_floor.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <thread>

#include "proxy/endpoint_info.hpp"
#include "proxy/signal_rules.hpp"
#include "uccl_ep/platform/clock.hpp"
#include "uccl_ep/ring/descriptor.hpp"
#include "uccl_ep/util/error.hpp"
#include "uccl_ep/util/interrupt.hpp"
#include "uccl_ep/util/log.hpp"

namespace uccl::ep::proxy {

using transport::Completion;
using transport::OpKind;
using transport::WorkRequest;

namespace {

constexpr size_t kPollBatch = 256;
constexpr uint32_t kDataRegion = 0;
constexpr uint64_t kSignalBit = 1;  // wr_id = lane op index << 1, | 1 for the op's separate signal

// One endpoint and the thread that drives it. The run's work (requests, deferred) is written by run() only while the
// lane has finished every earlier generation, and read by the lane thread after it sees the new generation in `go`.
struct Lane {
  int index = 0;
  std::unique_ptr<transport::Transport> t;
  transport::LocalMemory data_mr, signal_mr;
  std::vector<PeerTable> peers;

  std::vector<WorkRequest> requests;  // posted in this order
  std::vector<WorkRequest> deferred;  // [lane op] its signal, posted once its write completed (no ordered delivery)
  std::vector<uint8_t> has_deferred;  // [lane op]
  std::vector<uint32_t> op_peer;      // [lane op]
  size_t num_deferred = 0;

  // Lane thread only.
  uint64_t run_gen = 0;
  bool active = false;
  size_t next = 0;                // requests posted
  std::vector<WorkRequest> late;  // deferred signals released by completions, in release order
  size_t late_next = 0;           // of late, posted
  size_t deferred_left = 0;       // deferred signals not yet released
  uint64_t outstanding = 0;       // posted, not yet completed
  std::vector<Completion> completions;

  std::unique_ptr<std::atomic<uint32_t>[]> pending_to;  // [rank] posted and not completed: names a stalled peer
  std::atomic<uint64_t> go{0};                          // the generation run() asks for
  std::atomic<uint64_t> finished{0};                    // the last generation whose ops all completed
  std::atomic<uint64_t> finished_ns{0};
  std::thread thread;
};

}  // namespace

struct TransportFloor::State {
  ProxyConfig config;
  std::vector<std::unique_ptr<Lane>> lanes;
  std::vector<int64_t> counters;      // num_signals plan counters, then one start word per source rank
  size_t num_signals = 0;
  std::vector<int64_t> starts_expected;  // [rank] start signals from that rank so far (cumulative)
  size_t data_bytes = 0;
  bool connected = false;
  SignalPath signal_path = SignalPath::kImmediate;
  bool ordered = false;
  ImmediateCodec immediates;
  uint64_t generation = 0;
  std::atomic<bool> stop{false};
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  std::string error;

  // Records the first failure; returns `message` as it would be raised.
  std::string fail(const std::string& message) {
    const std::string text = fmt::format("rank {}: transport floor: {}", config.rank, message);
    std::lock_guard<std::mutex> g(error_mu);
    if (!failed.load(std::memory_order_relaxed)) {
      error = text;
      log().error("{}", error);
    }
    failed.store(true, std::memory_order_release);
    return text;
  }
  void throwIfFailed() {
    if (!failed.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> g(error_mu);
    throw Error(error);
  }

  void laneLoop(Lane& l);
  bool postSome(Lane& l);
  bool pollSome(Lane& l);
  void applyImmediate(const Completion& c);
  void build(const FloorPlan& plan);
  void startTogether(const FloorPlan& plan);
  size_t startWord(int source) const { return num_signals + static_cast<size_t>(source); }
  void validate(const FloorPlan& plan) const;
  std::string describeStall(const FloorPlan& plan, size_t first_unmet, uint64_t gen) const;
};

TransportFloor::TransportFloor(const ProxyConfig& config, void* data, size_t data_bytes, transport::MemoryKind kind,
                               size_t num_signals)
    : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.config = config;
  if (s.config.numa_node < 0 && !s.config.gpu_pci_bus_id.empty()) {
    s.config.numa_node = numaNodeOfPciDevice(s.config.gpu_pci_bus_id);
  }
  UCCL_EP_CHECK(config.num_threads >= 1, "transport floor: {} lanes (expected at least 1)", config.num_threads);
  UCCL_EP_CHECK(config.rank >= 0 && config.rank < config.world, "transport floor: rank {} is not in [0, {})",
                config.rank, config.world);
  UCCL_EP_CHECK(data != nullptr && data_bytes > 0 && num_signals > 0,
                "transport floor needs a data region and at least one counter (got {} bytes at {}, {} counters)",
                data_bytes, data, num_signals);
  s.data_bytes = data_bytes;
  s.num_signals = num_signals;
  s.counters.assign(num_signals + static_cast<size_t>(config.world), 0);
  s.starts_expected.assign(static_cast<size_t>(config.world), 0);
  for (int t = 0; t < config.num_threads; ++t) {
    auto l = std::make_unique<Lane>();
    l->index = t;
    l->t = s.config.openTransport(t);
    l->data_mr = l->t->registerMemory(data, data_bytes, kind);
    l->signal_mr =
        l->t->registerMemory(s.counters.data(), s.counters.size() * sizeof(int64_t), transport::MemoryKind::kHost);
    l->completions.resize(kPollBatch);
    l->pending_to = std::make_unique<std::atomic<uint32_t>[]>(config.world);
    s.lanes.push_back(std::move(l));
  }
}

TransportFloor::~TransportFloor() {
  stop();
  for (auto& l : s_->lanes) {
    try {
      l->t->deregisterMemory(l->data_mr.id);
      l->t->deregisterMemory(l->signal_mr.id);
    } catch (const std::exception& e) {
      log().error("transport floor (rank {}): deregistering lane {}: {}", s_->config.rank, l->index, e.what());
    }
  }
}

transport::Blob TransportFloor::localInfo() const {
  transport::Blob out;
  transport::appendU64(out, s_->lanes.size());
  for (const auto& l : s_->lanes) {
    transport::RemoteMemory regions[ring::kMaxRegions];
    regions[kDataRegion] = l->data_mr.remote;
    transport::appendBlob(out, encodeEndpointInfo(l->t->address(), regions, &l->signal_mr.remote));
  }
  return out;
}

void TransportFloor::connect(const std::vector<transport::Blob>& infos) {
  State& s = *s_;
  UCCL_EP_CHECK(!s.connected, "transport floor (rank {}): connect called twice", s.config.rank);
  UCCL_EP_CHECK(infos.size() == static_cast<size_t>(s.config.world),
                "transport floor (rank {}): connect got {} infos for a world of {}", s.config.rank, infos.size(),
                s.config.world);
  std::vector<std::vector<EndpointInfo>> per_lane(s.lanes.size(), std::vector<EndpointInfo>(infos.size()));
  for (size_t rank = 0; rank < infos.size(); ++rank) {
    size_t off = 0;
    const uint64_t n = transport::readU64(infos[rank], &off);
    UCCL_EP_CHECK(n == s.lanes.size(),
                  "transport floor: rank {} has {} lanes, rank {} has {}: set UCCL_EP_NUM_PROXY_THREADS alike on every "
                  "rank",
                  rank, n, s.config.rank, s.lanes.size());
    for (auto& lane : per_lane) lane[rank] = decodeEndpointInfo(transport::readBlob(infos[rank], &off));
  }
  for (size_t t = 0; t < s.lanes.size(); ++t) {
    Lane& l = *s.lanes[t];
    std::vector<transport::Blob> addresses;
    for (auto& info : per_lane[t]) {
      addresses.push_back(std::move(info.address));
      l.peers.push_back(info.table);
    }
    l.t->connect(addresses);
  }
  const transport::Transport& t0 = *s.lanes.front()->t;
  s.signal_path = resolveSignalPath(s.config.signal_path, t0);
  s.ordered = (t0.capabilities() & transport::kOrderedDelivery) != 0;
  s.immediates = ImmediateCodec(t0.immediateBytes());
  s.connected = true;
  for (auto& l : s.lanes) {
    Lane* lane = l.get();
    l->thread = std::thread([this, lane] { s_->laneLoop(*lane); });
  }
  log().info("transport floor (rank {}): {} lanes on {}, signals {}, ordered delivery {}", s.config.rank,
             s.lanes.size(), t0.name(), s.signal_path == SignalPath::kAtomic ? "atomic" : "immediate", s.ordered);
}

void TransportFloor::stop() {
  s_->stop.store(true);
  for (auto& l : s_->lanes) {
    if (l->thread.joinable()) l->thread.join();
  }
}

int TransportFloor::numLanes() const { return static_cast<int>(s_->lanes.size()); }
std::string TransportFloor::transportName() const { return s_->lanes.front()->t->name(); }
SignalPath TransportFloor::signalPath() const { return s_->signal_path; }
int64_t TransportFloor::counter(size_t index) const {
  return __atomic_load_n(&s_->counters.at(index), __ATOMIC_ACQUIRE);
}

// ---- lane threads ------------------------------------------------------------------------------------------
void TransportFloor::State::laneLoop(Lane& l) {
  const std::string name = fmt::format("uccl-floor-{}", l.index);
  pthread_setname_np(pthread_self(), name.c_str());
  if (config.numa_node >= 0 && !pinToNumaNode(config.numa_node)) {
    log().warn("transport floor lane {}: could not pin to NUMA node {}", l.index, config.numa_node);
  }
  uint32_t idle = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    bool progress = false;
    try {
      const uint64_t g = l.go.load(std::memory_order_acquire);
      if (g != l.run_gen) {
        l.run_gen = g;
        l.active = true;
        l.next = l.late_next = 0;
        l.late.clear();
        l.deferred_left = l.num_deferred;
        l.outstanding = 0;
      }
      if (l.active && !failed.load(std::memory_order_relaxed)) progress |= postSome(l);
      // Polled even when idle or failed: peers may still need this endpoint's target-side progress.
      progress |= pollSome(l);
      if (l.active && l.next == l.requests.size() && l.deferred_left == 0 && l.late_next == l.late.size() &&
          l.outstanding == 0) {
        l.active = false;
        l.finished_ns.store(platform::nowNs(), std::memory_order_relaxed);
        l.finished.store(l.run_gen, std::memory_order_release);
      }
    } catch (const std::exception& e) {
      fail(fmt::format("lane {}: {}", l.index, e.what()));
    }
    // Between runs a lane yields its core after a short spin; in a run it spins as a proxy thread does.
    if (progress) {
      idle = 0;
    } else if (!l.active || config.yield_when_idle) {
      platform::spinRelax(idle);
    }
  }
}

bool TransportFloor::State::postSome(Lane& l) {
  bool any = false;
  auto post = [&](std::vector<WorkRequest>& reqs, size_t& next) {
    if (next == reqs.size()) return;
    const size_t taken = l.t->post(reqs.data() + next, reqs.size() - next);
    for (size_t i = next; i < next + taken; ++i) {
      auto& p = l.pending_to[reqs[i].peer];
      p.store(p.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    next += taken;
    l.outstanding += taken;
    any |= taken > 0;
  };
  post(l.late, l.late_next);
  post(l.requests, l.next);
  return any;
}

bool TransportFloor::State::pollSome(Lane& l) {
  const size_t n = l.t->poll(l.completions.data(), l.completions.size());
  for (size_t i = 0; i < n; ++i) {
    const Completion& c = l.completions[i];
    if (!c.ok) UCCL_EP_THROW("{} reported a failed operation: {}", l.t->name(), l.t->describe(c));
    if (c.kind == Completion::Kind::kRemoteData) {
      applyImmediate(c);
      continue;
    }
    const uint64_t op = c.wr_id >> 1;
    UCCL_EP_CHECK(l.outstanding > 0 && op < l.op_peer.size(),
                  "lane {}: completion {:#x} from peer {} matches nothing "
                  "posted",
                  l.index, c.wr_id, c.peer);
    --l.outstanding;
    auto& p = l.pending_to[l.op_peer[op]];
    p.store(p.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    if ((c.wr_id & kSignalBit) == 0 && l.has_deferred[op]) {
      l.late.push_back(l.deferred[op]);  // capacity reserved by build(): no allocation here
      --l.deferred_left;
    }
  }
  return n > 0;
}

void TransportFloor::State::applyImmediate(const Completion& c) {
  uint64_t index;
  int64_t value;
  immediates.decode(c.imm, &index, &value);
  if (index >= counters.size()) {
    UCCL_EP_THROW("peer {} sent a signal for counter {}, but rank {} has {} counters", c.peer, index, config.rank,
                  counters.size());
  }
  __atomic_fetch_add(&counters[index], value, __ATOMIC_RELEASE);
}

// ---- run ---------------------------------------------------------------------------------------------------
void TransportFloor::State::validate(const FloorPlan& plan) const {
  const int world = config.world;
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    const FloorOp& o = plan.ops[i];
    if (o.lane >= lanes.size() || o.peer >= static_cast<uint32_t>(world)) {
      UCCL_EP_THROW_ARG("transport floor: op {} names lane {} and peer {} (have {} lanes, {} ranks)", i, o.lane, o.peer,
                        lanes.size(), world);
    }
    const PeerTable& peer = lanes[o.lane]->peers[o.peer];
    if (o.bytes > 0 &&
        (o.src_offset + o.bytes > data_bytes || o.dst_offset + o.bytes > peer.regions[kDataRegion].size)) {
      UCCL_EP_THROW_ARG(
          "transport floor: op {} writes {} bytes from offset {} to offset {} of rank {}; the data "
          "regions hold {} bytes here and {} there",
          i, o.bytes, o.src_offset, o.dst_offset, o.peer, data_bytes, peer.regions[kDataRegion].size);
    }
    bool fits = true;
    immediates.encode(o.signal_index, o.signal_value, &fits);
    // The peer's table counts its start words too (one per rank): plans name the counters before them.
    const uint64_t peer_counters = peer.num_signals > uint64_t(world) ? peer.num_signals - uint64_t(world) : 0;
    if (o.signal_index >= peer_counters || (signal_path == SignalPath::kImmediate && !fits)) {
      UCCL_EP_THROW_ARG("transport floor: op {} signals counter {} (value {}) of rank {}, which has {} counters{}", i,
                        o.signal_index, o.signal_value, o.peer, peer_counters,
                        fits ? "" : "; the pair does not fit the transport's immediate data");
    }
  }
  std::vector<uint32_t> seen;
  for (const FloorExpect& e : plan.expect) {
    if (e.signal_index >= num_signals || e.value <= 0 || e.peer >= static_cast<uint32_t>(world)) {
      UCCL_EP_THROW_ARG(
          "transport floor: expected counter {} = {} from rank {}: needs a counter below {}, a positive "
          "value and a rank below {}",
          e.signal_index, e.value, e.peer, num_signals, world);
    }
    seen.push_back(e.signal_index);
  }
  std::sort(seen.begin(), seen.end());
  const auto dup = std::adjacent_find(seen.begin(), seen.end());
  if (dup != seen.end()) UCCL_EP_THROW_ARG("transport floor: counter {} is expected twice", *dup);
}

// The requests of every lane, in plan order: what a proxy would post for each WRITE + SIGNAL pair.
void TransportFloor::State::build(const FloorPlan& plan) {
  for (auto& l : lanes) {
    l->requests.clear();
    l->deferred.clear();
    l->has_deferred.clear();
    l->op_peer.clear();
  }
  for (const FloorOp& o : plan.ops) {
    Lane& l = *lanes[o.lane];
    const PeerTable& peer = l.peers[o.peer];
    const uint64_t op = l.has_deferred.size();
    l.op_peer.push_back(o.peer);
    WorkRequest sig;
    sig.peer = o.peer;
    sig.local_mem = l.signal_mr.id;
    sig.remote = peer.signals;
    sig.wr_id = (op << 1) | kSignalBit;
    if (signal_path == SignalPath::kImmediate) {
      sig.kind = OpKind::kWriteImm;
      sig.imm = immediates.encode(o.signal_index, o.signal_value, nullptr);
    } else {
      sig.kind = OpKind::kFetchAdd;
      sig.remote_offset = uint64_t{o.signal_index} * sizeof(int64_t);
      sig.imm = static_cast<uint64_t>(int64_t{o.signal_value});
    }
    bool deferred = false;
    if (o.bytes > 0) {
      WorkRequest w;
      w.kind = OpKind::kWrite;
      w.peer = o.peer;
      w.local_mem = l.data_mr.id;
      w.local_offset = o.src_offset;
      w.length = o.bytes;
      w.remote = peer.regions[kDataRegion];
      w.remote_offset = o.dst_offset;
      w.wr_id = op << 1;
      const bool fused = ordered && signal_path == SignalPath::kImmediate;  // the write carries the immediate
      if (fused) {
        w.kind = OpKind::kWriteImm;
        w.imm = sig.imm;
      }
      l.requests.push_back(w);
      if (fused) {
        l.has_deferred.push_back(0);
        l.deferred.emplace_back();
        continue;
      }
      deferred = !ordered;
    }
    l.has_deferred.push_back(deferred ? 1 : 0);
    l.deferred.push_back(deferred ? sig : WorkRequest{});
    if (!deferred) l.requests.push_back(sig);
  }
  for (auto& l : lanes) {
    l->num_deferred = static_cast<size_t>(std::count(l->has_deferred.begin(), l->has_deferred.end(), 1));
    l->late.reserve(l->num_deferred);
  }
}

// A barrier among the plan's peers through the transport: one start signal to each (adding 1 to this rank's start
// word there), then a wait until each has sent its own. Peers are symmetric across one run's plans (a rank expects
// signals from exactly the ranks that send it some), so every rank waits for the ranks that wait for it.
void TransportFloor::State::startTogether(const FloorPlan& plan) {
  std::vector<uint32_t> peers;
  for (const FloorOp& o : plan.ops) peers.push_back(o.peer);
  for (const FloorExpect& e : plan.expect) peers.push_back(e.peer);
  std::sort(peers.begin(), peers.end());
  peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
  peers.erase(std::remove(peers.begin(), peers.end(), static_cast<uint32_t>(config.rank)), peers.end());
  if (peers.empty()) return;
  bool fits = true;
  immediates.encode(static_cast<uint32_t>(startWord(config.world - 1)), 1, &fits);
  if (signal_path == SignalPath::kImmediate && !fits) {  // narrow immediates and many counters: start unaligned
    static std::once_flag warned;
    std::call_once(warned, [&] {
      log().warn("transport floor (rank {}): the start words (from counter {}) do not fit the transport's immediate "
                 "data; runs start without the barrier among their peers",
                 config.rank, num_signals);
    });
    return;
  }
  FloorPlan start;
  for (const uint32_t p : peers) {
    FloorOp o;
    o.peer = p;
    o.lane = p % lanes.size();
    o.signal_index = static_cast<uint32_t>(startWord(config.rank));
    o.signal_value = 1;
    start.ops.push_back(o);
    ++starts_expected[p];
  }
  build(start);
  const uint64_t gen = ++generation;
  const uint64_t t0 = platform::nowNs();
  for (auto& l : lanes) l->go.store(gen, std::memory_order_release);
  uint32_t spins = 0;
  InterruptPoll interrupt("transport floor start");
  for (;;) {
    interrupt.poll();
    throwIfFailed();
    const bool sent = std::all_of(lanes.begin(), lanes.end(), [&](const auto& l) {
      return l->finished.load(std::memory_order_acquire) == gen;
    });
    const auto started = [&](uint32_t p) {
      return __atomic_load_n(&counters[startWord(static_cast<int>(p))], __ATOMIC_ACQUIRE) >= starts_expected[p];
    };
    if (sent && std::all_of(peers.begin(), peers.end(), started)) return;
    if (platform::nowNs() - t0 > config.timeout_ns) {
      std::string missing;
      for (const uint32_t p : peers) {
        if (started(p)) continue;
        missing += fmt::format("{}the start signal from rank {} is {} of {}", missing.empty() ? "" : "; ", p,
                               __atomic_load_n(&counters[startWord(static_cast<int>(p))], __ATOMIC_ACQUIRE),
                               starts_expected[p]);
      }
      throw TimeoutError(fail(fmt::format(
          "a run did not start within {:.1f} s (UCCL_EP_TIMEOUT_SECS): {}{}; are those ranks alive and running the "
          "floor?",
          config.timeout_ns / 1e9, missing.empty() ? "every start signal arrived" : missing,
          sent ? "" : "; this rank's start signals did not complete")));
    }
    platform::spinRelax(spins);
  }
}

std::string TransportFloor::State::describeStall(const FloorPlan& plan, size_t first_unmet, uint64_t gen) const {
  std::string missing;
  for (size_t i = first_unmet; i < plan.expect.size(); ++i) {
    const FloorExpect& e = plan.expect[i];
    const int64_t v = __atomic_load_n(&counters[e.signal_index], __ATOMIC_ACQUIRE);
    if (v < e.value) {
      missing += fmt::format("{}counter {} from rank {} is {} of {}", missing.empty() ? "" : "; ", e.signal_index,
                             e.peer, v, e.value);
    }
  }
  std::string unsent;
  for (const auto& l : lanes) {
    if (l->finished.load(std::memory_order_acquire) == gen) continue;
    for (int r = 0; r < config.world; ++r) {
      const uint32_t n = l->pending_to[r].load(std::memory_order_relaxed);
      if (n > 0)
        unsent += fmt::format("{}lane {}: {} ops to rank {} not completed", unsent.empty() ? "" : "; ", l->index, n, r);
    }
  }
  return fmt::format(
      "a run did not complete within {:.1f} s (UCCL_EP_TIMEOUT_SECS): {}{}{}; are those ranks alive and running the "
      "floor?",
      config.timeout_ns / 1e9, missing.empty() ? "every expected signal arrived" : missing, unsent.empty() ? "" : "; ",
      unsent);
}

FloorResult TransportFloor::run(const FloorPlan& plan) {
  State& s = *s_;
  UCCL_EP_CHECK(s.connected, "transport floor (rank {}): run before connect", s.config.rank);
  s.throwIfFailed();
  s.validate(plan);
  // Counters may already hold signals: a peer that left the barrier earlier may have sent before this rank started
  // (unless the plan starts together). They are zeroed at the end of each run, and no peer sends for the next run
  // before the next barrier.
  if (plan.start_together) s.startTogether(plan);
  s.build(plan);
  const uint64_t gen = ++s.generation;
  const uint64_t t0 = platform::nowNs();
  for (auto& l : s.lanes) l->go.store(gen, std::memory_order_release);

  uint64_t t_expect = 0, t_sends = 0;
  size_t first_unmet = 0;  // counters only grow: the ones before it stay complete
  uint32_t spins = 0;
  InterruptPoll interrupt("transport floor run");
  while (t_expect == 0 || t_sends == 0) {
    interrupt.poll();
    if (s.failed.load(std::memory_order_acquire)) s.throwIfFailed();
    while (first_unmet < plan.expect.size() && __atomic_load_n(&s.counters[plan.expect[first_unmet].signal_index],
                                                               __ATOMIC_ACQUIRE) >= plan.expect[first_unmet].value) {
      ++first_unmet;
    }
    const uint64_t now = platform::nowNs();
    if (t_expect == 0 && first_unmet == plan.expect.size()) t_expect = now;
    if (t_sends == 0 && std::all_of(s.lanes.begin(), s.lanes.end(), [&](const auto& l) {
          return l->finished.load(std::memory_order_acquire) == gen;
        })) {
      for (const auto& l : s.lanes) t_sends = std::max(t_sends, l->finished_ns.load(std::memory_order_relaxed));
      t_sends = std::max(t_sends, t0);
    }
    if (now - t0 > s.config.timeout_ns && (t_expect == 0 || t_sends == 0)) {
      throw TimeoutError(s.fail(s.describeStall(plan, first_unmet, gen)));
    }
    platform::spinRelax(spins);
  }

  // Exactly what was expected, and nothing else: then every counter goes back to zero for the next run.
  std::vector<int64_t> want(s.num_signals, 0);
  for (const FloorExpect& e : plan.expect) want[e.signal_index] = e.value;
  for (size_t i = 0; i < s.num_signals; ++i) {  // the start words count on (cumulative)
    const int64_t v = __atomic_exchange_n(&s.counters[i], int64_t{0}, __ATOMIC_ACQ_REL);
    if (v != want[i]) {
      throw Error(s.fail(fmt::format("counter {} reached {}, expected {}", i, v, want[i])));
    }
  }
  FloorResult r;
  r.seconds = (t_expect - t0) / 1e9;
  r.sends_seconds = (t_sends - t0) / 1e9;
  r.writes = plan.writes();
  r.bytes = plan.bytes();
  r.signals = plan.ops.size();
  return r;
}

}  // namespace uccl::ep::proxy
