// A fake RDMA device behind the VerbsApi seam: devices with ports and GID tables, QPs that record their state
// transitions and posted WR chains, and a "wire" that carries out posted work in host memory.
//
// execute() plays the NIC: for every QP in RTS it runs the posted WRs in order against the connected QP
// (writes copy bytes, write-with-imm also consumes a posted receive at the target, fetch-adds add), checks
// rkeys and bounds like a responder would (REM_ACCESS_ERR, then the QP is in error and the rest flush), and
// queues a CQE for every signaled WR and for every failed one. Tests can also queue raw CQEs.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "transport/verbs/verbs_api.hpp"

namespace uccl::ep::transport::verbs::testing {

struct FakePort {
  ibv_port_state state = IBV_PORT_ACTIVE;
  uint8_t link_layer = IBV_LINK_LAYER_ETHERNET;
  uint16_t lid = 0;
  ibv_mtu active_mtu = IBV_MTU_4096;
  int gid_tbl_len = 8;
  std::map<int, ibv_gid_entry> gids;  // absent index: empty slot (ENODATA)
};

struct FakeDevice {
  std::string name;
  std::vector<FakePort> ports;  // port n is ports[n - 1]
  ibv_atomic_cap atomic_cap = IBV_ATOMIC_HCA;
  int max_qp_wr = 1024;
  int max_cqe = 1 << 20;
  ibv_device dev{};
  ibv_context ctx{};
};

struct PostedWr {
  uint64_t wr_id = 0;
  ibv_wr_opcode opcode = IBV_WR_RDMA_WRITE;
  unsigned flags = 0;
  uint32_t imm_data = 0;  // as posted (network order)
  uint64_t remote_addr = 0;
  uint32_t rkey = 0;
  uint64_t compare_add = 0;
  std::vector<ibv_sge> sges;
};

struct Transition {
  int mask = 0;
  ibv_qp_attr attr{};
};

struct FakeQp {
  ibv_qp qp{};
  ibv_qp_init_attr init{};
  ibv_qp_state state = IBV_QPS_RESET;
  std::vector<Transition> transitions;
  std::vector<std::vector<PostedWr>> chains;  // one per ibv_post_send call
  std::deque<PostedWr> pending;               // posted, not yet executed
  uint32_t outstanding = 0;                   // send queue occupancy as the "hardware" sees it
  uint32_t unsignaled_tail = 0;               // executed unsignaled WRs since the last CQE
  std::deque<uint64_t> recvs;                 // posted receive wr_ids
  uint64_t recv_posts = 0;                    // ibv_post_recv calls
  bool destroyed = false;
};

class FakeVerbs {
 public:
  FakeVerbs();
  ~FakeVerbs();

  // Device table (set up before creating transports).
  FakeDevice& addDevice(const std::string& name, int ports = 1);
  static ibv_gid_entry gidEntry(int index, uint32_t type, const std::vector<uint8_t>& raw16);
  static ibv_gid_entry ipv4Gid(int index, uint32_t type, uint8_t a, uint8_t b, uint8_t c, uint8_t d);

  const VerbsApi& api() const { return api_; }

  // Observation.
  FakeQp* qpByNum(uint32_t qpn);
  std::vector<FakeQp*> qps();
  int postSendCalls() const { return post_send_calls_; }
  int openContexts() const { return open_contexts_; }
  int liveMrs() const { return static_cast<int>(mrs_.size()); }
  int liveQps() const;

  // The NIC: run posted WRs (see above); CQEs go to the CQ the QP was created with.
  void execute();
  // Queue a raw CQE on `qp`'s CQ (qp_num is filled in).
  void pushCqe(FakeQp* qp, ibv_wc wc);
  int liveCqs() const { return static_cast<int>(cqs_.size()); }
  int lastCqSize() const { return last_cqe_; }
  // Deliver a write-with-imm to `qp` from outside (consumes one posted receive).
  void deliverImm(FakeQp* qp, uint32_t imm);

  // Failure injection.
  ibv_qp_state fail_transition_to = IBV_QPS_ERR;  // a modify to this state fails with EINVAL (ERR: never)
  int post_send_rc = 0;                           // non-zero: ibv_post_send fails at fail_post_send_at
  int fail_post_send_at = 0;
  bool list_devices_null = false;

  // GPU memory paths.
  bool cuda_present = true;
  int dmabuf_fd = 77;  // what cudaDmabufFd returns (< 0: fails with dmabuf_why)
  std::string dmabuf_why = "libcuda.so.1 could not be loaded (injected)";
  bool dmabuf_reg_fails = false;
  bool reg_mr_fails = false;
  bool peermem = false;
  std::vector<int> closed_fds;
  struct DmabufCall {
    uint64_t offset, length, iova;
    int fd;
    void* aligned_base;
    size_t aligned_size;
  };
  std::vector<DmabufCall> dmabuf_calls;
  std::vector<void*> reg_mr_addrs;
  std::vector<int> reg_mr_access;  // access flags of every registration (plain and dma-buf)

 private:
  struct MrRec {
    ibv_mr mr{};
  };
  void runWr(FakeQp& src, const PostedWr& w);
  void complete(FakeQp& qp, const PostedWr& w, ibv_wc_status status);
  bool remoteOk(uint32_t rkey, uint64_t addr, uint64_t len) const;
  void bind();

  VerbsApi api_;
  std::vector<std::unique_ptr<FakeDevice>> devices_;
  std::vector<std::unique_ptr<FakeQp>> qps_;
  std::map<ibv_mr*, std::unique_ptr<MrRec>> mrs_;
  std::map<ibv_cq*, std::unique_ptr<ibv_cq>> cqs_;
  std::map<ibv_cq*, std::deque<ibv_wc>> cqes_;
  std::map<ibv_pd*, std::unique_ptr<ibv_pd>> pds_;
  int last_cqe_ = 0;
  void* last_aligned_base_ = nullptr;
  size_t last_aligned_size_ = 0;
  uint32_t next_qpn_ = 0x100;
  uint32_t next_key_ = 0x1000;
  int post_send_calls_ = 0;
  int open_contexts_ = 0;
};

}  // namespace uccl::ep::transport::verbs::testing
