// realVerbsApi(): the seam bound to libibverbs. The inline ibv_* helpers are expanded here, once.
#include "transport/verbs/verbs_api.hpp"

#include <unistd.h>

#include "transport/verbs/cuda_dmabuf.hpp"

namespace uccl::ep::transport::verbs {
namespace {

VerbsApi bindLibibverbs() {
  VerbsApi a;
  a.getDeviceList = [](int* num) { return ibv_get_device_list(num); };
  a.freeDeviceList = [](ibv_device** list) { ibv_free_device_list(list); };
  a.deviceName = [](ibv_device* dev) { return ibv_get_device_name(dev); };
  a.openDevice = [](ibv_device* dev) { return ibv_open_device(dev); };
  a.closeDevice = [](ibv_context* ctx) { return ibv_close_device(ctx); };
  a.queryDevice = [](ibv_context* ctx, ibv_device_attr* attr) { return ibv_query_device(ctx, attr); };
  a.queryPort = [](ibv_context* ctx, uint8_t port, ibv_port_attr* attr) { return ibv_query_port(ctx, port, attr); };
  a.queryGidEx = [](ibv_context* ctx, uint32_t port, uint32_t index, ibv_gid_entry* entry) {
    return ibv_query_gid_ex(ctx, port, index, entry, 0);
  };
  a.allocPd = [](ibv_context* ctx) { return ibv_alloc_pd(ctx); };
  a.deallocPd = [](ibv_pd* pd) { return ibv_dealloc_pd(pd); };
  a.regMr = [](ibv_pd* pd, void* addr, size_t length, int access) { return ibv_reg_mr(pd, addr, length, access); };
  a.regDmabufMr = [](ibv_pd* pd, uint64_t offset, size_t length, uint64_t iova, int fd, int access) {
    return ibv_reg_dmabuf_mr(pd, offset, length, iova, fd, access);
  };
  a.deregMr = [](ibv_mr* mr) { return ibv_dereg_mr(mr); };
  a.createCq = [](ibv_context* ctx, int cqe) { return ibv_create_cq(ctx, cqe, nullptr, nullptr, 0); };
  a.destroyCq = [](ibv_cq* cq) { return ibv_destroy_cq(cq); };
  a.createQp = [](ibv_pd* pd, ibv_qp_init_attr* attr) { return ibv_create_qp(pd, attr); };
  a.destroyQp = [](ibv_qp* qp) { return ibv_destroy_qp(qp); };
  a.modifyQp = [](ibv_qp* qp, ibv_qp_attr* attr, int mask) { return ibv_modify_qp(qp, attr, mask); };
  a.postSend = [](ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad) { return ibv_post_send(qp, wr, bad); };
  a.postRecv = [](ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad) { return ibv_post_recv(qp, wr, bad); };
  a.pollCq = [](ibv_cq* cq, int num, ibv_wc* wc) { return ibv_poll_cq(cq, num, wc); };
  a.wcStatusStr = [](ibv_wc_status status) { return ibv_wc_status_str(status); };
  a.cudaDmabufFd = [](void* base, size_t size, std::string* why) { return cudaDmabufFdViaDriver(base, size, why); };
  a.closeFd = [](int fd) { close(fd); };
  a.cudaDmabufAvailable = [] { return cudaDmabufEntryPointPresent(); };
  a.peermemLoaded = [] { return peermemModuleLoaded(); };
  return a;
}

}  // namespace

const VerbsApi& realVerbsApi() {
  static const VerbsApi api = bindLibibverbs();
  return api;
}

}  // namespace uccl::ep::transport::verbs
