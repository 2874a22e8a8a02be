// The seam between the verbs backend and libibverbs (and the CUDA driver, for dma-buf handles).
//
// Many ibv_* entry points are static inline in <infiniband/verbs.h> and dispatch through the context's ops
// table (ibv_post_send, ibv_post_recv, ibv_poll_cq, ibv_query_port, ibv_query_gid_ex), so link-time wrapping
// cannot intercept them. Every call the backend makes therefore goes through this table: realVerbsApi() binds
// it to libibverbs, and the unit tests bind it to a fake device. The backend never calls ibv_* directly.
//
// The objects handed back (ibv_context, ibv_pd, ibv_cq, ibv_qp, ibv_mr) are only read by the backend for
// their plain fields (qp_num, lkey, rkey); it never passes them to an ibv_* function outside this table.
#pragma once

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace uccl::ep::transport::verbs {

struct VerbsApi {
  // Devices and their properties.
  std::function<ibv_device**(int* num)> getDeviceList;
  std::function<void(ibv_device** list)> freeDeviceList;
  std::function<const char*(ibv_device* dev)> deviceName;
  std::function<ibv_context*(ibv_device* dev)> openDevice;
  std::function<int(ibv_context* ctx)> closeDevice;
  std::function<int(ibv_context* ctx, ibv_device_attr* attr)> queryDevice;
  std::function<int(ibv_context* ctx, uint8_t port, ibv_port_attr* attr)> queryPort;
  // One GID table entry with its type (IB / RoCEv1 / RoCEv2); non-zero for an empty or unreadable entry.
  std::function<int(ibv_context* ctx, uint32_t port, uint32_t index, ibv_gid_entry* entry)> queryGidEx;

  // Protection domain, memory.
  std::function<ibv_pd*(ibv_context* ctx)> allocPd;
  std::function<int(ibv_pd* pd)> deallocPd;
  std::function<ibv_mr*(ibv_pd* pd, void* addr, size_t length, int access)> regMr;
  std::function<ibv_mr*(ibv_pd* pd, uint64_t offset, size_t length, uint64_t iova, int fd, int access)> regDmabufMr;
  std::function<int(ibv_mr* mr)> deregMr;

  // Completion queue and queue pairs.
  std::function<ibv_cq*(ibv_context* ctx, int cqe)> createCq;
  std::function<int(ibv_cq* cq)> destroyCq;
  std::function<ibv_qp*(ibv_pd* pd, ibv_qp_init_attr* attr)> createQp;
  std::function<int(ibv_qp* qp)> destroyQp;
  std::function<int(ibv_qp* qp, ibv_qp_attr* attr, int mask)> modifyQp;

  // Hot path.
  std::function<int(ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad)> postSend;
  std::function<int(ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad)> postRecv;
  std::function<int(ibv_cq* cq, int num, ibv_wc* wc)> pollCq;

  // Cold-path text.
  std::function<const char*(ibv_wc_status status)> wcStatusStr;

  // GPU memory. cudaDmabufFd returns a dma-buf fd for a page-aligned device range, or -1 with *why set
  // (libcuda.so.1 missing, symbol missing, driver error). closeFd closes such an fd once the MR holds it.
  std::function<int(void* aligned_base, size_t aligned_size, std::string* why)> cudaDmabufFd;
  std::function<void(int fd)> closeFd;
  std::function<bool()> cudaDmabufAvailable;  // libcuda.so.1 loads and exports the dma-buf entry point
  std::function<bool()> peermemLoaded;        // nvidia-peermem (or the legacy nv_peer_mem) kernel module
};

// The table bound to libibverbs and libcuda.so.1, both opened at run time (dlopen; never linked).
const VerbsApi& realVerbsApi();

// Why libibverbs could not be loaded, "" when it was (libibverbs_loader.cpp), for the "no RDMA device" messages.
std::string libibverbsError();

}  // namespace uccl::ep::transport::verbs
