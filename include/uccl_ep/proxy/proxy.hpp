// The proxy: CPU threads that drain descriptor rings and carry them out through a transport.
//
// One ProxyGroup serves one GPU (one rank). It runs `num_threads` threads; ring r belongs to thread
// r % num_threads, and thread t talks to thread t of every peer through its own Transport endpoint.
//
// Set-up order (every rank the same):
//   ProxyGroup g(config);
//   g.addRegion(i, base, size, kind)    local data regions, indices < ring::kMaxRegions (again: replaces region i)
//   g.setSignalRegion(counters, n)      int64 counters the peers' SIGNAL descriptors add to
//   g.addRing(view, kind)               rings this rank's producers push into
//   blob = g.localInfo()                -> exchange through bootstrap (allGather) ->
//   g.connect(all_blobs)                index = rank
//   g.start();  ...  g.stop();
//
// Per descriptor the proxy validates every field (version, opcode, rank, regions, bounds) against its tables
// before posting; a bad one is rejected with an error naming the ring and position, and no byte moves.
// Errors never cross the proxy threads: the first is kept and raised by checkError() (and set in every ring's
// RingControl::error so producers stop waiting).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "uccl_ep/ring/ring.hpp"
#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::proxy {

enum class RingKind : uint8_t { kNormal = 0, kLowLatency = 1 };

// How SIGNAL descriptors reach their counter (architecture.md, decision 4).
enum class SignalPath : uint8_t {
  kAuto = 0,       // kAtomic when the transport has native atomics and ordered delivery, else kImmediate
  kAtomic = 1,     // remote fetch-add, posted after the ring's earlier writes
  kImmediate = 2,  // write with immediate data; the receiving proxy adds to the counter after the data landed
};

struct ProxyConfig {
  int rank = 0;
  int world = 1;
  int num_threads = 4;         // UCCL_EP_NUM_PROXY_THREADS
  int numa_node = -1;          // pin threads to this node's CPUs; -1: the GPU's node (below), else no pinning
  std::string gpu_pci_bus_id;  // e.g. "0000:1a:00.0" (cudaDeviceGetPCIBusId): its NUMA node when numa_node < 0
  std::string transport = "auto";
  std::string fabric_hmem = "auto";  // UCCL_EP_FABRIC_HMEM (transport.hpp TransportOptions::fabric_hmem)
  std::string ifname;
  bool all_peers_local = false;
  int gpu_device = -1;
  SignalPath signal_path = SignalPath::kAuto;
  uint64_t max_inflight_bytes = 0;       // per thread; 0 = unlimited
  uint32_t max_inflight_normal = 0;      // descriptors in flight per normal ring; 0 = ring capacity
  uint32_t max_inflight_low_latency = 0; // descriptors in flight per low-latency ring
  uint32_t max_batch = 32;               // descriptors taken from one ring per poll round
  uint64_t timeout_ns = 100ull * 1000 * 1000 * 1000;
  // The runtime's Buffer(enable_shrink=True): a peer whose operation fails, stalls past half the timeout, or whose
  // process the transport knows is gone is declared dead (ProxyGroup::deadPeers) instead of raising an error; its
  // operations, in flight and future, complete here without being posted, so the ring moves on for the live peers
  // and the GPU kernels mask the dead one. Without it such a peer is a fatal error naming it.
  bool enable_shrink = false;
  // An idle proxy thread spins; with this set it yields its core after a short spin instead. Worth it only
  // where threads outnumber cores (CI, laptops): yielding costs a GPU->CPU->GPU round trip about 0.5 us.
  bool yield_when_idle = std::thread::hardware_concurrency() < 8;
  // Opens each thread's endpoint; empty: transport::createTransport (tests inject fakes here).
  std::function<std::unique_ptr<transport::Transport>(const transport::TransportOptions&)> transport_factory;

  // Fills num_threads, transport, fabric_hmem, ifname, the in-flight limits and timeout from the environment.
  static ProxyConfig fromEnv(int rank, int world);
  // Thread `index`'s endpoint: its options, and the endpoint opened through transport_factory or createTransport.
  transport::TransportOptions transportOptions(int thread_index) const;
  std::unique_ptr<transport::Transport> openTransport(int thread_index) const;
};

// The proxy thread that drains ring `ring_id` (ProxyGroup::addRing).
inline int threadOfRing(uint32_t ring_id, int num_threads) { return static_cast<int>(ring_id % num_threads); }

struct ThreadStats {
  uint64_t descriptors = 0;  // retired
  uint64_t writes = 0;
  uint64_t bytes = 0;
  uint64_t signals_sent = 0;
  uint64_t signals_applied = 0;  // immediates applied for peers
  uint64_t posts = 0;            // post() calls (batches)
  uint64_t polls = 0;
};

class ProxyThread;
class StallBoard;
class DeadPeers;

class ProxyGroup {
 public:
  explicit ProxyGroup(const ProxyConfig& config);
  ~ProxyGroup();
  ProxyGroup(const ProxyGroup&) = delete;
  ProxyGroup& operator=(const ProxyGroup&) = delete;

  void addRegion(uint32_t index, void* base, size_t size, transport::MemoryKind kind);
  void setSignalRegion(int64_t* counters, size_t count);
  void addRing(const ring::RingView& view, RingKind kind);

  transport::Blob localInfo() const;
  void connect(const std::vector<transport::Blob>& infos);

  void start();
  void stop();  // joins the threads; idempotent

  // Throws the first error any thread recorded (uccl::ep::Error), if any. Asking also records, for a thread that has
  // been inside one transport post longer than the timeout (it cannot time itself out), an error naming that peer.
  void checkError() const;
  bool hasError() const;
  std::string firstError() const;

  const ProxyConfig& config() const { return config_; }
  int numThreads() const { return static_cast<int>(threads_.size()); }
  transport::Transport& transport(int thread);
  SignalPath signalPath() const;  // resolved (never kAuto after connect)
  ThreadStats stats(int thread) const;
  std::string dumpState() const;  // one line per ring: positions, in-flight, error
  std::vector<int> deadPeers() const;  // the peers declared dead (enable_shrink), ascending

  struct ErrorSlot {
    std::atomic<bool> set{false};
    std::atomic<bool> publishing{false};
    std::string message;
  };

 private:
  ProxyConfig config_;
  std::unique_ptr<StallBoard> board_;  // what each thread waits on; outlives the threads that write it
  std::unique_ptr<DeadPeers> dead_;    // likewise
  std::vector<std::unique_ptr<ProxyThread>> threads_;
  mutable ErrorSlot error_;
  bool started_ = false;

  void noticeBlockedPost() const;
};

// Pins the calling thread to the CPUs of a NUMA node (from /sys). Returns false when the node is unknown.
bool pinToNumaNode(int node);
// The NUMA node a PCI device (a GPU, a NIC) hangs off, from /sys; -1 when unknown or not NUMA.
int numaNodeOfPciDevice(const std::string& bus_id);

}  // namespace uccl::ep::proxy
