// The transport floor: the writes and signals one low-latency call hands the proxies, posted straight through the
// transport from CPU threads (no GPU, no ring, no proxy thread) and timed until every signal this rank expects has
// been applied here. What a call costs above this floor is what the GPU, the ring and the proxy add.
//
// Why separate endpoints and not the proxies' own: a proxy thread is the one user of its endpoint (one poller per
// libfabric domain, FI_THREAD_DOMAIN), and the proxies keep polling while the floor runs. So the floor opens its
// own endpoints through the proxies' configuration (ProxyConfig::openTransport: same kind, provider, interface and
// thread count), registers the same memory (the Buffer's RDMA buffer, as the same MemoryKind), and follows the same
// signal rules (resolveSignalPath, ImmediateCodec). Between the same processes, with the same sizes and counts,
// it moves the same bytes through the same provider.
//
// Lanes: lane t is an endpoint driven by a thread of its own, as proxy thread t drives its endpoint; an op runs on
// the lane of the proxy thread that would have carried it (threadOfRing of the ring the kernel pushes it into).
// Lanes keep polling between runs (providers such as tcp;ofi_rxm progress only when polled, and a peer may still
// wait for this side's acknowledgement); idle, they yield their core after a short spin.
//
// An op is one WRITE + SIGNAL pair (or a SIGNAL alone), sent as the proxy sends it: with ordered delivery and
// immediates, one write carrying the immediate; with ordered delivery and atomics, a write then a fetch-add; without
// ordered delivery, the signal once the write completed (FI_DELIVERY_COMPLETE: the bytes are at the target).
//
// Usage (every rank): TransportFloor f(config, base, bytes, kind, counters); blob = f.localInfo() -> all-gather ->
// f.connect(blobs); then, with every rank starting together (a barrier) and no call in flight, f.run(plan).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "uccl_ep/proxy/proxy.hpp"
#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::proxy {

// One WRITE + SIGNAL pair to `peer`: `bytes` from this rank's data region at src_offset to the peer's data region at
// dst_offset (none when bytes == 0), then signal_value added to the peer's counter signal_index.
struct FloorOp {
  uint32_t peer = 0;
  uint32_t lane = 0;
  uint64_t src_offset = 0;
  uint64_t dst_offset = 0;
  uint64_t bytes = 0;
  uint32_t signal_index = 0;
  int32_t signal_value = 0;
};

// A counter of this rank that must reach `value` (the sum of what `peer` adds to it) before the run is complete.
struct FloorExpect {
  uint32_t peer = 0;
  uint32_t signal_index = 0;
  int64_t value = 0;
};

struct FloorPlan {
  std::vector<FloorOp> ops;         // what this rank sends
  std::vector<FloorExpect> expect;  // what this rank receives
  // Start together: before the clock starts, this rank sends a start signal to every rank the plan exchanges with
  // and waits for theirs (a barrier among the plan's peers through the transport itself). Without it, a rank that
  // leaves the caller's barrier late finds its peers' writes already landed (its floor reads near 0) and makes them
  // wait (theirs read long). Every rank's plan of one run must set it alike.
  bool start_together = false;
  uint64_t writes() const {         // ops that move bytes
    uint64_t n = 0;
    for (const FloorOp& o : ops) n += o.bytes > 0 ? 1 : 0;
    return n;
  }
  uint64_t bytes() const {
    uint64_t n = 0;
    for (const FloorOp& o : ops) n += o.bytes;
    return n;
  }
};

struct FloorResult {
  double seconds = 0;                           // from the start until every expected counter reached its value here
  double sends_seconds = 0;                     // from the start until every op this rank posted completed locally
  uint64_t writes = 0, bytes = 0, signals = 0;  // what this rank sent
};

class TransportFloor {
 public:
  // One lane per config.num_threads; `data` (data_bytes, of `kind`) is the data region, and the floor's own
  // num_signals int64 counters (not the Buffer's: a call's signal words are left alone) receive the signals. One
  // start word per rank follows them (FloorPlan::start_together); plans name counters below num_signals only.
  TransportFloor(const ProxyConfig& config, void* data, size_t data_bytes, transport::MemoryKind kind,
                 size_t num_signals);
  ~TransportFloor();
  TransportFloor(const TransportFloor&) = delete;
  TransportFloor& operator=(const TransportFloor&) = delete;

  transport::Blob localInfo() const;
  // infos[r] = rank r's localInfo(). Connects every lane and starts the lane threads.
  void connect(const std::vector<transport::Blob>& infos);

  // Posts the plan, waits until every expected counter reached its value and every op completed, and resets the
  // counters. Throws InvalidArgument for a plan that does not fit (before anything is posted), TimeoutError naming
  // the peer whose signals or completions are missing after config.timeout_ns, Error for a transport failure (the
  // floor is then unusable).
  FloorResult run(const FloorPlan& plan);
  void stop();  // joins the lane threads; idempotent

  int numLanes() const;
  std::string transportName() const;
  SignalPath signalPath() const;  // resolved at connect()
  int64_t counter(size_t index) const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace uccl::ep::proxy
