// The libfabric (FI_EP_RDM) transport: one fabric, domain, CQ and AV per object, used by one thread, and one endpoint
// per lane: a single lane for every peer, except on shm, which gets one lane (endpoint) per peer.
//
// Why lanes on shm: shm reports a sender's completions in the order its region's response queue holds them and stops
// at the first one still waiting for its target. An operation to a peer that died (a write with delivery complete,
// anything above the inject size) waits forever, so with one endpoint it held back the completions of every later
// operation to the live peers, and under enable_shrink the survivors declared each other dead. With an endpoint per
// peer (its own region, response queue and transmit ops) a dead peer holds back only its own lane. Peer p's lane
// here talks to this rank's lane at p; the AV maps fi_addr p to that endpoint, so FI_SOURCE still names ranks.
//
// Control path (setup, registration, addresses) lives in fabric_transport.cpp, the data path (post, poll) in
// fabric_datapath.cpp. Invariants the data path relies on:
//  - every posted operation owns one Op from its lane's pool, sized to the lane endpoint's tx_attr->size, so the pool
//    running dry is our own "send queue full" and the provider's queue is never overrun by more than it advertised;
//  - every operation is posted with FI_COMPLETION (a libfabric completion covers only itself), and poll()
//    reports the signaled ones only; an unsignaled one that fails is still reported, with ok=false;
//  - with FI_AV_TABLE the fi_addr_t of rank r is r, so sources map to ranks without a lookup;
//  - writes with data carry FI_DELIVERY_COMPLETE where granted (tcp, shm), so their local completion means the
//    bytes are at the target; zero-length writes and atomics carry it too except on shm (see open());
//  - with a CUDA device in the options the endpoint is opened with FI_HMEM where the provider grants it (select()):
//    device regions are registered with iface FI_HMEM_CUDA, host ones with FI_HMEM_SYSTEM (kGpuMemory).
#pragma once

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>

#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "transport/fabric/fabric_info.hpp"
#include "uccl_ep/transport/transport.hpp"

namespace uccl::ep::transport::fabric {

class FabricTransport final : public Transport {
 public:
  FabricTransport(const TransportOptions& options, const std::string& provider);
  ~FabricTransport() override;
  FabricTransport(const FabricTransport&) = delete;
  FabricTransport& operator=(const FabricTransport&) = delete;

  std::string name() const override { return name_; }
  uint32_t capabilities() const override { return caps_; }
  uint32_t immediateBytes() const override { return immBytes_; }

  Blob address() const override;
  void connect(const std::vector<Blob>& addresses) override;

  LocalMemory registerMemory(void* base, size_t size, MemoryKind kind) override;
  void deregisterMemory(uint32_t id) override;

  size_t post(const WorkRequest* requests, size_t count) override;
  size_t poll(Completion* out, size_t max) override;
  std::string describe(const Completion& c) const override;

 private:
  // One in-flight operation. The fi_context2 must come first: the provider hands its address back as
  // op_context, and we recover the Op from it. operand/result are the atomic's local buffers (registered as
  // part of the pool when the provider wants FI_MR_LOCAL).
  struct Op {
    fi_context2 ctx;
    uint64_t wr_id;
    uint32_t peer;
    bool signaled;
    bool recv;  // a zero-length receive posted for FI_RX_CQ_DATA
    int64_t operand;
    int64_t result;
  };
  struct Region {
    fid_mr* mr = nullptr;
    void* desc = nullptr;
    char* base = nullptr;
    size_t size = 0;
  };
  struct ErrorRecord {  // cold path: the text of a failed completion, for describe()
    Completion::Kind kind;
    uint32_t peer;
    uint64_t wr_id;
    std::string text;
  };

  Selection select(const TransportOptions& options, const std::string& provider);
  void open(const TransportOptions& options, const std::string& provider);
  void close() noexcept;
  void setupAtomics();
  void postReceive(Op& op);
  Op* opOf(void* context) const;
  uint32_t rankOf(fi_addr_t addr) const { return addr < static_cast<fi_addr_t>(world_) ? addr : UINT32_MAX; }
  uint32_t laneOf(uint32_t peer) const { return eps_.size() == 1 ? 0 : peer; }
  // A transmit op back to its lane's pool: ops_ holds the lanes' pools one after another, txDepth_ each.
  void releaseOp(const Op& op) {
    const auto index = static_cast<uint32_t>(&op - ops_.data());
    freeOps_[index / txDepth_].push_back(index);
  }
  const Region& localRegion(const WorkRequest& r) const;
  ssize_t issue(const WorkRequest& r, Op& op);
  void progress();
  bool convert(const fi_cq_data_entry& e, fi_addr_t src, Completion* out);
  Completion readError();

  int rank_ = 0;
  int world_ = 1;
  std::string prov_;  // libfabric provider string, for messages
  std::string name_;
  Selection sel_;
  fid_fabric* fabric_ = nullptr;
  fid_domain* domain_ = nullptr;
  std::vector<fid_ep*> eps_;  // [lane]; lane 0 also receives CQ data and holds FI_MR_ENDPOINT bindings (one lane then)
  fid_cq* cq_ = nullptr;
  fid_av* av_ = nullptr;

  uint32_t caps_ = 0;
  uint32_t immBytes_ = 0;
  bool mrLocal_ = false;
  bool virtAddr_ = false;
  bool provKey_ = false;
  bool mrEndpoint_ = false;
  bool rxCqData_ = false;
  bool fetchOnly_ = false;    // the provider validates FI_SUM/FI_INT64 only as a fetching atomic
  uint64_t txFlags_ = 0;      // writes with data: FI_COMPLETION, plus FI_DELIVERY_COMPLETE when granted
  uint64_t txFlagsBare_ = 0;  // zero-length writes and atomics (no FI_DELIVERY_COMPLETE where it is broken)
  // Keys we request when the provider does not pick them (no FI_MR_PROV_KEY): random, so a process without the job's
  // connect blobs cannot guess one (sequential keys from 1 were), within the provider's mr_key_size.
  std::mt19937_64 keyGen_{std::random_device{}()};
  uint64_t keyMask_ = ~uint64_t{0};
  uint64_t newKey() { return keyGen_() & keyMask_; }
  bool connected_ = false;
  int gpuDevice_ = -1;  // the CUDA device whose memory FI_HMEM registrations name

  std::vector<Region> regions_;  // index = LocalMemory::id; mr == nullptr once deregistered
  std::vector<Op> ops_;          // [lane * txDepth_, +txDepth_) each lane's transmit ops, then the receive pool
  size_t txDepth_ = 0;           // per lane
  std::vector<std::vector<uint32_t>> freeOps_;  // [lane] stack of free transmit op indices
  fid_mr* opsMr_ = nullptr;        // the pool's registration (atomic operands/results) under FI_MR_LOCAL
  void* opsDesc_ = nullptr;
  std::deque<ErrorRecord> errors_;
};

}  // namespace uccl::ep::transport::fabric
