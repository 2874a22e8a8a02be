// VerbsTransport: one proxy thread's verbs endpoint (private to the backend).
//
// Resources: one device context, PD and CQ (shared by sends and receives), one RC QP per peer, a pool of
// zero-length receives per QP (each incoming write-with-immediate consumes one; poll() reposts it), and an
// 8-byte scratch MR that fetch-adds return their old value into (the value is discarded).
//
// Hot path (post/poll) allocates nothing: WR, SGE and WC arrays are sized at construction.
// Setup is in verbs_transport.cpp, post/poll in verbs_datapath.cpp, describe() in completion_text.cpp.
#pragma once

#include <infiniband/verbs.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "transport/verbs/device_select.hpp"
#include "transport/verbs/gid_select.hpp"
#include "transport/verbs/memory_registry.hpp"
#include "transport/verbs/send_tracker.hpp"
#include "transport/verbs/verbs_api.hpp"
#include "uccl_ep/transport/transport.hpp"
#include "uccl_ep/util/env.hpp"

namespace uccl::ep::transport::verbs {

constexpr uint32_t kSendQueueDepth = 256;  // per QP; a power of two (clamped to the device's max_qp_wr)
constexpr uint32_t kRecvPoolDepth = 128;   // zero-length receives kept posted per QP
constexpr int kPollBatch = 64;
constexpr uint64_t kRecvTag = 1ull << 63;  // wr_id of receives: tag | peer << 32; sends: peer << 32 | seq

class VerbsTransport final : public Transport {
 public:
  VerbsTransport(const TransportOptions& options, const VerbsApi& api, const Env& env);
  ~VerbsTransport() override;

  std::string name() const override { return name_; }
  uint32_t capabilities() const override { return caps_; }
  uint32_t immediateBytes() const override { return 4; }  // verbs carries 32 bits of immediate data

  Blob address() const override;
  void connect(const std::vector<Blob>& addresses) override;

  LocalMemory registerMemory(void* base, size_t size, MemoryKind kind) override;
  void deregisterMemory(uint32_t id) override;

  size_t post(const WorkRequest* requests, size_t count) override;
  size_t poll(Completion* out, size_t max) override;
  std::string describe(const Completion& c) const override;

 private:
  void setup(const Env& env);
  void release();
  void postRecvPool(uint32_t peer);
  void buildWr(const WorkRequest& r, size_t k, bool signal);
  void postChain(uint32_t peer, size_t n);
  void repostRecv(uint32_t peer);
  uint32_t peerOfQp(uint32_t qp_num, uint64_t wr_id) const;

  VerbsApi api_;
  uint32_t rank_;
  uint32_t world_;
  int thread_index_;
  std::string name_;
  OpenedDevice dev_;
  GidChoice gid_;
  uint8_t sl_ = 0;
  uint8_t tc_ = 0;
  bool atomics_ = false;
  uint32_t caps_ = 0;
  bool connected_ = false;

  ibv_pd* pd_ = nullptr;
  ibv_cq* cq_ = nullptr;
  std::unique_ptr<MemoryRegistry> registry_;
  alignas(8) uint64_t scratch_ = 0;
  ibv_mr* scratch_mr_ = nullptr;

  uint32_t send_depth_ = 0;
  uint32_t recv_depth_ = 0;
  std::vector<ibv_qp*> qps_;   // index: peer
  std::vector<uint32_t> psn_;  // start PSN of qps_[peer]'s send queue
  std::vector<SendTracker> sends_;
  std::unordered_map<uint32_t, uint32_t> qp_to_peer_;

  std::vector<ibv_send_wr> wrs_;  // send_depth_ entries: the longest chain that can fit one QP
  std::vector<ibv_sge> sges_;
  std::vector<ibv_wc> wcs_;
  ibv_recv_wr recv_wr_{};
};

}  // namespace uccl::ep::transport::verbs
