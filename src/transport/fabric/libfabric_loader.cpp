// libfabric through dlopen (uccl_ep/util/dynamic_library.hpp). The backend uses libfabric's out-of-line entry
// points listed here and nothing else (every other fi_* call is inline in the headers and goes through the objects'
// ops tables), so these definitions stand in for the library at link time and bind to libfabric.so.1's own symbols
// on first use. They are hidden: they never leave the module that links them, so they cannot interpose on another
// copy of libfabric in the process. Without libfabric, fi_getinfo fails with -FI_ENOSYS and fi_strerror says why.
#include <rdma/fabric.h>
#include <rdma/fi_errno.h>

#include <string>

#include "transport/fabric/libfabric_loader.hpp"

#define UCCL_EP_HIDDEN __attribute__((visibility("hidden")))

namespace uccl::ep::transport::fabric {

DynamicLibrary& libfabric() {
  static DynamicLibrary lib({"libfabric.so.1", "libfabric.so"});
  return lib;
}

}  // namespace uccl::ep::transport::fabric

using uccl::ep::transport::fabric::libfabric;

extern "C" {

UCCL_EP_HIDDEN int fi_getinfo(uint32_t version, const char* node, const char* service, uint64_t flags,
                              const struct fi_info* hints, struct fi_info** info) {
  static auto* const real = libfabric().function<decltype(fi_getinfo)>("fi_getinfo");
  if (real == nullptr) {
    if (info != nullptr) *info = nullptr;
    return -FI_ENOSYS;
  }
  return real(version, node, service, flags, hints, info);
}

UCCL_EP_HIDDEN void fi_freeinfo(struct fi_info* info) {
  static auto* const real = libfabric().function<decltype(fi_freeinfo)>("fi_freeinfo");
  if (real != nullptr) real(info);  // nothing can have been allocated without the library
}

UCCL_EP_HIDDEN struct fi_info* fi_dupinfo(const struct fi_info* info) {
  static auto* const real = libfabric().function<decltype(fi_dupinfo)>("fi_dupinfo");
  return real != nullptr ? real(info) : nullptr;
}

UCCL_EP_HIDDEN int fi_fabric(struct fi_fabric_attr* attr, struct fid_fabric** fabric, void* context) {
  static auto* const real = libfabric().function<decltype(fi_fabric)>("fi_fabric");
  return real != nullptr ? real(attr, fabric, context) : -FI_ENOSYS;
}

UCCL_EP_HIDDEN const char* fi_strerror(int errnum) {
  static auto* const real = libfabric().function<decltype(fi_strerror)>("fi_strerror");
  if (real != nullptr) return real(errnum);
  static const std::string why = "libfabric is not available (" + libfabric().error() +
                                 "); install libfabric 1.x to use the tcp, shm or efa transports";
  return why.c_str();
}

UCCL_EP_HIDDEN char* fi_tostr_r(char* buf, size_t len, const void* data, enum fi_type datatype) {
  static auto* const real = libfabric().function<decltype(fi_tostr_r)>("fi_tostr_r");
  if (real != nullptr) return real(buf, len, data, datatype);
  if (buf != nullptr && len > 0) buf[0] = '\0';
  return buf;
}

}  // extern "C"
