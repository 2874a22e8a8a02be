// libibverbs through dlopen (uccl_ep/util/dynamic_library.hpp). These definitions stand in at link time for the
// out-of-line libibverbs entry points that verbs_api.cpp reaches (directly or through the headers' inline helpers,
// e.g. ibv_query_port, ibv_reg_mr and ibv_query_gid_ex), and bind to libibverbs.so.1's own symbols on first use.
// Hidden, so they never interpose on another copy of libibverbs in the process. Without libibverbs there is no
// device (ibv_get_device_list returns none, errno ENOSYS) and every other entry point fails with ENOSYS;
// libibverbsError() says why for the messages.
#include <infiniband/verbs.h>

#include <cerrno>
#include <string>
#include <type_traits>

// The headers wrap these names in macros that expand to inline helpers; this file defines the functions themselves.
#undef ibv_query_port
#undef ibv_get_device_list

#include "uccl_ep/util/dynamic_library.hpp"
#include "transport/verbs/verbs_api.hpp"

#define UCCL_EP_HIDDEN __attribute__((visibility("hidden")))

namespace uccl::ep::transport::verbs {
namespace {

DynamicLibrary& libibverbs() {
  static DynamicLibrary lib({"libibverbs.so.1", "libibverbs.so"});
  return lib;
}

// The result of a missing entry point: nullptr (objects) or -1 (status), with errno ENOSYS.
template <typename R>
R unavailable() {
  errno = ENOSYS;
  if constexpr (std::is_pointer_v<R>) {
    return nullptr;
  } else {
    return static_cast<R>(-1);
  }
}

}  // namespace

std::string libibverbsError() { return libibverbs().error(); }

}  // namespace uccl::ep::transport::verbs

using uccl::ep::transport::verbs::libibverbs;
using uccl::ep::transport::verbs::unavailable;

// One stand-in per entry point: the real function when the library has it, else unavailable().
#define UCCL_EP_VERBS_STUB(ret, name, params, args)                                  \
  UCCL_EP_HIDDEN ret name params {                                                   \
    static auto* const real = libibverbs().function<decltype(name)>(#name);                           \
    return real != nullptr ? real args : unavailable<ret>();                         \
  }

extern "C" {

UCCL_EP_HIDDEN struct ibv_device** ibv_get_device_list(int* num_devices) {
  static auto* const real = libibverbs().function<decltype(ibv_get_device_list)>("ibv_get_device_list");
  if (real != nullptr) return real(num_devices);
  if (num_devices != nullptr) *num_devices = 0;
  return unavailable<struct ibv_device**>();
}

UCCL_EP_HIDDEN void ibv_free_device_list(struct ibv_device** list) {
  static auto* const real = libibverbs().function<decltype(ibv_free_device_list)>("ibv_free_device_list");
  if (real != nullptr) real(list);
}

UCCL_EP_HIDDEN const char* ibv_wc_status_str(enum ibv_wc_status status) {
  static auto* const real = libibverbs().function<decltype(ibv_wc_status_str)>("ibv_wc_status_str");
  return real != nullptr ? real(status) : "unknown (libibverbs is not available)";
}

UCCL_EP_VERBS_STUB(const char*, ibv_get_device_name, (struct ibv_device * device), (device))
UCCL_EP_VERBS_STUB(struct ibv_context*, ibv_open_device, (struct ibv_device * device), (device))
UCCL_EP_VERBS_STUB(int, ibv_close_device, (struct ibv_context * context), (context))
UCCL_EP_VERBS_STUB(int, ibv_query_device, (struct ibv_context * context, struct ibv_device_attr* device_attr),
                   (context, device_attr))
UCCL_EP_VERBS_STUB(int, ibv_query_port,
                   (struct ibv_context * context, uint8_t port_num, struct _compat_ibv_port_attr* port_attr),
                   (context, port_num, port_attr))
UCCL_EP_VERBS_STUB(int, _ibv_query_gid_ex,
                   (struct ibv_context * context, uint32_t port_num, uint32_t gid_index, struct ibv_gid_entry* entry,
                    uint32_t flags, size_t entry_size),
                   (context, port_num, gid_index, entry, flags, entry_size))
UCCL_EP_VERBS_STUB(struct ibv_pd*, ibv_alloc_pd, (struct ibv_context * context), (context))
UCCL_EP_VERBS_STUB(int, ibv_dealloc_pd, (struct ibv_pd * pd), (pd))
UCCL_EP_VERBS_STUB(struct ibv_mr*, ibv_reg_mr_iova2,
                   (struct ibv_pd * pd, void* addr, size_t length, uint64_t iova, unsigned int access),
                   (pd, addr, length, iova, access))
UCCL_EP_VERBS_STUB(struct ibv_mr*, ibv_reg_dmabuf_mr,
                   (struct ibv_pd * pd, uint64_t offset, size_t length, uint64_t iova, int fd, int access),
                   (pd, offset, length, iova, fd, access))
UCCL_EP_VERBS_STUB(int, ibv_dereg_mr, (struct ibv_mr * mr), (mr))
UCCL_EP_VERBS_STUB(struct ibv_cq*, ibv_create_cq,
                   (struct ibv_context * context, int cqe, void* cq_context, struct ibv_comp_channel* channel,
                    int comp_vector),
                   (context, cqe, cq_context, channel, comp_vector))
UCCL_EP_VERBS_STUB(int, ibv_destroy_cq, (struct ibv_cq * cq), (cq))
UCCL_EP_VERBS_STUB(struct ibv_qp*, ibv_create_qp, (struct ibv_pd * pd, struct ibv_qp_init_attr* qp_init_attr),
                   (pd, qp_init_attr))
UCCL_EP_VERBS_STUB(int, ibv_destroy_qp, (struct ibv_qp * qp), (qp))
UCCL_EP_VERBS_STUB(int, ibv_modify_qp, (struct ibv_qp * qp, struct ibv_qp_attr* attr, int attr_mask),
                   (qp, attr, attr_mask))

}  // extern "C"
